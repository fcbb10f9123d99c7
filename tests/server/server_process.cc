#include "tests/server/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "tests/metrics/http_get.h"

extern char** environ;

namespace catserve::testing {

std::string TinyModelDir() { return absl::StrCat(CATSERVE_FIXTURES_DIR, "/tiny"); }

std::string TestDevice() {
  const char* device = std::getenv("CATSERVE_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Spawn(
    const std::vector<std::string>& extra_flags) {
  std::vector<std::string> args = {CATSERVE_SERVER_BIN,
                                   "--model_dir=" + TinyModelDir(),
                                   "--listen=127.0.0.1:0",
                                   "--http_listen=127.0.0.1:0",
                                   "--openai_listen=127.0.0.1:0",
                                   "--threads=1",
                                   "--kv_pool_mb=16"};
  // CATSERVE_TEST_DEVICE=cuda runs the daemon tests on the GPU (tools/gpu/cuda_proof.sh).
  args.push_back("--device=" + TestDevice());
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  const int error = posix_spawn(&server->pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (error != 0) {
    close(pipe_fds[0]);
    server->pid_ = -1;
    return absl::InternalError(absl::StrCat("spawning ", argv[0], ": ", std::strerror(error)));
  }
  server->reader_ = std::thread([s = server.get(), fd = pipe_fds[0]] { s->ReadLog(fd); });
  return server;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& extra_flags) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> spawned = Spawn(extra_flags);
  if (!spawned.ok()) return spawned.status();
  std::unique_ptr<ServerProcess> server = *std::move(spawned);

  const std::regex listening("catserve: listening on [^\\n]*:([0-9]+)\\n");
  const std::regex metrics("catserve: metrics on http://[^\\n]*:([0-9]+)/metrics\\n");
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  absl::MutexLock lock(&server->mu_);
  auto ready_or_closed = [s = server.get()]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
    return s->log_closed_ || s->log_.find("catserve: ready\n") != std::string::npos;
  };
  server->mu_.AwaitWithDeadline(absl::Condition(&ready_or_closed), give_up);
  std::smatch grpc_match, http_match;
  if (server->log_.find("catserve: ready\n") == std::string::npos ||
      !std::regex_search(server->log_, grpc_match, listening) ||
      !std::regex_search(server->log_, http_match, metrics)) {
    return absl::UnavailableError(absl::StrCat("catserve did not start:\n", server->log_));
  }
  absl::SimpleAtoi(grpc_match[1].str(), &server->grpc_port_);
  absl::SimpleAtoi(http_match[1].str(), &server->http_port_);
  const std::regex openai("catserve: openai api on https?://[^\\n]*:([0-9]+)/v1\\n");
  if (std::smatch openai_match; std::regex_search(server->log_, openai_match, openai)) {
    absl::SimpleAtoi(openai_match[1].str(), &server->openai_port_);
  }
  return server;
}

void ServerProcess::ReadLog(int fd) {
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    absl::MutexLock lock(&mu_);
    log_.append(buffer, n);
  }
  close(fd);
  absl::MutexLock lock(&mu_);
  log_closed_ = true;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exit_code_.has_value()) {
    kill(pid_, SIGKILL);
    WaitForExit(absl::Seconds(30));
  }
  if (reader_.joinable()) reader_.join();
}

std::unique_ptr<v1::Generation::Stub> ServerProcess::NewStub() const {
  return v1::Generation::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

void ServerProcess::Signal(int signal) {
  if (pid_ > 0 && !exit_code_.has_value()) kill(pid_, signal);
}

std::optional<int> ServerProcess::WaitForExit(absl::Duration timeout) {
  if (exit_code_.has_value()) return exit_code_;
  const absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (absl::Now() >= give_up) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// `name{b="2",a="1"}` as `name{a="1",b="2"}`: the exposition's label order is the library's.
std::string CanonicalSeries(absl::string_view series) {
  const size_t open = series.find('{');
  if (open == absl::string_view::npos || series.back() != '}') return std::string(series);
  std::vector<std::string> labels = absl::StrSplit(
      series.substr(open + 1, series.size() - open - 2), absl::ByString("\","), absl::SkipEmpty());
  for (size_t i = 0; i + 1 < labels.size(); ++i) labels[i] += '"';
  std::sort(labels.begin(), labels.end());
  return absl::StrCat(series.substr(0, open), "{", absl::StrJoin(labels, ","), "}");
}

std::string ServerProcess::log() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::string ServerProcess::WaitForLog(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&log_closed_), timeout);
  return log_;
}

absl::StatusOr<double> ServerProcess::Metric(const std::string& name) const {
  absl::StatusOr<metrics::HttpResponse> response =
      metrics::HttpRequest(http_port_, "GET", "/metrics");
  if (!response.ok()) return response.status();
  const std::string wanted = CanonicalSeries(name);
  for (absl::string_view line : absl::StrSplit(response->body, '\n')) {
    const size_t space = line.rfind(' ');
    if (line.empty() || line[0] == '#' || space == absl::string_view::npos) continue;
    double value;
    if (CanonicalSeries(line.substr(0, space)) == wanted &&
        absl::SimpleAtod(line.substr(space + 1), &value)) {
      return value;
    }
  }
  return absl::NotFoundError(absl::StrCat("no sample ", name, " in /metrics"));
}

absl::StatusOr<double> ServerProcess::AwaitMetric(const std::string& name,
                                                  const std::function<bool(double)>& done,
                                                  absl::Duration timeout) const {
  const absl::Time give_up = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<double> current = Metric(name);
    if ((current.ok() && done(*current)) || absl::Now() >= give_up) return current;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

Generation Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                    std::optional<absl::Duration> timeout) {
  grpc::ClientContext context;
  // A test that goes wrong fails rather than hangs.
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoMilliseconds(timeout.value_or(absl::Seconds(60))));
  Generation out;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    ++out.messages;
    out.ids.insert(out.ids.end(), response.token_ids().begin(), response.token_ids().end());
    out.logprobs.insert(out.logprobs.end(), response.logprobs().begin(), response.logprobs().end());
    out.top_logprobs.insert(out.top_logprobs.end(), response.top_logprobs().begin(),
                            response.top_logprobs().end());
    out.text += response.text();
    if (!response.finish_reason().empty()) {
      out.finish_reason = response.finish_reason();
      out.usage = response.usage();
    }
  }
  out.status = reader->Finish();
  return out;
}

grpc::Status RawUnaryCall(const std::string& address, const std::string& method,
                          const std::string& request_bytes, std::string* response_bytes) {
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  response_bytes->clear();
  std::vector<grpc::Slice> slices;
  if (status.ok() && response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      response_bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return status;
}

absl::StatusOr<int> CheckHealth(const std::string& address, const std::string& service) {
  // HealthCheckRequest{string service = 1}: tag 0x0a, length, bytes (names here are < 128).
  std::string request_bytes = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  if (service.empty()) request_bytes.clear();
  std::string bytes;
  const grpc::Status status =
      RawUnaryCall(address, "/grpc.health.v1.Health/Check", request_bytes, &bytes);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  // HealthCheckResponse{ServingStatus status = 1}: tag 0x08, a one-byte varint; empty = 0.
  if (bytes.empty()) return 0;
  if (bytes.size() != 2 || bytes[0] != 0x08) return absl::InternalError("bad health response");
  return static_cast<int>(bytes[1]);
}

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int max_tokens,
                                  int chunk_size) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  request.set_max_tokens(max_tokens);
  request.mutable_sampling()->set_temperature(0.0f);
  request.set_chunk_size(chunk_size);
  return request;
}

}  // namespace catserve::testing
