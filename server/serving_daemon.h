// ServingDaemon: the whole catserve process minus main(): model, scheduler, gRPC server, metrics.
#ifndef CATSERVE_SERVER_SERVING_DAEMON_H_
#define CATSERVE_SERVER_SERVING_DAEMON_H_

#include <atomic>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/tokenizer.h"
#include "engine/step/engine.h"
#include "grpcpp/grpcpp.h"
#include "scheduler/scheduler.h"
#include "server/generation_service.h"
#include "server/metrics/metrics_http_server.h"
#include "server/metrics/serving_metrics.h"
#include "server/openai/openai_api.h"
#include "server/request_parser.h"
#include "server/scheduler_metrics.h"
#include "server/server_options.h"
#include "server/token_authenticator.h"

namespace catserve::server {

// Start() loads the model, sizes the compressed-KV pool, starts the scheduler, the metrics HTTP
// endpoint, the OpenAI-compatible API (server/openai/) and the gRPC server (catserve.v1.Generation,
// grpc.health.v1.Health, reflection unless
// --reflection=false; plaintext, TLS or mTLS per --tls_*; bearer tokens per --auth_tokens_file),
// and logs to stderr, among others, the two lines scripts and tests parse:
//   catserve: listening on HOST:PORT          (gRPC; the bound port when --listen asks for 0)
//   catserve: metrics on http://HOST:PORT/metrics
//   catserve: openai api on http://HOST:PORT/v1  (https with TLS; absent with --openai_listen=)
// followed by "catserve: ready".
//
// Shutting down gracefully is BeginDrain(), waiting until Idle() (or a grace period), then
// Shutdown(). Thread-safe.
class ServingDaemon {
 public:
  // Errors name the flag or file to fix: a missing model directory (NOT_FOUND), a chunk size the
  // model does not serve (INVALID_ARGUMENT), an address that cannot be bound (UNAVAILABLE), ...
  static absl::StatusOr<std::unique_ptr<ServingDaemon>> Start(const ServerOptions& options);
  ~ServingDaemon();  // Shutdown()

  ServingDaemon(const ServingDaemon&) = delete;
  ServingDaemon& operator=(const ServingDaemon&) = delete;

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_server_->port(); }
  // 0 when the OpenAI API is not served (--openai_listen empty).
  int openai_port() const { return openai_server_ ? openai_server_->port() : 0; }

  // Copies the scheduler's state into the gauges (the scheduler updates them itself after each
  // step; this covers changes without a step, e.g. a request cancelled while queued).
  void RefreshMetrics();
  // Stops taking requests: health of "catserve.v1.Generation" NOT_SERVING ("" stays SERVING: the
  // process is alive), /readyz 503, new Generate calls UNAVAILABLE. Running and queued requests
  // carry on.
  void BeginDrain();
  // True when no request is queued or running.
  bool Idle() const;
  // OK while the engine works. Once a step failed fatally (Scheduler::FatalError: a sticky
  // device error) every health status ("" too) is NOT_SERVING and /readyz 503, and this returns
  // that error; main() then exits non-zero so that the orchestrator restarts the process.
  absl::Status CheckEngine();
  // Ends whatever is still running (those calls get UNAVAILABLE), stops the gRPC server, the
  // scheduler and the HTTP endpoint. Idempotent.
  void Shutdown();

 private:
  explicit ServingDaemon(const ServerOptions& options) : options_(options) {}
  // Start's steps, in order; each fills the members it names.
  absl::Status Init();
  absl::Status LoadModel();   // engine_, tokenizer_, model_name_, sampling_threads_; checks flags
  absl::Status SizeKvPool();  // device_, geometry_, pool_pages_
  void StartMetrics();        // serving_metrics_, scheduler_metrics_
  absl::Status StartScheduler();  // scheduler_
  void BuildParser();             // parser_: the flags' limits over the model's
  absl::Status LoadSecurity();    // authenticator_, credentials_
  absl::Status StartHttp();       // http_server_: /metrics, /healthz, /readyz
  absl::Status StartOpenAi();     // openai_api_, openai_server_ (unless --openai_listen is empty)
  absl::Status StartGrpc();       // service_, grpc_server_, grpc_port_, health statuses
  void LogStartup() const;
  v1::ModelInfo BuildModelInfo() const;

  const ServerOptions options_;
  std::unique_ptr<metrics::ServingMetrics> serving_metrics_;
  std::unique_ptr<SchedulerMetrics> scheduler_metrics_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::Tokenizer> tokenizer_;
  std::unique_ptr<RequestParser> parser_;
  std::string model_name_;  // "cat-small-en" for --model_dir=models/cat-small-en
  engine::DeviceInfo device_;
  engine::KvGeometry geometry_;  // of the pool's pages
  int pool_pages_ = 0;
  int sampling_threads_ = 0;
  std::unique_ptr<TokenAuthenticator> authenticator_;  // null without --auth_tokens_file
  std::shared_ptr<grpc::ServerCredentials> credentials_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::unique_ptr<metrics::MetricsHttpServer> http_server_;
  std::unique_ptr<openai::OpenAiApi> openai_api_;
  std::unique_ptr<http::HttpServer> openai_server_;
  int grpc_port_ = 0;
  std::atomic<bool> ready_{false};
  std::atomic<bool> shut_down_{false};
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_SERVING_DAEMON_H_
