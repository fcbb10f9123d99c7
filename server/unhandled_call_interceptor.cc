#include "server/unhandled_call_interceptor.h"

#include <chrono>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/server_context.h"

namespace catserve::server {
namespace {

constexpr char kServicePrefix[] = "/catserve.v1.Generation/";
constexpr char kGenerateMethod[] = "/catserve.v1.Generation/Generate";

class UnhandledCallInterceptor : public grpc::experimental::Interceptor {
 public:
  UnhandledCallInterceptor(grpc::experimental::ServerRpcInfo* info,
                           metrics::ServingMetrics* metrics, int default_chunk_size)
      : info_(info), metrics_(metrics), default_chunk_size_(default_chunk_size) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      // Our handlers never end a call with UNIMPLEMENTED; gRPC does, with no message, exactly
      // when it could not hand the request to the handler.
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        unhandled_ = true;
        const std::string method(info_->method());
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("the request message of ", method.substr(1),
                         " could not be parsed: it is not a valid protobuf message of the "
                         "method's request type, or a string field holds invalid UTF-8")));
      }
    }
    // Counted when the call has closed: only then does the context know whether the client
    // cancelled it (a call cancelled before its message arrived is unhandled too, and reading
    // IsCancelled() as the status goes out counted some of those as rejected).
    if (unhandled_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_CLOSE)) {
      Count();
    }
    methods->Proceed();
  }

 private:
  void Count() {
    const grpc::ServerContextBase* context = info_->server_context();
    metrics::RequestOutcome outcome = metrics::RequestOutcome::kRejected;
    if (context->deadline() <= std::chrono::system_clock::now()) {
      outcome = metrics::RequestOutcome::kDeadlineExceeded;
    } else if (context->IsCancelled()) {
      outcome = metrics::RequestOutcome::kCancelled;
    }
    if (absl::string_view(info_->method()) == kGenerateMethod) {
      metrics_->CountEndedUnstreamed(metrics::Transport::kGrpc, default_chunk_size_, outcome);
    }
  }

  grpc::experimental::ServerRpcInfo* const info_;
  metrics::ServingMetrics* const metrics_;
  const int default_chunk_size_;
  bool unhandled_ = false;  // gRPC ended the call before our handler saw it
};

}  // namespace

grpc::experimental::Interceptor* UnhandledCallInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  if (!absl::StartsWith(info->method(), kServicePrefix)) return nullptr;
  return new UnhandledCallInterceptor(info, metrics_, default_chunk_size_);
}

}  // namespace catserve::server
