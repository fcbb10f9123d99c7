// HttpServer: catserve's HTTP/1.1 endpoints (GNU libmicrohttpd), with answers given from any
// thread, whole or streamed, and clients that go away noticed while their answer is pending.
#ifndef CATSERVE_SERVER_HTTP_HTTP_SERVER_H_
#define CATSERVE_SERVER_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

struct MHD_Connection;
struct MHD_Daemon;

namespace catserve::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// A parsed request, as a handler sees it.
struct Request {
  std::string method;         // "GET", "HEAD" or "POST"
  std::string path;           // the URL's path, without its query
  std::string authorization;  // the Authorization header, or empty
  std::string body;           // POST routes only; at most Options::max_body_bytes
};

class HttpServer;
struct HttpCallbacks;
struct ConnectionClock;

// The answer to one request, given once from any thread: Reply() in one piece, or StartStream()
// followed by Write()s and End() (chunked transfer encoding). A handler may answer before it
// returns or hold the call and answer later; until then the connection waits (suspended, costing
// no thread and no polling). Thread-safe.
class Call {
 public:
  // Answers with `status` and `body`. Ignored after the first answer or once the client is gone.
  void Reply(int status, absl::string_view content_type, std::string body, Headers headers = {});
  // Starts a streamed answer; false (and ignored) after the first answer or once the client is
  // gone.
  bool StartStream(int status, absl::string_view content_type, Headers headers = {});
  // Queues `bytes` of a started stream; false once the client is gone (the bytes are dropped).
  bool Write(absl::string_view bytes);
  // Ends a started stream once its queued bytes are sent.
  void End();

  // Runs `fn` once, the first time the client is seen to be gone before its answer was complete
  // (it closed its connection, or the server stopped); at once if it is gone already. `fn` runs
  // on a server thread or the caller's, must not block and must not call back into this Call.
  void OnClientGone(std::function<void()> fn);
  bool client_gone() const;

 private:
  friend class HttpServer;
  friend struct HttpCallbacks;
  enum class Mode { kNone, kReply, kStream };

  // Resumes the connection if it waits for this call. Requires mu_.
  void WakeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the client gone and returns the callback to run (outside the lock).
  std::function<void()> MarkGoneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::atomic<bool>* server_stopping_ = nullptr;  // the server's flag; set at creation
  mutable absl::Mutex mu_;
  MHD_Connection* connection_ ABSL_GUARDED_BY(mu_) = nullptr;  // null once the request ended
  bool suspended_ ABSL_GUARDED_BY(mu_) = false;
  Mode mode_ ABSL_GUARDED_BY(mu_) = Mode::kNone;
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  std::string content_type_ ABSL_GUARDED_BY(mu_);
  Headers headers_ ABSL_GUARDED_BY(mu_);
  std::string body_ ABSL_GUARDED_BY(mu_);       // the reply, or stream bytes not yet sent
  bool queued_ ABSL_GUARDED_BY(mu_) = false;    // the library has the response
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // End() called
  bool complete_ ABSL_GUARDED_BY(mu_) = false;  // the whole answer went out
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_gone_ ABSL_GUARDED_BY(mu_);
};

using Handler = std::function<void(const Request& request, std::shared_ptr<Call> call)>;

// What a server serves: handlers by exact path and method. GET routes answer HEAD too (the
// library omits the body). A path with no route gets 404, a method a path has no route for 405.
class Routes {
 public:
  Routes& Get(std::string path, Handler handler);
  // The body is read (up to Options::max_body_bytes) before `handler` runs.
  Routes& Post(std::string path, Handler handler);

 private:
  friend class HttpServer;
  friend struct HttpCallbacks;
  struct ForPath {
    Handler get;
    Handler post;
  };
  std::map<std::string, ForPath, std::less<>> paths_;
};

// TLS for a server: PEM texts, not file names. An empty cert means plain HTTP. With a client CA,
// every request must come over a connection whose client presented a certificate that CA signed;
// others get 401 (the handshake itself lets them in, to be told why).
struct TlsPem {
  std::string cert;
  std::string key;
  std::string client_ca;
};

struct Options {
  // Bodies of POST requests above this get 413 (before they are read, when Content-Length
  // says so).
  int64_t max_body_bytes = 0;
  TlsPem tls;
  // The answer to a request the server refuses itself (404, 405, 413, 503 while stopping):
  // `message` in this server's error format. Default: text/plain.
  std::function<void(Call& call, int status, absl::string_view message)> error_answer;
  // Names the server in Start's errors: "metrics", "OpenAI API".
  std::string name = "http";
  // Connections served at once, and of them from one client address. An operator port keeps the
  // second low (a scanner cannot take it over); an API port behind a gateway or load balancer
  // sees every client at the balancer's address and sets both alike.
  int max_connections = 1024;
  int max_connections_per_address = 128;
};

// The HTTP server both of catserve's HTTP ports run on (server/metrics/metrics_http_server.h
// says why libmicrohttpd): requests are parsed and answered on kThreads event-loop threads
// (epoll), and idle or half-open connections hold a file descriptor, not a thread. Whatever
// arrives, the process lives and other requests are unharmed:
//  - a malformed request line or header gets 400, a request line or header block over 16 KiB 414
//    or 431, an unknown HTTP version 505;
//  - a connection must deliver a whole request (line, headers and body) within kRequestDeadline
//    of connecting or of its previous answer, however it trickles, or it is closed;
//  - at most Options::max_connections connections, max_connections_per_address of them from one
//    address (more are closed at accept, without an answer).
// While an answer is pending (a handler holds the call), the connection is watched: a client that
// closes it (or shuts down its sending side) is taken as gone within kGoneTick, and the call's
// OnClientGone callback runs.
//
// Destroying the server first ends every pending call (their clients are "gone"), then stops
// listening and closes every connection; handlers are no longer called.
class HttpServer {
 public:
  static constexpr int kThreads = 2;
  static constexpr int kConnectionTimeoutSeconds = 10;
  static constexpr absl::Duration kRequestDeadline = absl::Seconds(10);
  static constexpr absl::Duration kGoneTick = absl::Milliseconds(100);

  // Listens on `address`, "HOST:PORT": HOST an IPv4 literal ("0.0.0.0" for every interface,
  // "127.0.0.1" for loopback) or empty (every interface), PORT in [0, 65535]; port 0 picks a free
  // port, see port(). InvalidArgumentError for a malformed address or TLS material the library
  // refuses, UnavailableError when the address cannot be bound (e.g. the port is in use), with
  // the library's reason in the message.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(absl::string_view address, Routes routes,
                                                           Options options);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer();

  int port() const { return port_; }

 private:
  HttpServer(Routes routes, Options options);
  friend struct HttpCallbacks;

  void AnswerError(Call& call, int status, absl::string_view message) const;
  void Log(const char* format, va_list args);
  // Every kGoneTick: closes connections past their request deadline and notices clients of
  // pending calls that went away.
  void Watch();

  const Routes routes_;
  const Options options_;
  std::atomic<bool> stopping_flag_{false};  // set first thing when the server is destroyed
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  absl::Mutex connections_mu_;
  absl::flat_hash_set<ConnectionClock*> connections_ ABSL_GUARDED_BY(connections_mu_);
  bool stopping_ ABSL_GUARDED_BY(connections_mu_) = false;
  std::thread watch_thread_;

  absl::Mutex log_mu_;
  std::string start_log_ ABSL_GUARDED_BY(log_mu_);
  bool started_ ABSL_GUARDED_BY(log_mu_) = false;
};

}  // namespace catserve::http

#endif  // CATSERVE_SERVER_HTTP_HTTP_SERVER_H_
