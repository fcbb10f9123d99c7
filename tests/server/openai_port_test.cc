// The OpenAI API's port as clients meet it through a real daemon: answers in OpenAI's shapes, the
// same rules as gRPC, streams cut by their clients freeing their pages at once, drain, and the
// hostile-HTTP battery with streams in flight. (The official Python client is tests/openai.)
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model_dir_copy.h"
#include "tests/metrics/http_get.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

using metrics::HostileRequest;
using metrics::HttpExchange;
using metrics::HttpPostJson;
using metrics::HttpResponse;
using ::testing::HasSubstr;

std::string Completion(absl::string_view extra) {
  return absl::StrCat(R"({"prompt": [5, 9, 33, 71, 102, 7])", extra.empty() ? "" : ", ", extra,
                      "}");
}

// The shipped model: slow enough on one thread (about 2 ms a token at chunk 1) that a
// 450-token request is still running while a test acts on it.
std::vector<std::string> SlowModel(std::vector<std::string> flags) {
  flags.push_back(
      absl::StrCat("--model_dir=", CATSERVE_FIXTURES_DIR, "/../../models/cat-small-en"));
  return flags;
}
constexpr char kLongStream[] =
    R"("max_tokens": 450, "ignore_eos": true, "stream": true, "chunk_size": 1)";

// The `data:` payloads of an SSE body (chunked framing and blank lines skipped).
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> events;
  for (absl::string_view line : absl::StrSplit(body, "\r\n")) {
    for (absl::string_view part : absl::StrSplit(line, "\n")) {
      if (absl::ConsumePrefix(&part, "data: ")) events.emplace_back(part);
    }
  }
  return events;
}

// Opens a streamed completion and returns the socket once `bytes` of answer arrived (or -1).
int OpenStream(int port, absl::string_view body, size_t bytes) {
  std::string error;
  const int fd = metrics::Connect(port, &error);
  if (fd < 0) return -1;
  const std::string request = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: ",
      body.size(), "\r\n\r\n", body);
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  const timeval timeout{.tv_sec = 20, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  size_t got = 0;
  char buffer[4096];
  while (got < bytes) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  return fd;
}

std::string OpenAiFinished(absl::string_view outcome) {
  return absl::StrCat(R"(catserve_requests_by_transport_total{outcome=")", outcome,
                      R"(",transport="openai"})");
}

TEST(OpenAiPortTest, GreedyCompletionEqualsTheGrpcAnswerAndItsStream) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  ASSERT_GT(port, 0) << (*server)->log();

  absl::StatusOr<HttpResponse> whole =
      HttpPostJson(port, "/v1/completions", Completion(R"("max_tokens": 12, "temperature": 0)"));
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(whole->status, 200) << whole->body;
  EXPECT_EQ(whole->headers["content-type"], "application/json");
  EXPECT_THAT(whole->body, HasSubstr(R"("object":"text_completion")"));
  EXPECT_THAT(whole->body, HasSubstr(R"("completion_tokens":12)"));
  EXPECT_THAT(whole->body, HasSubstr(R"("prompt_tokens":6)"));
  EXPECT_THAT(whole->body, HasSubstr(R"("finish_reason":"length")"));

  // The same request over gRPC: the same tokens, so the same text.
  auto stub = (*server)->NewStub();
  Generation grpc = Generate(*stub, GreedyRequest({5, 9, 33, 71, 102, 7}, 12, 8));
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  std::string escaped_text;
  for (char c : grpc.text) {
    if (c == '"' || c == '\\') escaped_text += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) escaped_text += c;
  }
  if (escaped_text.size() == grpc.text.size()) {
    EXPECT_THAT(whole->body, HasSubstr(absl::StrCat(R"("text":")", escaped_text, "\"")));
  }

  absl::StatusOr<HttpResponse> streamed = HttpPostJson(
      port, "/v1/completions", Completion(R"("max_tokens": 12, "temperature": 0, "stream": true,
                    "stream_options": {"include_usage": true})"));
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_EQ(streamed->status, 200);
  EXPECT_EQ(streamed->headers["content-type"], "text/event-stream");
  std::vector<std::string> events = Events(streamed->body);
  ASSERT_GE(events.size(), 3u) << streamed->body;
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_THAT(events[events.size() - 2], HasSubstr(R"("completion_tokens":12)"));
  EXPECT_THAT(events[events.size() - 2], HasSubstr(R"("choices":[])"));
  EXPECT_THAT(events[events.size() - 3], HasSubstr(R"("finish_reason":"length")"));
}

