#ifndef CATSERVE_TESTS_METRICS_HTTP_GET_H_
#define CATSERVE_TESTS_METRICS_HTTP_GET_H_

#include <map>
#include <string>

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

}  // namespace catserve::metrics

#endif  // CATSERVE_TESTS_METRICS_HTTP_GET_H_
