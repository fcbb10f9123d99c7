#ifndef CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
#define CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_

#include <cstdarg>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/collectable.h"

struct MHD_Connection;
struct MHD_Daemon;

namespace catserve::metrics {

struct ConnectionDeadline;  // in the .cc

// The operator-facing HTTP endpoint (GNU libmicrohttpd), separate from the gRPC port:
//   GET /metrics  200, `metrics` in the text exposition format 0.0.4 (prometheus-cpp's serializer)
//   GET /healthz  200 "ok\n" while the process serves HTTP at all (liveness)
//   GET /readyz   200 "ready\n" when ready() returns true, else 503 "not ready\n" (readiness;
//                 the server flips it to false when it starts draining)
// HEAD is answered like GET without a body; other methods get 405, other paths 404. Requests the
// library cannot parse never reach those handlers: a malformed request line or header gets 400,
// a request line or header block over 16 KiB gets 414 or 431. A request body is never read: the
// handler answers as soon as the headers are in.
//
// Why libmicrohttpd and not civetweb: civetweb (Debian 1.15) runs every connection on a worker
// thread with a fixed 100 KiB stack, from which glibc also carves the process's static TLS
// (OpenBLAS alone holds 60 KiB of it); its error-page path overflowed what was left and a request
// as plain as `GET /` killed the daemon. libmicrohttpd's threads get the default stack, and it
// serves connections from event loops (epoll), so idle or half-open connections hold a file
// descriptor, not a thread: probes are answered while scanners or slow clients hang around.
//
// Requests are served on kThreads event-loop threads; `metrics` and `ready` are called from them
// and must be thread-safe. Destroying the server stops listening and waits for in-flight requests,
// after which `metrics` and `ready` are no longer used.
class MetricsHttpServer {
 public:
  // Event-loop threads, connections served at once (more are refused at accept), and of them
  // from one client address, and seconds an idle connection is kept.
  static constexpr int kThreads = 2;
  static constexpr int kMaxConnections = 1024;
  static constexpr int kMaxConnectionsPerAddress = 128;
  static constexpr int kConnectionTimeoutSeconds = 10;
  // A connection must deliver a whole request (line and headers) within this of connecting, or
  // of its previous answer, however it trickles; then it is closed.
  static constexpr absl::Duration kRequestDeadline = absl::Seconds(10);

  // Listens on `address`, "HOST:PORT": HOST an IPv4 literal ("0.0.0.0" for every interface,
  // "127.0.0.1" for loopback) or empty (every interface), PORT in [0, 65535]; port 0 picks a free
  // port, see port(). `metrics` must outlive the server; `ready` may be empty (always ready).
  // Returns InvalidArgumentError for a malformed address and UnavailableError when the address
  // cannot be bound (e.g. the port is in use), with the library's reason in the message.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      absl::string_view address, const prometheus::Collectable* metrics,
      std::function<bool()> ready);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  ~MetricsHttpServer();

  // The bound TCP port (the one chosen by the OS when started with port 0).
  int port() const { return port_; }

 private:
  MetricsHttpServer(const prometheus::Collectable* metrics, std::function<bool()> ready);

  friend struct HttpCallbacks;  // libmicrohttpd's callbacks, in the .cc

  // The status and body of a parsed GET or HEAD of `path`.
  int Serve(absl::string_view path, std::string* content_type, std::string* body) const;
  void Log(const char* format, va_list args);

  // Closes the sockets of connections past their request deadline, every `kDeadlineTick`.
  void EnforceDeadlines();

  const prometheus::Collectable* const metrics_;
  const std::function<bool()> ready_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  // Every open connection's deadline, kept by libmicrohttpd's callbacks (in the .cc).
  absl::Mutex deadlines_mu_;
  absl::flat_hash_set<ConnectionDeadline*> connections_ ABSL_GUARDED_BY(deadlines_mu_);
  bool stopping_ ABSL_GUARDED_BY(deadlines_mu_) = false;
  std::thread deadline_thread_;

  // The library's messages during Start(), to explain a failure. Later ones (a client's broken
  // request, a reset connection) are dropped: a client must not be able to fill the log.
  absl::Mutex log_mu_;
  std::string start_log_ ABSL_GUARDED_BY(log_mu_);
  bool started_ ABSL_GUARDED_BY(log_mu_) = false;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_METRICS_HTTP_SERVER_H_