TEST(OpenAiPortTest, BadRequestsGetOpenAiErrorsThatNameTheField) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--max_new_tokens=50"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  struct Case {
    std::string body;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {Completion(R"("n": 2)"), 400, R"("param":"n")"},
      {Completion(R"("chunk_size": 3)"), 400, "chunk_size 3 is not served"},
      {Completion(R"("chunk_size": 3)"), 400, R"("param":"chunk_size")"},
      {Completion(R"("max_tokens": 51)"), 400, "max_tokens 51 is more than the limit of 50"},
      {Completion(R"("max_tokens": 51)"), 400, R"("param":"max_tokens")"},
      {Completion(R"("temperature": "hot")"), 400, "temperature must be a number, got a string"},
      {Completion(R"("temperature": -1)"), 400, R"("message":"temperature must be >= 0)"},
      {Completion(R"("temperature": -1)"), 400, R"("param":"temperature")"},
      {Completion(R"("tier": "nope")"), 400, R"("param":"tier")"},
      {Completion(R"("logprobs": 21)"), 400, R"("param":"logprobs")"},
      {R"({"model": "gpt-4", "prompt": "hi"})", 404, "is not served here"},
      {R"({"model": "tiny", "prompt": "hi", "max_tokens": 1})", 200, R"("model":"tiny")"},
      {R"({"prompt": ["a", "b"]})", 400, "one per request"},
      {R"({"max_tokens": 3})", 400, "prompt is missing"},
      {"{not json", 400, "not valid JSON"},
      {std::string(100, '[') + std::string(100, ']'), 400, "deeper than"},
      {R"({"prompt": [5, -1]})", 400, "prompt[1] must be in [0,"},
      {R"({"prompt": [5, 999999]})", 400, "vocabulary"},
      {R"({"prompt": [5, 999999]})", 400, R"("param":"prompt")"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<HttpResponse> response = HttpPostJson(port, "/v1/completions", c.body);
    ASSERT_TRUE(response.ok()) << c.body << ": " << response.status();
    EXPECT_EQ(response->status, c.status) << c.body << " -> " << response->body;
    if (c.status != 200) {
      EXPECT_THAT(response->body, HasSubstr(R"({"error":{)")) << c.body;
    }
    EXPECT_THAT(response->body, HasSubstr(c.says)) << c.body;
  }
  absl::StatusOr<HttpResponse> chat =
      HttpPostJson(port, "/v1/chat/completions", R"({"messages": [{"role": "user"}]})");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->status, 400);
  EXPECT_THAT(chat->body, HasSubstr("declares no chat template"));
  absl::StatusOr<HttpResponse> unknown = HttpPostJson(port, "/v1/embeddings", "{}");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 404);
  EXPECT_THAT(unknown->body, HasSubstr(R"("type":"invalid_request_error")"));
  // Every refusal counted under the OpenAI transport.
  EXPECT_GE((*server)->Metric(OpenAiFinished("rejected")).value_or(0), cases.size());
}

TEST(OpenAiPortTest, TokensAreCheckedAsOnGrpc) {
  char path[] = "/tmp/catserve-openai-tokensXXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "s3cret\n", 7), 7);
  close(fd);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({absl::StrCat("--auth_tokens_file=", path)});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  absl::StatusOr<HttpResponse> none = HttpPostJson(port, "/v1/completions", Completion(""));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->status, 401);
  EXPECT_THAT(none->body, HasSubstr(R"("code":"invalid_api_key")"));
  absl::StatusOr<HttpResponse> wrong =
      HttpPostJson(port, "/v1/completions", Completion(""), "Authorization: Bearer guess\r\n");
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status, 401);
  absl::StatusOr<HttpResponse> right =
      HttpPostJson(port, "/v1/completions", Completion(""), "Authorization: Bearer s3cret\r\n");
  ASSERT_TRUE(right.ok());
  EXPECT_EQ(right->status, 200) << right->body;
  absl::StatusOr<HttpResponse> models = metrics::HttpRequest(port, "GET", "/v1/models");
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(models->status, 401);
  unlink(path);
}

