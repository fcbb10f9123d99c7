#ifndef CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
#define CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "server/http/http_server.h"

namespace catserve::metrics {

// The operator-facing HTTP endpoint, separate from the APIs' ports:
//   GET /metrics  200, `metrics` in the text exposition format 0.0.4 (prometheus-cpp's serializer)
//   GET /healthz  200 "ok\n" while the process serves HTTP at all (liveness)
//   GET /readyz   200 "ready\n" when ready() returns true, else 503 "not ready\n" (readiness;
//                 the server flips it to false when it starts draining)
// HEAD is answered like GET without a body; other methods get 405 (a body is never read), other
// paths 404. It runs on http::HttpServer, whose limits and defences (deadlines, per-address caps,
// 400/414/431 for what the library cannot parse) apply.
//
// Why libmicrohttpd and not civetweb: civetweb (Debian 1.15) runs every connection on a worker
// thread with a fixed 100 KiB stack, from which glibc also carves the process's static TLS
// (OpenBLAS alone holds 60 KiB of it); its error-page path overflowed what was left and a request
// as plain as `GET /` killed the daemon. libmicrohttpd's threads get the default stack, and it
// serves connections from event loops (epoll), so idle or half-open connections hold a file
// descriptor, not a thread: probes are answered while scanners or slow clients hang around.
//
// `metrics` and `ready` are called from the server's threads and must be thread-safe. Destroying
// the server stops listening and waits for in-flight requests, after which they are no longer used.
class MetricsHttpServer {
 public:
  // Listens on `address` (see http::HttpServer::Start). `metrics` must outlive the server;
  // `ready` may be empty (always ready). InvalidArgumentError for a malformed address,
  // UnavailableError when the address cannot be bound (e.g. the port is in use).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      absl::string_view address, const prometheus::Collectable* metrics,
      std::function<bool()> ready);

  // The bound TCP port (the one chosen by the OS when started with port 0).
  int port() const { return http_->port(); }

  // GET /healthz, /readyz and /metrics as routes, for a server that serves them beside others.
  static void AddProbeRoutes(http::Routes& routes, const prometheus::Collectable* metrics,
                             std::function<bool()> ready);

 private:
  explicit MetricsHttpServer(std::unique_ptr<http::HttpServer> http) : http_(std::move(http)) {}
  std::unique_ptr<http::HttpServer> http_;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
