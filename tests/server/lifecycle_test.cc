// Cancellation, deadlines, bad input, back-pressure and draining, as a client sees them.
#include <signal.h>

#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(5 + (i * 11) % 300);
  return ids;
}

TEST(LifecycleTest, CancelMidStreamFreesPages) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  v1::GenerateRequest request = GreedyRequest(Prompt(8), 119, 1);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
  // The server goes on serving.
  Generation after = Generate(*stub, GreedyRequest(Prompt(4), 4, 2));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST(LifecycleTest, ExpiredDeadlineEndsStreamsAndFreesPages) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start({"--max_running=2"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  // More work than the deadline allows: the queued ones expire waiting, the running ones
  // mid-stream.
  std::vector<Generation> results(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      v1::GenerateRequest request = GreedyRequest(Prompt(60), 67, 1);
      request.set_ignore_eos(true);
      results[i] = Generate(*stub, request, absl::Milliseconds(30));
    });
  }
  for (std::thread& t : clients) t.join();
  int expired = 0;
  for (const Generation& g : results) {
    if (!g.status.ok()) {
      EXPECT_EQ(g.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
      ++expired;
    }
  }
  EXPECT_GT(expired, 0);
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
}

struct BadCase {
  const char* name;
  v1::GenerateRequest request;
  grpc::StatusCode code;
  const char* message_part;
};