// A client that closes its connection mid-stream, or while its request is still queued, cancels
// the request: its pages are freed at once and other requests carry on.
TEST(OpenAiPortTest, ClientsThatLeaveCancelTheirRequestsAndFreeTheirPages) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SlowModel({"--max_running=1"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  const std::string endless = Completion(kLongStream);
  // Running: a stream that has sent a few hundred bytes.
  const int running = OpenStream(port, endless, 600);
  ASSERT_GE(running, 0);
  // Queued behind it (one running at a time): nothing sent yet but the headers.
  const int queued = OpenStream(port, endless, 0);
  ASSERT_GE(queued, 0);
  EXPECT_EQ(
      (*server)->AwaitMetric("catserve_num_requests_waiting", 1, absl::Seconds(5)).value_or(-1), 1);
  close(queued);
  EXPECT_EQ(
      (*server)->AwaitMetric("catserve_num_requests_waiting", 0, absl::Seconds(2)).value_or(-1), 0);
  close(running);
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(2)).value_or(-1), 0);
  EXPECT_EQ((*server)->AwaitMetric(OpenAiFinished("cancelled"), 2, absl::Seconds(2)).value_or(-1),
            2);
  absl::StatusOr<HttpResponse> after =
      HttpPostJson(port, "/v1/completions", Completion(R"("max_tokens": 4)"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
}

TEST(OpenAiPortTest, AFullQueueIs429WithRetryAfterAndDrainIs503) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SlowModel({"--max_running=1", "--max_queued=1", "--drain_grace_seconds=30"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  const std::string long_stream = Completion(kLongStream);
  const int running = OpenStream(port, long_stream, 300);
  const int queued = OpenStream(port, long_stream, 0);
  ASSERT_EQ(
      (*server)->AwaitMetric("catserve_num_requests_waiting", 1, absl::Seconds(5)).value_or(-1), 1);
  absl::StatusOr<HttpResponse> full =
      HttpPostJson(port, "/v1/completions", Completion(R"("max_tokens": 4)"));
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->status, 429) << full->body;
  EXPECT_EQ(full->headers["retry-after"], "1");
  EXPECT_THAT(full->body, HasSubstr("queue is full"));
  close(queued);
  close(running);
  ASSERT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);

  // Drain: a stream in flight finishes whole; a new request is refused with 503.
  std::string finished_body;
  std::thread client([&] {
    absl::StatusOr<HttpResponse> r = HttpPostJson(port, "/v1/completions", Completion(kLongStream));
    if (r.ok()) finished_body = r->body;
  });
  ASSERT_EQ(
      (*server)->AwaitMetric("catserve_num_requests_running", 1, absl::Seconds(5)).value_or(-1), 1);
  (*server)->Signal(SIGTERM);
  absl::SleepFor(absl::Milliseconds(200));
  absl::StatusOr<HttpResponse> refused =
      HttpPostJson(port, "/v1/completions", Completion(R"("max_tokens": 4)"));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 503) << refused->body;
  client.join();
  EXPECT_THAT(finished_body, HasSubstr(R"("finish_reason":"length")"));
  EXPECT_THAT(finished_body, HasSubstr("data: [DONE]"));
  EXPECT_EQ((*server)->WaitForExit(absl::Seconds(30)).value_or(-1), 0) << (*server)->log();
}

TEST(OpenAiPortTest, HostileRequestsNeitherKillTheDaemonNorHarmStreams) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  std::vector<std::string> bodies(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      absl::StatusOr<HttpResponse> r = HttpPostJson(
          port, "/v1/completions",
          Completion(absl::StrCat(R"("max_tokens": 100, "ignore_eos": true, "stream": true, )",
                                  R"("chunk_size": )", 1 << i)));
      if (r.ok()) bodies[i] = r->body;
    });
  }
  for (int round = 0; round < 3; ++round) {
    for (const HostileRequest& hostile : metrics::HostileRequests()) {
      absl::StatusOr<HttpResponse> response = HttpExchange(port, hostile.raw);
      ASSERT_TRUE(response.ok()) << hostile.name << ": " << response.status() << "\n"
                                 << (*server)->log();
      EXPECT_EQ(response->status, hostile.status) << hostile.name;
    }
  }
  for (std::thread& client : clients) client.join();
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(bodies[i], HasSubstr(R"("finish_reason":"length")")) << i;
    EXPECT_THAT(bodies[i], HasSubstr("data: [DONE]")) << i;
  }
  EXPECT_FALSE((*server)->WaitForExit(absl::ZeroDuration()).has_value()) << (*server)->log();
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
}

