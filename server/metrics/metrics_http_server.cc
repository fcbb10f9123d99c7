#include "server/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace catserve::metrics {
namespace {

constexpr char kTextPlain[] = "text/plain; charset=utf-8";
constexpr char kExpositionFormat[] = "text/plain; version=0.0.4; charset=utf-8";
// Request line plus headers must fit in this; more gets 414 or 431 from the library.
constexpr size_t kRequestMemoryLimit = 16 * 1024;

// Turns "HOST:PORT" into an IPv4 socket address, or explains what is wrong.
absl::StatusOr<sockaddr_in> ListeningAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" must be HOST:PORT, e.g. 0.0.0.0:8000"));
  }
  const absl::string_view host = address.substr(0, colon);
  const absl::string_view port_text = address.substr(colon + 1);
  int port = -1;
  const bool digits_only =
      !port_text.empty() && std::all_of(port_text.begin(), port_text.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c));
      });
  if (!digits_only || !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\": port must be a number in [0, 65535]"));
  }
  sockaddr_in socket_address{};
  socket_address.sin_family = AF_INET;
  socket_address.sin_port = htons(static_cast<uint16_t>(port));
  socket_address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (!host.empty() &&
      inet_pton(AF_INET, std::string(host).c_str(), &socket_address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\": host \"",
                                                   host, "\" is not an IPv4 address"));
  }
  return socket_address;
}

MHD_Result Respond(MHD_Connection* connection, int status, const std::string& content_type,
                   const std::string& body) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;  // out of memory: the library drops the connection
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type.c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

}  // namespace

// One connection's socket and the time by which its request must be whole.
struct ConnectionDeadline {
  int fd = -1;
  absl::Time deadline;
  bool answering = false;  // its request arrived whole; the answer is under way
  bool closed = false;     // its socket was shut down for missing the deadline
};

// libmicrohttpd calls these with the server as their closure.
struct HttpCallbacks {
  // Called once a request's line and headers parsed (and again per piece of a body, which no
  // endpoint takes: the first call answers, and the library then drops the body).
  static MHD_Result Access(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* version, const char* upload_data,
                           size_t* upload_data_size, void** request_state) {
    auto* server = static_cast<MetricsHttpServer*>(cls);
    if (const MHD_ConnectionInfo* info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        info != nullptr && info->socket_context != nullptr) {
      absl::MutexLock lock(&server->deadlines_mu_);
      static_cast<ConnectionDeadline*>(info->socket_context)->answering = true;
    }
    const absl::string_view verb(method);
    if (verb != MHD_HTTP_METHOD_GET && verb != MHD_HTTP_METHOD_HEAD) {
      return Respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, kTextPlain,
                     "only GET and HEAD are allowed\n");
    }
    std::string content_type = kTextPlain;
    std::string body;
    const int status = server->Serve(url, &content_type, &body);
    return Respond(connection, status, content_type, body);  // HEAD: the library omits the body
  }

  // A connection opens (its deadline starts) or closes.
  static void Connection(void* cls, MHD_Connection* connection, void** socket_context,
                         MHD_ConnectionNotificationCode code) {
    auto* server = static_cast<MetricsHttpServer*>(cls);
    absl::MutexLock lock(&server->deadlines_mu_);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
      auto* clock = new ConnectionDeadline;
      const MHD_ConnectionInfo* info =
          MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
      clock->fd = info != nullptr ? info->connect_fd : -1;
      clock->deadline = absl::Now() + MetricsHttpServer::kRequestDeadline;
      server->connections_.insert(clock);
      *socket_context = clock;
    } else if (*socket_context != nullptr) {
      auto* clock = static_cast<ConnectionDeadline*>(*socket_context);
      server->connections_.erase(clock);
      delete clock;
      *socket_context = nullptr;
    }
  }

  // A request was answered: the next one on the connection has a deadline of its own.
  static void Completed(void* cls, MHD_Connection* connection, void** request_state,
                        MHD_RequestTerminationCode code) {
    auto* server = static_cast<MetricsHttpServer*>(cls);
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (info == nullptr || info->socket_context == nullptr) return;
    absl::MutexLock lock(&server->deadlines_mu_);
    auto* clock = static_cast<ConnectionDeadline*>(info->socket_context);
    clock->answering = false;
    clock->deadline = absl::Now() + MetricsHttpServer::kRequestDeadline;
  }

  static void Log(void* cls, const char* format, va_list args) {
    static_cast<MetricsHttpServer*>(cls)->Log(format, args);
  }
};

