#ifndef CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
#define CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics/registry.h"

struct mg_connection;
struct mg_context;

namespace catserve::metrics {

// The operator-facing HTTP endpoint (civetweb), separate from the gRPC port:
//   GET /metrics  200, Registry::Scrape() as text/plain; version=0.0.4; charset=utf-8
//   GET /healthz  200 "ok\n" while the process serves HTTP at all (liveness)
//   GET /readyz   200 "ready\n" when ready() returns true, else 503 "not ready\n" (readiness;
//                 the server flips it to false when it starts draining)
// HEAD is answered like GET without a body; other methods get 405, other paths 404.
//
// Requests are served on a small pool of civetweb threads; `registry` and `ready` are called from
// them and must be thread-safe. Destroying the server stops listening and waits for in-flight
// requests, after which `registry` and `ready` are no longer used.
class MetricsHttpServer {
 public:
  // Listens on `address`, "HOST:PORT": HOST an IPv4 literal ("0.0.0.0" for every interface,
  // "127.0.0.1" for loopback) or empty (every interface), PORT in [0, 65535]; port 0 picks a free
  // port, see port(). `registry` must outlive the server; `ready` may be empty (always ready).
  // Returns InvalidArgumentError for a malformed address and UnavailableError when the address
  // cannot be bound (e.g. the port is in use), with civetweb's reason in the message.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(absl::string_view address,
                                                                  const Registry* registry,
                                                                  std::function<bool()> ready);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  ~MetricsHttpServer();

  // The bound TCP port (the one chosen by the OS when started with port 0).
  int port() const { return port_; }

 private:
  MetricsHttpServer(const Registry* registry, std::function<bool()> ready);

  static int HandleMetrics(mg_connection* connection, void* server);
  static int HandleHealthz(mg_connection* connection, void* server);
  static int HandleReadyz(mg_connection* connection, void* server);
  static int LogMessage(const mg_connection* connection, const char* message);

  const Registry* const registry_;
  const std::function<bool()> ready_;
  mg_context* context_ = nullptr;
  int port_ = 0;

  // civetweb's log lines during Start(), to explain a failure.
  absl::Mutex log_mu_;
  std::string start_log_ ABSL_GUARDED_BY(log_mu_);
  bool started_ ABSL_GUARDED_BY(log_mu_) = false;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