TEST(OpenAiPortTest, OversizedBodiesAre413BeforeTheyAreRead) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--max_prompt_bytes=1000"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string huge = absl::StrCat(R"({"prompt": ")", std::string(200'000, 'a'), "\"}");
  absl::StatusOr<HttpResponse> response =
      HttpPostJson((*server)->openai_port(), "/v1/completions", huge);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 413);
  EXPECT_THAT(response->body, HasSubstr("larger than this server reads"));
}

// A model directory that declares chat_template.json serves /v1/chat/completions: the answer is
// the completion of the rendered conversation, whole or streamed in chat chunks.
TEST(OpenAiPortTest, ChatIsServedWhereTheModelDeclaresATemplate) {
  ModelDirCopy model(TinyModelDir(), "chat");
  {
    std::ofstream out(model.file("chat_template.json"));
    out << R"({"roles": {"system": {"prefix": "S: ", "suffix": "\n"},
                          "user": {"prefix": "U: ", "suffix": "\n"},
                          "assistant": {"prefix": "A: ", "suffix": "\n"}},
               "generation_prompt": "A:", "stop": ["\n"]})";
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--model_dir=" + model.path().string()});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->openai_port();
  const std::string messages =
      R"("messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "Hello"}]}])";
  absl::StatusOr<HttpResponse> chat = HttpPostJson(
      port, "/v1/chat/completions",
      absl::StrCat("{", messages, R"(, "max_tokens": 10, "temperature": 0, "ignore_eos": true,
                   "logprobs": true, "top_logprobs": 2})"));
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->status, 200) << chat->body;
  EXPECT_THAT(chat->body, HasSubstr(R"("object":"chat.completion")"));
  EXPECT_THAT(chat->body, HasSubstr(R"("message":{"content":)"));
  EXPECT_THAT(chat->body, HasSubstr(R"("role":"assistant")"));
  EXPECT_THAT(chat->body, HasSubstr(R"("top_logprobs":[{"bytes":)"));
  // The same prompt, rendered by hand, through /v1/completions.
  absl::StatusOr<HttpResponse> plain =
      HttpPostJson(port, "/v1/completions",
                   R"({"prompt": "S: Be brief.\nU: Hello\nA:", "max_tokens": 10, "temperature": 0,
          "ignore_eos": true, "stop": ["\n"]})");
  ASSERT_TRUE(plain.ok());
  const size_t at = plain->body.find(R"("text":)");
  ASSERT_NE(at, std::string::npos) << plain->body;
  const std::string text = plain->body.substr(at + 7, plain->body.find("}", at) - at - 7);
  EXPECT_THAT(chat->body, HasSubstr(absl::StrCat(R"("content":)", text)));

  absl::StatusOr<HttpResponse> streamed = HttpPostJson(
      port, "/v1/chat/completions",
      absl::StrCat("{", messages, R"(, "max_tokens": 10, "temperature": 0, "stream": true,
                   "stream_options": {"include_usage": true}})"));
  ASSERT_TRUE(streamed.ok());
  std::vector<std::string> events = Events(streamed->body);
  ASSERT_GE(events.size(), 3u) << streamed->body;
  EXPECT_THAT(events[0], HasSubstr(R"("object":"chat.completion.chunk")"));
  EXPECT_THAT(events[0], HasSubstr(R"("delta":{"content":)"));
  EXPECT_THAT(events[0], HasSubstr(R"("role":"assistant")"));
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_THAT(events[events.size() - 2], HasSubstr(R"("completion_tokens":)"));

  absl::StatusOr<HttpResponse> bad_role = HttpPostJson(
      port, "/v1/chat/completions", R"({"messages": [{"role": "tool", "content": "x"}]})");
  ASSERT_TRUE(bad_role.ok());
  EXPECT_EQ(bad_role->status, 400);
  EXPECT_THAT(bad_role->body, HasSubstr("is not one this model knows: assistant, system, user"));
}

TEST(OpenAiPortTest, AJinjaOnlyTemplateIsRefusedWithTheReason) {
  ModelDirCopy model(TinyModelDir(), "jinja");
  {
    std::ofstream out(model.file("tokenizer_config.json"));
    out << R"({"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})";
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--model_dir=" + model.path().string()});
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<HttpResponse> chat =
      HttpPostJson((*server)->openai_port(), "/v1/chat/completions",
                   R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->status, 400);
  EXPECT_THAT(chat->body, HasSubstr("has only a Jinja chat template"));
}

}  // namespace
}  // namespace catserve::testing
