// UnhandledCallInterceptor: a status and a count for calls that end before their handler runs.
#ifndef CATSERVE_SERVER_UNHANDLED_CALL_INTERCEPTOR_H_
#define CATSERVE_SERVER_UNHANDLED_CALL_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/serving_metrics.h"

namespace catserve::server {

// gRPC's callback API never calls a handler whose request message did not parse (malformed
// protobuf, invalid UTF-8 in a string field) or never arrived (the client cancelled, or its
// deadline passed, before sending it): it ends the call itself with UNIMPLEMENTED and an empty
// message. For every call of catserve.v1.Generation this factory's interceptor catches that
// status on its way out and
//   - replaces it with INVALID_ARGUMENT saying which message could not be parsed, when the client
//     is still there and its deadline has not passed;
//   - counts a Generate call in catserve_requests_finished_total as "rejected",
//     "deadline_exceeded" or "cancelled", under the server's default chunk size (the request's
//     own is unknown).
// Calls gRPC drops before they are handed to the server at all (a deadline that passes while the
// call is still being matched to a method) reach no interceptor either; docs/METRICS.md says so.
class UnhandledCallInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server.
  UnhandledCallInterceptorFactory(metrics::ServingMetrics* metrics, int default_chunk_size)
      : metrics_(metrics), default_chunk_size_(default_chunk_size) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::ServingMetrics* const metrics_;
  const int default_chunk_size_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_UNHANDLED_CALL_INTERCEPTOR_H_
