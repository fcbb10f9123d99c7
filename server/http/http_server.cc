#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace catserve::http {
namespace {

constexpr char kTextPlain[] = "text/plain; charset=utf-8";
// Request line plus headers must fit in this; more gets 414 or 431 from the library.
constexpr size_t kRequestMemoryLimit = 16 * 1024;
// Bytes a streamed answer hands the library at a time.
constexpr size_t kStreamBlock = 16 * 1024;

// Turns "HOST:PORT" into an IPv4 socket address, or explains what is wrong.
absl::StatusOr<sockaddr_in> ListeningAddress(absl::string_view name, absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " address \"", address, "\" must be HOST:PORT, e.g. 0.0.0.0:8000"));
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
        absl::StrCat(name, " address \"", address, "\": port must be a number in [0, 65535]"));
  }
  sockaddr_in socket_address{};
  socket_address.sin_family = AF_INET;
  socket_address.sin_port = htons(static_cast<uint16_t>(port));
  socket_address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (!host.empty() &&
      inet_pton(AF_INET, std::string(host).c_str(), &socket_address.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(name, " address \"", address, "\": host \"",
                                                   host, "\" is not an IPv4 address"));
  }
  return socket_address;
}

void AddHeaders(MHD_Response* response, absl::string_view content_type, const Headers& headers) {
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                          std::string(content_type).c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  for (const auto& [name, value] : headers) {
    MHD_add_response_header(response, name.c_str(), value.c_str());
  }
}

// Whether the TLS client of `connection` presented a certificate the server's trusted CA signed.
bool ClientCertificateVerified(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (info == nullptr || info->tls_session == nullptr) return false;
  auto session = static_cast<gnutls_session_t>(info->tls_session);
  unsigned int peers = 0;
  if (gnutls_certificate_get_peers(session, &peers) == nullptr || peers == 0) return false;
  unsigned int verdict = 0;
  return gnutls_certificate_verify_peers2(session, &verdict) == GNUTLS_E_SUCCESS && verdict == 0;
}

}  // namespace

// One connection's socket, the time by which its request must be whole, and the call it waits
// on (if any).
struct ConnectionClock {
  int fd = -1;
  absl::Time deadline;
  bool answering = false;  // its request arrived whole (or was refused); the answer is under way
  bool closed = false;     // its socket was shut down for missing the deadline
  std::weak_ptr<Call> call;
};

// One request as the library's callbacks track it (the library's per-request pointer).
struct RequestState {
  Request request;
  Handler handler;
  bool takes_body = false;
  bool dispatched = false;  // the handler ran (or the server answered it itself)
  bool too_large = false;
  std::shared_ptr<Call> call = std::make_shared<Call>();
};

// ---- Call ----

void Call::WakeLocked() {
  if (suspended_ && connection_ != nullptr) {
    suspended_ = false;
    MHD_resume_connection(connection_);
  }
}

std::function<void()> Call::MarkGoneLocked() {
  if (gone_ || complete_) return nullptr;
  gone_ = true;
  body_.clear();
  return std::exchange(on_gone_, nullptr);
}

void Call::Reply(int status, absl::string_view content_type, std::string body, Headers headers) {
  absl::MutexLock lock(&mu_);
  if (mode_ != Mode::kNone || gone_) return;
  mode_ = Mode::kReply;
  status_ = status;
  content_type_ = std::string(content_type);
  headers_ = std::move(headers);
  body_ = std::move(body);
  WakeLocked();
}

bool Call::StartStream(int status, absl::string_view content_type, Headers headers) {
  absl::MutexLock lock(&mu_);
  if (mode_ != Mode::kNone || gone_) return false;
  mode_ = Mode::kStream;
  status_ = status;
  content_type_ = std::string(content_type);
  headers_ = std::move(headers);
  WakeLocked();
  return true;
}

bool Call::Write(absl::string_view bytes) {
  absl::MutexLock lock(&mu_);
  if (gone_) return false;
  if (mode_ != Mode::kStream || ended_) return true;
  body_.append(bytes.data(), bytes.size());
  WakeLocked();
  return true;
}

void Call::End() {
  absl::MutexLock lock(&mu_);
  if (mode_ != Mode::kStream || ended_) return;
  ended_ = true;
  WakeLocked();
}

