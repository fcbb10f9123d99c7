// GenerationService: catserve.v1.Generation over gRPC's callback API.
#ifndef CATSERVE_SERVER_GENERATION_SERVICE_H_
#define CATSERVE_SERVER_GENERATION_SERVICE_H_

#include "catserve/v1/generation.grpc.pb.h"
#include "server/generate_stream.h"
#include "server/request_parser.h"

namespace catserve::server {

// Generate validates the request (RequestParser), then hands it to a GenerateStream; Tokenize
// and GetModelInfo answer inline. No handler blocks. Thread-safe.
class GenerationService final : public v1::Generation::CallbackService {
 public:
  // Everything pointed to must outlive the gRPC server this service is registered on.
  GenerationService(const GenerateStream::Shared& shared, const RequestParser* parser,
                    v1::ModelInfo model_info);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  const GenerateStream::Shared shared_;
  const RequestParser* parser_;
  const v1::ModelInfo model_info_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_GENERATION_SERVICE_H_