TEST(LifecycleTest, BadInputGetsAClearStatus) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--max_new_tokens=100"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  auto base = [] { return GreedyRequest(Prompt(10), 8, 0); };
  std::vector<BadCase> cases;
  {
    v1::GenerateRequest r = base();
    r.clear_token_ids();
    cases.push_back({"no prompt", r, grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty"});
    r.set_text("");
    cases.push_back({"empty text", r, grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty"});
  }
  {
    v1::GenerateRequest r = base();
    r.mutable_token_ids()->add_ids(384);
    cases.push_back({"unknown id", r, grpc::StatusCode::INVALID_ARGUMENT, "= 384"});
  }
  {
    v1::GenerateRequest r = base();
    r.set_max_tokens(0);
    cases.push_back({"max_tokens 0", r, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"});
    r.set_max_tokens(-3);
    cases.push_back({"max_tokens < 0", r, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"});
    r.set_max_tokens(101);
    cases.push_back({"past --max_new_tokens", r, grpc::StatusCode::INVALID_ARGUMENT, "100"});
  }
  {
    v1::GenerateRequest r = GreedyRequest(Prompt(100), 29, 0);
    cases.push_back({"past the context", r, grpc::StatusCode::INVALID_ARGUMENT, "128"});
  }
  {
    v1::GenerateRequest r = base();
    r.mutable_sampling()->set_temperature(-0.5f);
    cases.push_back({"temperature < 0", r, grpc::StatusCode::INVALID_ARGUMENT, "temperature"});
  }
  {
    v1::GenerateRequest r = base();
    r.mutable_sampling()->set_top_p(0.0f);
    cases.push_back({"top_p 0", r, grpc::StatusCode::INVALID_ARGUMENT, "top_p"});
    r.mutable_sampling()->set_top_p(1.5f);
    cases.push_back({"top_p > 1", r, grpc::StatusCode::INVALID_ARGUMENT, "top_p"});
  }
  {
    v1::GenerateRequest r = base();
    r.set_chunk_size(3);
    cases.push_back({"chunk size not served", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "served chunk sizes: 1, 2, 4, 8, 16"});
  }
  {
    v1::GenerateRequest r = base();
    r.set_tier("fastest");
    cases.push_back({"unknown tier", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "tiers: balanced=8:16, quality=2, throughput=16"});
    r.set_tier("quality");
    r.set_chunk_size(4);
    cases.push_back({"chunk size and tier", r, grpc::StatusCode::INVALID_ARGUMENT, "not both"});
  }
  {
    v1::GenerateRequest r = base();
    r.set_chunk_size(8);
    r.set_coarsest_chunk_size(4);
    cases.push_back({"coarsest finer than asked", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "coarsest_chunk_size 4 must be a served chunk size >= the chunk size 8"});
    r.set_coarsest_chunk_size(12);
    cases.push_back({"coarsest not served", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "served chunk sizes: 1, 2, 4, 8, 16"});
  }
  {
    v1::GenerateRequest r = base();
    r.add_stop("");
    cases.push_back({"empty stop string", r, grpc::StatusCode::INVALID_ARGUMENT, "stop[0]"});
  }
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    Generation g = Generate(*stub, c.request);
    EXPECT_EQ(g.status.error_code(), c.code) << g.status.error_message();
    EXPECT_TRUE(absl::StrContains(g.status.error_message(), c.message_part))
        << g.status.error_message();
    EXPECT_EQ(g.messages, 0);
  }
  EXPECT_EQ((*server)
                ->Metric("catserve_requests_finished_total{outcome=\"rejected\",chunk_size=\"8\"}")
                .value_or(-1),
            static_cast<double>(cases.size()));
}

TEST(LifecycleTest, FullQueueIsResourceExhausted) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--max_running=1", "--max_queued=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();
  constexpr int kClients = 12;
  std::vector<Generation> results(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      v1::GenerateRequest request = GreedyRequest(Prompt(20), 100, 1);
      request.set_ignore_eos(true);
      results[i] = Generate(*stub, request);
    });
  }
  for (std::thread& t : clients) t.join();
  int ok = 0, exhausted = 0;
  for (const Generation& g : results) {
    if (g.status.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(g.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << g.status.error_message();
      EXPECT_TRUE(absl::StrContains(g.status.error_message(), "queue is full"));
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
}

TEST(LifecycleTest, SigtermDrainsInFlightStreamsThenExitsZero) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--max_running=1", "--drain_grace_seconds=60"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  auto stub = s.NewStub();

  // Queued behind each other (one runs at a time), so the drain has work to wait for.
  constexpr int kStreams = 32;
  constexpr int kTokens = 60;
  std::vector<Generation> results(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      v1::GenerateRequest request = GreedyRequest(Prompt(20), kTokens, 1);
      request.set_ignore_eos(true);
      results[i] = Generate(*stub, request);
    });
  }
  // Signal while at least half of them still wait.
  absl::StatusOr<double> waiting = s.AwaitMetric(
      "catserve_requests_waiting{chunk_size=\"1\"}", [](double v) { return v >= kStreams / 2; },
      absl::Seconds(20));
  EXPECT_GE(waiting.value_or(-1), kStreams / 2) << "the server finished before the signal";
  EXPECT_EQ(CheckHealth(s.address(), "catserve.v1.Generation").value_or(-1), 1);

  s.Signal(SIGTERM);
  absl::StatusOr<int> health;
  for (int i = 0; i < 200; ++i) {
    health = CheckHealth(s.address(), "catserve.v1.Generation");
    if (!health.ok() || *health != 1) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(health.value_or(-1), 2) << "NOT_SERVING while draining";
  EXPECT_EQ(CheckHealth(s.address(), "").value_or(-1), 1) << "the process itself stays SERVING";
  Generation refused = Generate(*stub, GreedyRequest(Prompt(4), 4, 1));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);

  for (std::thread& t : clients) t.join();
  for (const Generation& g : results) {
    EXPECT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.ids.size(), static_cast<size_t>(kTokens));
    EXPECT_EQ(g.finish_reason, "length");
  }
  EXPECT_EQ(s.WaitForExit(absl::Seconds(30)), 0) << s.log();
  EXPECT_TRUE(absl::StrContains(s.log(), "draining")) << s.log();
}

TEST(LifecycleTest, StartupErrorsNameTheFlag) {
  struct Case {
    std::vector<std::string> flags;
    const char* message_part;
  };
  const std::vector<Case> cases = {
      {{"--tiers=quality=3"}, "served chunk sizes: 1, 2, 4, 8, 16"},
      {{"--tiers=balanced=8:4"}, "--tiers: bad entry 'balanced=8:4'"},
      {{"--pressure_policy=evict"},
       "--pressure_policy: unknown pressure policy 'evict'; policies: queue, coarser, degrade, "
       "preempt"},
      {{"--default_chunk_size=32"}, "--default_chunk_size=32"},
      {{"--model_dir=/no/such/model"}, "model directory '/no/such/model' does not exist"},
      {{"--listen=nonsense"}, "--listen=nonsense"},
      {{"--model_dir=/dev/null"}, "--model_dir=/dev/null is not a directory"},
      {{"--threads=100000"}, "--threads=100000 is out of range: expected 0.."},
      {{"--max_queued=0"}, "--max_queued=0 is out of range: expected 1..1000000"},
      {{"--kv_pool_mb=100000000"}, "--kv_pool_mb=100000000 is out of range"},
      // The tiny model's context is 128 tokens.
      {{"--max_prompt_tokens=100000"},
       "--max_prompt_tokens=100000 is out of range: expected 0..127"},
      {{"--max_new_tokens=128"}, "--max_new_tokens=128 is out of range: expected 0..127"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(c.flags);
    ASSERT_FALSE(server.ok());
    EXPECT_TRUE(absl::StrContains(server.status().message(), c.message_part)) << server.status();
  }
}

// gRPC would share a port between two processes (SO_REUSEPORT) and split the calls; a second
// daemon on a port in use must fail at start, for the gRPC port as for the HTTP ones.
TEST(LifecycleTest, ASecondDaemonOnAPortInUseFailsAtStart) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> first = ServerProcess::Start();
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string grpc = absl::StrCat("127.0.0.1:", (*first)->grpc_port());
  const std::string http = absl::StrCat("127.0.0.1:", (*first)->http_port());

  absl::StatusOr<std::unique_ptr<ServerProcess>> second =
      ServerProcess::Start({"--listen=" + grpc});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(
      absl::StrContains(second.status().message(),
                        "--listen=" + grpc + ": cannot listen there: the address is in use"))
      << second.status();

  second = ServerProcess::Start({"--http_listen=" + http});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(),
                                "cannot serve metrics on " + http + ": the address is in use"))
      << second.status();

  const std::string openai = absl::StrCat("127.0.0.1:", (*first)->openai_port());
  second = ServerProcess::Start({"--openai_listen=" + openai});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(), "--openai_listen=" + openai +
                                                               ": cannot serve the OpenAI API on " +
                                                               openai + ": the address is in use"))
      << second.status();

  // The first daemon still answers every call.
  auto stub = (*first)->NewStub();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(Generate(*stub, GreedyRequest({5, 6, 7}, 2, 4)).status.ok());
  }
}

