#ifndef CATSERVE_TESTS_METRICS_HTTP_GET_H_
#define CATSERVE_TESTS_METRICS_HTTP_GET_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace catserve::metrics {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// Sends one HTTP/1.1 request with "Connection: close" to 127.0.0.1:`port` over a raw socket and
// reads the response until the server closes the connection.
absl::StatusOr<HttpResponse> HttpRequest(int port, absl::string_view method,
                                         absl::string_view path);

// Sends `raw` as it is to 127.0.0.1:`port`, half-closes the socket (unless `half_close` is
// false) and reads the response until the server closes the connection (at most `silence` of
// silence). DataLossError when no response arrived, e.g. the server dropped the connection.
absl::StatusOr<HttpResponse> HttpExchange(int port, absl::string_view raw, bool half_close = true,
                                          int silence_seconds = 5);

// POSTs `body` (JSON) to `path` with "Connection: close" and `extra_headers` (whole lines with
// CRLF), keeping the socket open for writing as real clients do; reads until the server closes.
absl::StatusOr<HttpResponse> HttpPostJson(int port, absl::string_view path, absl::string_view body,
                                          absl::string_view extra_headers = "",
                                          int silence_seconds = 30);

// A TCP connection to 127.0.0.1:`port`, or -1 with `error` set.
int Connect(int port, std::string* error);

// A request an operator's scanner, a misconfigured probe or an attacker might send, and the
// status the endpoint must answer it with.
struct HostileRequest {
  std::string name;
  std::string raw;
  int status;
};
// The battery: unknown paths, traversal, odd and unknown methods, oversized URLs and headers,
// malformed request lines and lengths.
std::vector<HostileRequest> HostileRequests();

// Opens `count` TCP connections to 127.0.0.1:`port` and leaves them idle or half-sent (the odd
// ones sent half a request line); they close when the result is destroyed.
class IdleConnections {
 public:
  IdleConnections(int port, int count);
  ~IdleConnections();
  IdleConnections(const IdleConnections&) = delete;
  IdleConnections& operator=(const IdleConnections&) = delete;
  int open() const { return static_cast<int>(fds_.size()); }

 private:
  std::vector<int> fds_;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_TESTS_METRICS_HTTP_GET_H_
