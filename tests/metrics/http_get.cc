#include "tests/metrics/http_get.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace catserve::metrics {

// A TCP connection to 127.0.0.1:`port`, or -1 with `error` set.
int Connect(int port, std::string* error) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    *error = absl::StrCat("socket: ", std::strerror(errno));
    return -1;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    *error = absl::StrCat("connect: ", std::strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

absl::StatusOr<HttpResponse> HttpRequest(int port, absl::string_view method,
                                         absl::string_view path) {
  return HttpExchange(port, absl::StrCat(method, " ", path,
                                         " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                         "Connection: close\r\n\r\n"));
}

absl::StatusOr<HttpResponse> HttpPostJson(int port, absl::string_view path, absl::string_view body,
                                          absl::string_view extra_headers, int silence_seconds) {
  return HttpExchange(port,
                      absl::StrCat("POST ", path,
                                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                   "Content-Type: application/json\r\nContent-Length: ",
                                   body.size(), "\r\n", extra_headers, "\r\n", body),
                      /*half_close=*/false, silence_seconds);
}

absl::StatusOr<HttpResponse> HttpExchange(int port, absl::string_view raw_request, bool half_close,
                                          int silence_seconds) {
  std::string error;
  const int fd = Connect(port, &error);
  if (fd < 0) return absl::UnavailableError(error);
  const timeval timeout{.tv_sec = silence_seconds, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  // A server may answer and close before reading everything (an oversized request): a short
  // send is not an error, the response decides.
  size_t sent = 0;
  while (sent < raw_request.size()) {
    const ssize_t n = send(fd, raw_request.data() + sent, raw_request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  if (half_close) shutdown(fd, SHUT_WR);
  std::string raw;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) raw.append(buffer, n);
  close(fd);

  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError(absl::StrCat("no end of headers in: ", raw));
  }
  HttpResponse response;
  response.body = raw.substr(header_end + 4);
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(raw).substr(0, header_end), "\r\n");
  std::vector<absl::string_view> status_line = absl::StrSplit(lines[0], ' ');
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  return response;
}

std::vector<HostileRequest> HostileRequests() {
  const std::string host = "Host: 127.0.0.1\r\n";
  auto get = [&](absl::string_view path) {
    return absl::StrCat("GET ", path, " HTTP/1.1\r\n", host, "\r\n");
  };
  std::string many_headers;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&many_headers, "X-H", i, ": v\r\n");
  return {
      {"root", get("/"), 404},
      {"favicon", get("/favicon.ico"), 404},
      {"traversal", get("/metrics/../../../etc/passwd"), 404},
      {"double slash", get("//etc/passwd"), 404},
      {"encoded traversal", get("/metrics/%2e%2e/%2e%2e/etc/passwd"), 404},
      {"query", get("/metrics?x=1"), 200},
      {"TRACE", absl::StrCat("TRACE / HTTP/1.1\r\n", host, "\r\n"), 405},
      {"FOO", absl::StrCat("FOO /metrics HTTP/1.1\r\n", host, "\r\n"), 405},
      {"DELETE", absl::StrCat("DELETE /healthz HTTP/1.1\r\n", host, "\r\n"), 405},
      {"POST with body",
       absl::StrCat("POST /metrics HTTP/1.1\r\n", host, "Content-Length: 100000\r\n\r\n",
                    std::string(100000, 'x')),
       405},
      {"64 KB header",
       absl::StrCat("GET /metrics HTTP/1.1\r\n", host, "X-Big: ", std::string(64 * 1024, 'a'),
                    "\r\n\r\n"),
       431},
      {"2000 headers", absl::StrCat("GET /metrics HTTP/1.1\r\n", host, many_headers, "\r\n"), 431},
      {"100 KB URL", get(absl::StrCat("/", std::string(100 * 1024, 'a'))), 414},
      {"garbage request line", "\x01\x02\xff garbage\r\n\r\n", 400},
      {"negative Content-Length",
       absl::StrCat("GET /metrics HTTP/1.1\r\n", host, "Content-Length: -1\r\n\r\n"), 400},
      {"no Host on HTTP/1.1", "GET /healthz HTTP/1.1\r\n\r\n", 200},
      {"unknown HTTP version", absl::StrCat("GET /metrics HTTP/9.9\r\n", host, "\r\n"), 505},
  };
}

IdleConnections::IdleConnections(int port, int count) {
  for (int i = 0; i < count; ++i) {
    std::string error;
    const int fd = Connect(port, &error);
    if (fd < 0) break;
    if (i % 2 == 1) send(fd, "GET /metr", 9, MSG_NOSIGNAL);
    fds_.push_back(fd);
  }
}

IdleConnections::~IdleConnections() {
  for (int fd : fds_) close(fd);
}

}  // namespace catserve::metrics
