// ServerProcess: a real catserve binary on loopback ports, for the server tests.
#ifndef CATSERVE_TESTS_SERVER_SERVER_PROCESS_H_
#define CATSERVE_TESTS_SERVER_SERVER_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "catserve/v1/generation.grpc.pb.h"

namespace catserve::testing {

// Spawns build/server/catserve on the tiny fixture model with --listen, --http_listen and
// --openai_listen on 127.0.0.1 port 0, and learns the ports from its startup lines. stderr is
// collected (see log()) so a failing test can show it. The destructor kills the process if it is
// still running.
class ServerProcess {
 public:
  // `extra_flags` are appended to the defaults (the tiny fixture model, loopback ports, one
  // thread, --device=$CATSERVE_TEST_DEVICE when set; later flags win). Waits until "catserve:
  // ready" or until the process exits (its log is in the error).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& extra_flags = {});
  // Spawns the binary as Start does and returns at once, for a test that watches it exit.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Spawn(
      const std::vector<std::string>& extra_flags = {});
  ~ServerProcess();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  // The OpenAI API's port; 0 when started with --openai_listen= (empty).
  int openai_port() const { return openai_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::unique_ptr<v1::Generation::Stub> NewStub() const;

  // Sends `signal` to the process.
  void Signal(int signal);
  // Waits for the process to exit; its exit code (or 128 + signal), nullopt on timeout.
  std::optional<int> WaitForExit(absl::Duration timeout);
  // Everything the process wrote to stderr so far.
  std::string log() const;
  // Waits for the process to close its stderr (it exited); everything it wrote.
  std::string WaitForLog(absl::Duration timeout) const;

  // The value of an unlabelled sample (e.g. "catserve_kv_pages_used") scraped from /metrics,
  // or of the labelled series `name{labels}` when `name` includes its labels.
  absl::StatusOr<double> Metric(const std::string& name) const;
  // Polls Metric(name) until `done` holds for it or `timeout` passes; returns the last value.
  absl::StatusOr<double> AwaitMetric(const std::string& name,
                                     const std::function<bool(double)>& done,
                                     absl::Duration timeout) const;
  // Polls Metric(name) until it equals `value`.
  absl::StatusOr<double> AwaitMetric(const std::string& name, double value,
                                     absl::Duration timeout) const {
    return AwaitMetric(
        name, [value](double v) { return v == value; }, timeout);
  }

 private:
  ServerProcess() = default;
  void ReadLog(int fd);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int openai_port_ = 0;
  std::thread reader_;
  mutable absl::Mutex mu_;
  std::string log_ ABSL_GUARDED_BY(mu_);
  bool log_closed_ ABSL_GUARDED_BY(mu_) = false;
};

// The outcome of one Generate call, every message gathered.
struct Generation {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::vector<v1::TokenAlternatives> top_logprobs;  // one per id when top_logprobs was asked
  std::string text;
  std::string finish_reason;
  v1::Usage usage;
  int messages = 0;
};
// Runs `request` to the end, with `timeout` (default 60 s) as its deadline.
Generation Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                    std::optional<absl::Duration> timeout = std::nullopt);

// grpc.health.v1.Health/Check of `service` at `address`: the ServingStatus number (1 SERVING,
// 2 NOT_SERVING), or the call's error. Spoken with hand-encoded messages over a generic stub, as
// Debian ships no C++ stubs of health.proto.
absl::StatusOr<int> CheckHealth(const std::string& address, const std::string& service);

// Calls `method` ("/package.Service/Method") at `address` with `request_bytes` as the request
// message, as they are, and expects at most one response message (its bytes in
// `*response_bytes`). A 5 s deadline.
grpc::Status RawUnaryCall(const std::string& address, const std::string& method,
                          const std::string& request_bytes, std::string* response_bytes);

// A greedy request of `prompt` ids.
v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int max_tokens,
                                  int chunk_size);

// A series name with its labels in sorted order, so that names compare whatever order the
// exposition writes labels in.
std::string CanonicalSeries(absl::string_view series);

// The fixture model's directory.
std::string TinyModelDir();

// The device the daemon tests run on: $CATSERVE_TEST_DEVICE ("cpu" when unset), which every
// daemon Spawn starts gets as --device. A test that compares the daemon with an offline engine
// loads that engine on the same device (engine::Device::kCuda for "cuda").
std::string TestDevice();

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_SERVER_SERVER_PROCESS_H_