void Call::OnClientGone(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (!gone_) {
      on_gone_ = std::move(fn);
      return;
    }
  }
  fn();
}

bool Call::client_gone() const {
  absl::MutexLock lock(&mu_);
  return gone_;
}

// ---- Routes ----

Routes& Routes::Get(std::string path, Handler handler) {
  paths_[std::move(path)].get = std::move(handler);
  return *this;
}

Routes& Routes::Post(std::string path, Handler handler) {
  paths_[std::move(path)].post = std::move(handler);
  return *this;
}

// ---- the library's callbacks ----

struct HttpCallbacks {
  // The server is stopping: no request waits any more.
  static bool Stopping(const HttpServer* server) {
    return server->stopping_flag_.load(std::memory_order_acquire);
  }

  static void MarkAnswering(HttpServer* server, MHD_Connection* connection,
                            const std::shared_ptr<Call>& call) {
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (info == nullptr || info->socket_context == nullptr) return;
    absl::MutexLock lock(&server->connections_mu_);
    auto* clock = static_cast<ConnectionClock*>(info->socket_context);
    clock->answering = true;
    clock->call = call;
  }

  // Hands the call's answer to the library, or waits (suspended) until there is one.
  static MHD_Result Continue(HttpServer* server, MHD_Connection* connection, RequestState* state) {
    Call& call = *state->call;
    absl::MutexLock lock(&call.mu_);
    if (call.gone_) return MHD_NO;  // close the connection
    if (call.queued_) return MHD_YES;
    switch (call.mode_) {
      case Call::Mode::kNone:
        if (Stopping(server)) return MHD_NO;
        MHD_suspend_connection(connection);
        call.suspended_ = true;
        return MHD_YES;
      case Call::Mode::kReply: {
        MHD_Response* response = MHD_create_response_from_buffer(
            call.body_.size(), call.body_.data(), MHD_RESPMEM_MUST_COPY);
        if (response == nullptr) return MHD_NO;  // out of memory: the library drops it
        AddHeaders(response, call.content_type_, call.headers_);
        const MHD_Result queued = MHD_queue_response(connection, call.status_, response);
        MHD_destroy_response(response);
        call.queued_ = true;
        call.body_.clear();
        return queued;
      }
      case Call::Mode::kStream: {
        auto* reader_ref = new std::shared_ptr<Call>(state->call);
        MHD_Response* response =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, kStreamBlock, &HttpCallbacks::Read,
                                              reader_ref, &HttpCallbacks::FreeReader);
        if (response == nullptr) {
          delete reader_ref;
          return MHD_NO;
        }
        AddHeaders(response, call.content_type_, call.headers_);
        const MHD_Result queued = MHD_queue_response(connection, call.status_, response);
        MHD_destroy_response(response);
        call.queued_ = true;
        return queued;
      }
    }
    return MHD_NO;
  }

  // The library asks for the next bytes of a streamed answer.
  static ssize_t Read(void* cls, uint64_t pos, char* buf, size_t max) {
    Call& call = **static_cast<std::shared_ptr<Call>*>(cls);
    absl::MutexLock lock(&call.mu_);
    if (call.gone_) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (!call.body_.empty()) {
      const size_t n = std::min(max, call.body_.size());
      std::memcpy(buf, call.body_.data(), n);
      call.body_.erase(0, n);
      return static_cast<ssize_t>(n);
    }
    if (call.ended_) {
      call.complete_ = true;
      return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (call.connection_ == nullptr || call.server_stopping_->load(std::memory_order_acquire)) {
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    MHD_suspend_connection(call.connection_);
    call.suspended_ = true;
    return 0;
  }

  static void FreeReader(void* cls) { delete static_cast<std::shared_ptr<Call>*>(cls); }

  // Called once a request's line and headers parsed, once per piece of its body, and once when
  // it is whole (and again after each resume until an answer is queued).
  static MHD_Result Access(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* version, const char* upload_data,
                           size_t* upload_data_size, void** request_state) {
    auto* server = static_cast<HttpServer*>(cls);
    auto* state = static_cast<RequestState*>(*request_state);
    if (state == nullptr) {
      state = new RequestState;
      *request_state = state;
      state->call->server_stopping_ = &server->stopping_flag_;
      {
        absl::MutexLock lock(&state->call->mu_);
        state->call->connection_ = connection;
      }
      return Begin(server, connection, url, method, state);
    }
    if (!state->dispatched) {
      if (*upload_data_size > 0) {
        const size_t room = static_cast<size_t>(server->options_.max_body_bytes) -
                            std::min<size_t>(state->request.body.size(),
                                             static_cast<size_t>(server->options_.max_body_bytes));
        if (*upload_data_size > room) {
          state->too_large = true;
        } else if (!state->too_large) {
          state->request.body.append(upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
      }
      if (state->too_large)
        return Refuse(server, connection, state, MHD_HTTP_CONTENT_TOO_LARGE, TooLarge(server));
      return Dispatch(server, connection, state);
    }
    return Continue(server, connection, state);
  }

  static std::string TooLarge(const HttpServer* server) {
    return absl::StrCat("the request body is larger than this server reads (",
                        server->options_.max_body_bytes, " bytes); send less");
  }

  // The first call of a request: route it, refuse it, or wait for its body.
  static MHD_Result Begin(HttpServer* server, MHD_Connection* connection, const char* url,
                          const char* method, RequestState* state) {
    Request& request = state->request;
    request.method = method;
    request.path = url;
    if (const char* auth = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION)) {
      request.authorization = auth;
    }
    if (Stopping(server)) {
      return Refuse(server, connection, state, MHD_HTTP_SERVICE_UNAVAILABLE,
                    "the server is shutting down; retry on another replica");
    }
    if (!server->options_.tls.client_ca.empty() && !ClientCertificateVerified(connection)) {
      return Refuse(server, connection, state, MHD_HTTP_UNAUTHORIZED,
                    "this server requires a client certificate signed by its client CA "
                    "(--tls_client_ca); present one");
    }
    const absl::string_view verb(method);
    if (verb != MHD_HTTP_METHOD_GET && verb != MHD_HTTP_METHOD_HEAD &&
        verb != MHD_HTTP_METHOD_POST) {
      return Refuse(server, connection, state, MHD_HTTP_METHOD_NOT_ALLOWED,
                    "only GET, HEAD and POST are served");
    }
    auto route = server->routes_.paths_.find(request.path);
    if (route == server->routes_.paths_.end()) {
      return Refuse(server, connection, state, MHD_HTTP_NOT_FOUND,
                    absl::StrCat("no such path: ", absl::CHexEscape(request.path.substr(0, 200))));
    }
    if ((verb == MHD_HTTP_METHOD_GET || verb == MHD_HTTP_METHOD_HEAD) && route->second.get) {
      state->handler = route->second.get;
      return Dispatch(server, connection, state);
    }
    if (verb == MHD_HTTP_METHOD_POST && route->second.post) {
      state->handler = route->second.post;
      state->takes_body = true;
      const char* length =
          MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
      int64_t bytes = 0;
      if (length != nullptr && absl::SimpleAtoi(length, &bytes) &&
          bytes > server->options_.max_body_bytes) {
        return Refuse(server, connection, state, MHD_HTTP_CONTENT_TOO_LARGE, TooLarge(server));
      }
      return MHD_YES;  // the body comes next
    }
    std::string allowed;
    if (route->second.get) allowed = "GET and HEAD";
    if (route->second.post) allowed = allowed.empty() ? "POST" : allowed + " and POST";
    return Refuse(server, connection, state, MHD_HTTP_METHOD_NOT_ALLOWED,
                  absl::StrCat("only ", allowed, " are allowed on ", request.path));
  }

  static MHD_Result Refuse(HttpServer* server, MHD_Connection* connection, RequestState* state,
                           int status, absl::string_view message) {
    state->dispatched = true;
    MarkAnswering(server, connection, nullptr);
    server->AnswerError(*state->call, status, message);
    return Continue(server, connection, state);
  }

  static MHD_Result Dispatch(HttpServer* server, MHD_Connection* connection, RequestState* state) {
    state->dispatched = true;
    MarkAnswering(server, connection, state->call);
    state->handler(state->request, state->call);
    return Continue(server, connection, state);
  }

  // A connection opens (its deadline starts) or closes.
  static void Connection(void* cls, MHD_Connection* connection, void** socket_context,
                         MHD_ConnectionNotificationCode code) {
    auto* server = static_cast<HttpServer*>(cls);
    absl::MutexLock lock(&server->connections_mu_);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
      auto* clock = new ConnectionClock;
      const MHD_ConnectionInfo* info =
          MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
      clock->fd = info != nullptr ? info->connect_fd : -1;
      clock->deadline = absl::Now() + HttpServer::kRequestDeadline;
      server->connections_.insert(clock);
      *socket_context = clock;
    } else if (*socket_context != nullptr) {
      auto* clock = static_cast<ConnectionClock*>(*socket_context);
      server->connections_.erase(clock);
      delete clock;
      *socket_context = nullptr;
    }
  }

  // A request ended: answered, or its connection closed first.
  static void Completed(void* cls, MHD_Connection* connection, void** request_state,
                        MHD_RequestTerminationCode code) {
    auto* server = static_cast<HttpServer*>(cls);
    auto* state = static_cast<RequestState*>(*request_state);
    *request_state = nullptr;
    if (state != nullptr) {
      std::function<void()> gone;
      {
        Call& call = *state->call;
        absl::MutexLock lock(&call.mu_);
        call.connection_ = nullptr;
        call.suspended_ = false;
        if (code == MHD_REQUEST_TERMINATED_COMPLETED_OK && call.mode_ == Call::Mode::kReply) {
          call.complete_ = true;
        }
        gone = call.MarkGoneLocked();
      }
      if (gone) gone();
      delete state;
    }
    const MHD_ConnectionInfo* info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (info == nullptr || info->socket_context == nullptr) return;
    absl::MutexLock lock(&server->connections_mu_);
    auto* clock = static_cast<ConnectionClock*>(info->socket_context);
    clock->answering = false;
    clock->call.reset();
    clock->deadline = absl::Now() + HttpServer::kRequestDeadline;
  }

  static void Log(void* cls, const char* format, va_list args) {
    static_cast<HttpServer*>(cls)->Log(format, args);
  }
};

// ---- HttpServer ----

HttpServer::HttpServer(Routes routes, Options options)
    : routes_(std::move(routes)), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(absl::string_view address,
                                                              Routes routes, Options options) {
  absl::StatusOr<sockaddr_in> socket_address = ListeningAddress(options.name, address);
  if (!socket_address.ok()) return socket_address.status();
  const bool tls = !options.tls.cert.empty();
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(routes), std::move(options)));
  const TlsPem& pem = server->options_.tls;
  MHD_OptionItem tls_options[] = {
      {MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(pem.key.c_str())},
      {MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(pem.cert.c_str())},
      // Asks clients for a certificate (verified per request: ClientCertificateVerified).
      {pem.client_ca.empty() ? MHD_OPTION_END : MHD_OPTION_HTTPS_MEM_TRUST, 0,
       const_cast<char*>(pem.client_ca.c_str())},
      {MHD_OPTION_END, 0, nullptr}};
  MHD_OptionItem no_options[] = {{MHD_OPTION_END, 0, nullptr}};
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                   MHD_ALLOW_SUSPEND_RESUME;
  if (tls) flags |= MHD_USE_TLS;
  server->daemon_ = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &HttpCallbacks::Access, server.get(),  //
      MHD_OPTION_EXTERNAL_LOGGER, &HttpCallbacks::Log, server.get(),     // first, to see every line
      MHD_OPTION_SOCK_ADDR, &*socket_address, MHD_OPTION_THREAD_POOL_SIZE,
      static_cast<unsigned>(kThreads), MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned>(server->options_.max_connections), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      static_cast<unsigned>(server->options_.max_connections_per_address),
      MHD_OPTION_NOTIFY_CONNECTION, &HttpCallbacks::Connection, server.get(),
      MHD_OPTION_NOTIFY_COMPLETED, &HttpCallbacks::Completed, server.get(),
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(kConnectionTimeoutSeconds),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, kRequestMemoryLimit, MHD_OPTION_ARRAY,
      tls ? tls_options : no_options,  //
      MHD_OPTION_END);
  absl::MutexLock lock(&server->log_mu_);
  if (server->daemon_ == nullptr) {
    // libmicrohttpd names "port 0" when given a socket address; say which address instead.
    const std::string why = server->start_log_;
    const bool in_use = absl::StrContains(why, "Address already in use");
    const bool bad_tls = tls && !in_use && !absl::StrContains(why, "bind");
    const std::string message =
        absl::StrCat("cannot serve ", server->options_.name, " on ", address, ": ",
                     in_use        ? "the address is in use (another catserve?)"
                     : why.empty() ? "libmicrohttpd could not start"
                                   : why);
    return bad_tls ? absl::InvalidArgumentError(message) : absl::UnavailableError(message);
  }
  server->started_ = true;
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  if (info == nullptr || info->port == 0) {
    return absl::InternalError(absl::StrCat("libmicrohttpd reports no bound port for ", address));
  }
  server->port_ = info->port;
  server->watch_thread_ = std::thread([s = server.get()] { s->Watch(); });
  return server;
}