MetricsHttpServer::MetricsHttpServer(const prometheus::Collectable* metrics,
                                     std::function<bool()> ready)
    : metrics_(metrics), ready_(std::move(ready)) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    absl::string_view address, const prometheus::Collectable* metrics,
    std::function<bool()> ready) {
  absl::StatusOr<sockaddr_in> socket_address = ListeningAddress(address);
  if (!socket_address.ok()) return socket_address.status();

  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(metrics, std::move(ready)));
  server->daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, nullptr, nullptr,
      &HttpCallbacks::Access, server.get(),                           //
      MHD_OPTION_EXTERNAL_LOGGER, &HttpCallbacks::Log, server.get(),  // first, to see every line
      MHD_OPTION_SOCK_ADDR, &*socket_address, MHD_OPTION_THREAD_POOL_SIZE,
      static_cast<unsigned>(kThreads), MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned>(kMaxConnections), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      static_cast<unsigned>(kMaxConnectionsPerAddress), MHD_OPTION_NOTIFY_CONNECTION,
      &HttpCallbacks::Connection, server.get(), MHD_OPTION_NOTIFY_COMPLETED,
      &HttpCallbacks::Completed, server.get(), MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned>(kConnectionTimeoutSeconds), MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      kRequestMemoryLimit,  //
      MHD_OPTION_END);
  absl::MutexLock lock(&server->log_mu_);
  if (server->daemon_ == nullptr) {
    // libmicrohttpd names "port 0" when given a socket address; say which address instead.
    const bool in_use = absl::StrContains(server->start_log_, "Address already in use");
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ",
                                               in_use ? "the address is in use (another catserve?)"
                                               : server->start_log_.empty()
                                                   ? "libmicrohttpd could not start"
                                                   : server->start_log_));
  }
  server->started_ = true;
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  if (info == nullptr || info->port == 0) {
    return absl::InternalError(absl::StrCat("libmicrohttpd reports no bound port for ", address));
  }
  server->port_ = info->port;
  server->deadline_thread_ = std::thread([s = server.get()] { s->EnforceDeadlines(); });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (deadline_thread_.joinable()) {
    {
      absl::MutexLock lock(&deadlines_mu_);
      stopping_ = true;
    }
    deadline_thread_.join();
  }
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

void MetricsHttpServer::EnforceDeadlines() {
  constexpr absl::Duration kDeadlineTick = absl::Milliseconds(250);
  absl::MutexLock lock(&deadlines_mu_);
  while (!deadlines_mu_.AwaitWithTimeout(absl::Condition(&stopping_), kDeadlineTick)) {
    const absl::Time now = absl::Now();
    for (ConnectionDeadline* clock : connections_) {
      if (clock->answering || clock->closed || clock->fd < 0 || now < clock->deadline) continue;
      // The library still owns the descriptor: shutting the socket down makes it see the end of
      // the stream and close the connection itself (NOTIFY_CLOSED frees the clock).
      shutdown(clock->fd, SHUT_RDWR);
      clock->closed = true;
    }
  }
}

int MetricsHttpServer::Serve(absl::string_view path, std::string* content_type,
                             std::string* body) const {
  if (path == "/metrics") {
    *content_type = kExpositionFormat;
    *body = prometheus::TextSerializer().Serialize(metrics_->Collect());
    return MHD_HTTP_OK;
  }
  if (path == "/healthz") {
    *body = "ok\n";
    return MHD_HTTP_OK;
  }
  if (path == "/readyz") {
    if (ready_ && !ready_()) {
      *body = "not ready\n";
      return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    *body = "ready\n";
    return MHD_HTTP_OK;
  }
  *body = "not found\n";
  return MHD_HTTP_NOT_FOUND;
}

void MetricsHttpServer::Log(const char* format, va_list args) {
  absl::MutexLock lock(&log_mu_);
  if (started_ || !start_log_.empty()) return;  // the first line names the cause
  char line[512];
  std::vsnprintf(line, sizeof(line), format, args);
  start_log_ = std::string(absl::StripAsciiWhitespace(line));
}

}  // namespace catserve::metrics
