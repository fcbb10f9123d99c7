#include "server/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/metrics/text_format.h"

namespace catserve::metrics {
namespace {

constexpr char kTextPlain[] = "text/plain; charset=utf-8";

// Turns "HOST:PORT" into civetweb's listening_ports syntax, or explains what is wrong.
absl::StatusOr<std::string> ListeningPort(absl::string_view address) {
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
  if (host.empty()) return absl::StrCat(port);
  in_addr ipv4{};
  if (inet_pton(AF_INET, std::string(host).c_str(), &ipv4) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\": host \"",
                                                   host, "\" is not an IPv4 address"));
  }
  return absl::StrCat(host, ":", port);
}

// Writes a complete response; the body is left out for HEAD. Returns the status for civetweb's
// access log.
int Respond(mg_connection* connection, int status, absl::string_view content_type,
            absl::string_view body) {
  const mg_request_info* request = mg_get_request_info(connection);
  const bool head = request != nullptr && std::strcmp(request->request_method, "HEAD") == 0;
  const std::string header = absl::StrFormat(
      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCache-Control: no-store\r\n"
      "Connection: close\r\n\r\n",
      status, mg_get_response_code_text(connection, status), content_type, body.size());
  mg_write(connection, header.data(), header.size());
  if (!head) mg_write(connection, body.data(), body.size());
  return status;
}

// Answers what only GET and HEAD on the exact `path` may reach; returns false once it has sent
// a 404 or 405 itself.
bool AcceptRequest(mg_connection* connection, const char* path, int* status) {
  const mg_request_info* request = mg_get_request_info(connection);
  if (request == nullptr || std::strcmp(request->local_uri, path) != 0) {
    *status = Respond(connection, 404, kTextPlain, "not found\n");
    return false;
  }
  if (std::strcmp(request->request_method, "GET") != 0 &&
      std::strcmp(request->request_method, "HEAD") != 0) {
    *status = Respond(connection, 405, kTextPlain, "only GET and HEAD are allowed\n");
    return false;
  }
  return true;
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(const Registry* registry, std::function<bool()> ready)
    : registry_(registry), ready_(std::move(ready)) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    absl::string_view address, const Registry* registry, std::function<bool()> ready) {
  absl::StatusOr<std::string> listening_port = ListeningPort(address);
  if (!listening_port.ok()) return listening_port.status();

  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(registry, std::move(ready)));
  mg_init_library(0);
  const char* options[] = {
      "listening_ports", listening_port->c_str(), "num_threads", "4",    "request_timeout_ms",
      "10000",           "enable_keep_alive",     "no",          nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = &MetricsHttpServer::LogMessage;
  mg_init_data init{&callbacks, server.get(), options};
  char error_text[256] = {};
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof(error_text)};
  server->context_ = mg_start2(&init, &error);
  if (server->context_ == nullptr) {
    mg_exit_library();
    absl::MutexLock lock(&server->log_mu_);
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ",
                     server->start_log_.empty() ? error_text : server->start_log_));
  }
  {
    absl::MutexLock lock(&server->log_mu_);
    server->started_ = true;
  }
  mg_server_port ports[1] = {};
  if (mg_get_server_ports(server->context_, 1, ports) != 1) {
    return absl::InternalError(absl::StrCat("civetweb reports no bound port for ", address));
  }
  server->port_ = ports[0].port;
  mg_set_request_handler(server->context_, "/metrics", &MetricsHttpServer::HandleMetrics,
                         server.get());
  mg_set_request_handler(server->context_, "/healthz", &MetricsHttpServer::HandleHealthz,
                         server.get());
  mg_set_request_handler(server->context_, "/readyz", &MetricsHttpServer::HandleReadyz,
                         server.get());
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (context_ != nullptr) {
    mg_stop(context_);
    mg_exit_library();
  }
}

int MetricsHttpServer::HandleMetrics(mg_connection* connection, void* server) {
  int status = 0;
  if (!AcceptRequest(connection, "/metrics", &status)) return status;
  const std::string body = static_cast<MetricsHttpServer*>(server)->registry_->Scrape();
  return Respond(connection, 200, kTextFormatContentType, body);
}

int MetricsHttpServer::HandleHealthz(mg_connection* connection, void* server) {
  int status = 0;
  if (!AcceptRequest(connection, "/healthz", &status)) return status;
  return Respond(connection, 200, kTextPlain, "ok\n");
}

int MetricsHttpServer::HandleReadyz(mg_connection* connection, void* server) {
  int status = 0;
  if (!AcceptRequest(connection, "/readyz", &status)) return status;
  const std::function<bool()>& ready = static_cast<MetricsHttpServer*>(server)->ready_;
  if (ready && !ready()) return Respond(connection, 503, kTextPlain, "not ready\n");
  return Respond(connection, 200, kTextPlain, "ready\n");
}

int MetricsHttpServer::LogMessage(const mg_connection* connection, const char* message) {
  const mg_context* context = connection != nullptr ? mg_get_context(connection) : nullptr;
  auto* server =
      context != nullptr ? static_cast<MetricsHttpServer*>(mg_get_user_data(context)) : nullptr;
  if (server == nullptr) {
    ABSL_RAW_LOG(WARNING, "civetweb: %s", message);
    return 1;
  }
  absl::MutexLock lock(&server->log_mu_);
  if (server->started_) {
    ABSL_RAW_LOG(WARNING, "metrics http: %s", message);
  } else if (server->start_log_.empty()) {
    // The first line is the cause; later ones ("Failed to setup server ports") only repeat it.
    server->start_log_ = message;
  }
  return 1;
}

}  // namespace catserve::metrics