HttpServer::~HttpServer() {
  stopping_flag_.store(true, std::memory_order_release);
  if (watch_thread_.joinable()) {
    {
      absl::MutexLock lock(&connections_mu_);
      stopping_ = true;
    }
    watch_thread_.join();
  }
  if (daemon_ == nullptr) return;
  // The library must not stop with a connection suspended: every pending call ends (its client
  // is "gone" to its handler) and its connection resumes, to be closed by the library.
  std::vector<std::shared_ptr<Call>> pending;
  {
    absl::MutexLock lock(&connections_mu_);
    for (ConnectionClock* clock : connections_) {
      if (std::shared_ptr<Call> call = clock->call.lock()) pending.push_back(std::move(call));
    }
  }
  for (const std::shared_ptr<Call>& call : pending) {
    std::function<void()> gone;
    {
      absl::MutexLock lock(&call->mu_);
      gone = call->MarkGoneLocked();
      call->WakeLocked();
    }
    if (gone) gone();
  }
  MHD_stop_daemon(daemon_);
}

void HttpServer::AnswerError(Call& call, int status, absl::string_view message) const {
  if (options_.error_answer) {
    options_.error_answer(call, status, message);
  } else {
    call.Reply(status, kTextPlain, absl::StrCat(message, "\n"));
  }
}

