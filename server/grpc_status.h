// Conversion of absl::Status to grpc::Status: the two share their code numbering.
#ifndef CATSERVE_SERVER_GRPC_STATUS_H_
#define CATSERVE_SERVER_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace catserve::server {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_GRPC_STATUS_H_