// --grpc_max_connection_age_seconds closes a client's connection after that age (plus the grace
// for its calls), so that a client of a headless Service reconnects and sees new pods; without
// the flag the connection stays up. The client's next call reconnects and succeeds.
TEST(LifecycleTest, MaxConnectionAgeClosesConnectionsSoClientsReconnect) {
  for (const bool aged : {true, false}) {
    SCOPED_TRACE(aged ? "aged" : "not aged");
    std::vector<std::string> flags;
    if (aged) {
      flags = {"--grpc_max_connection_age_seconds=1", "--grpc_max_connection_age_grace_seconds=1"};
    }
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(flags);
    ASSERT_TRUE(server.ok()) << server.status();
    std::shared_ptr<grpc::Channel> channel =
        grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
    auto stub = v1::Generation::NewStub(channel);
    ASSERT_TRUE(Generate(*stub, GreedyRequest({5, 6, 7}, 2, 4)).status.ok());
    ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
    // Waiting for a state change polls the connection, which reads the server's GOAWAY.
    const bool closed = channel->WaitForStateChange(
        GRPC_CHANNEL_READY, std::chrono::system_clock::now() + std::chrono::seconds(4));
    EXPECT_EQ(closed, aged);
    EXPECT_TRUE(Generate(*stub, GreedyRequest({5, 6, 7}, 2, 4)).status.ok());
  }
}

TEST(LifecycleTest, UnparsableRequestMessagesAreInvalidArgumentAndCounted) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--default_chunk_size=4"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string rejected =
      "catserve_requests_finished_total{outcome=\"rejected\",chunk_size=\"4\"}";
  ASSERT_EQ((*server)->Metric(rejected).value_or(-1), 0);

  struct Case {
    const char* method;
    std::string bytes;
  };
  const Case cases[] = {
      // A length-delimited field 1 whose length runs past the end of the message.
      {"/catserve.v1.Generation/Generate", std::string("\x0a\x7f\x41", 3)},
      // text = "\xff\xfe": a string field holding invalid UTF-8.
      {"/catserve.v1.Generation/Generate", std::string("\x0a\x02\xff\xfe", 4)},
      {"/catserve.v1.Generation/Tokenize", std::string("\x0a\x02\xff\xfe", 4)},
      // Field 0 does not exist in any protobuf message.
      {"/catserve.v1.Generation/GetModelInfo", std::string("\x00\x00", 2)},
  };
  for (const Case& c : cases) {
    std::string response;
    const grpc::Status status = RawUnaryCall((*server)->address(), c.method, c.bytes, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.method;
    EXPECT_TRUE(absl::StrContains(status.error_message(), "could not be parsed"))
        << c.method << ": " << status.error_message();
  }
  // The two Generate calls, each once.
  EXPECT_EQ((*server)->AwaitMetric(rejected, 2, absl::Seconds(5)).value_or(-1), 2);
  // Nothing a client sent reached the log.
  EXPECT_FALSE(absl::StrContains((*server)->log(), "UTF-8")) << (*server)->log();
  auto stub = (*server)->NewStub();
  EXPECT_TRUE(Generate(*stub, GreedyRequest(Prompt(4), 3, 4)).status.ok());
}

}  // namespace
}  // namespace catserve::testing