void HttpServer::Watch() {
  absl::MutexLock lock(&connections_mu_);
  while (!connections_mu_.AwaitWithTimeout(absl::Condition(&stopping_), kGoneTick)) {
    const absl::Time now = absl::Now();
    std::vector<std::shared_ptr<Call>> hung_up;
    for (ConnectionClock* clock : connections_) {
      if (clock->closed || clock->fd < 0) continue;
      if (!clock->answering && now >= clock->deadline) {
        // The library still owns the descriptor: shutting the socket down makes it see the end
        // of the stream and close the connection itself (NOTIFY_CLOSED frees the clock).
        shutdown(clock->fd, SHUT_RDWR);
        clock->closed = true;
        continue;
      }
      std::shared_ptr<Call> call = clock->call.lock();
      if (call == nullptr) continue;
      pollfd p{.fd = clock->fd, .events = POLLRDHUP, .revents = 0};
      if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
        hung_up.push_back(std::move(call));
      }
    }
    if (hung_up.empty()) continue;
    // Outside connections_mu_: resuming takes the library's locks, under which it may call
    // Connection().
    connections_mu_.Unlock();
    for (const std::shared_ptr<Call>& call : hung_up) {
      std::function<void()> gone;
      {
        absl::MutexLock call_lock(&call->mu_);
        // A connection the library is writing to notices a closed client itself.
        if (!call->suspended_) continue;
        gone = call->MarkGoneLocked();
        call->WakeLocked();
      }
      if (gone) gone();
    }
    connections_mu_.Lock();
  }
}

void HttpServer::Log(const char* format, va_list args) {
  absl::MutexLock lock(&log_mu_);
  if (started_ || !start_log_.empty()) return;  // the first line names the cause
  char line[512];
  std::vsnprintf(line, sizeof(line), format, args);
  start_log_ = std::string(absl::StripAsciiWhitespace(line));
}

}  // namespace catserve::http
