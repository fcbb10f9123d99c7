// GenerationService: catserve.v1.Generation over gRPC's callback API.
#ifndef CATSERVE_SERVER_GENERATION_SERVICE_H_
#define CATSERVE_SERVER_GENERATION_SERVICE_H_

#include "catserve/v1/generation.grpc.pb.h"
#include "server/generate_stream.h"
#include "server/request_parser.h"
#include "server/token_authenticator.h"

namespace catserve::server {

// Generate validates the request (RequestParser), then hands it to a GenerateStream; Tokenize
// and GetModelInfo answer inline. With an authenticator, every method first checks the call's
// bearer token (UNAUTHENTICATED without a valid one). No handler blocks. Thread-safe.
class GenerationService final : public v1::Generation::CallbackService {
 public:
  // Everything pointed to must outlive the gRPC server this service is registered on;
  // `authenticator` may be null (no token needed).
  GenerationService(const GenerateStream::Shared& shared, const RequestParser* parser,
                    TokenAuthenticator* authenticator, v1::ModelInfo model_info);

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
  // OK, or UNAUTHENTICATED when an authenticator is set and the call has no valid token.
  grpc::Status Authenticate(const grpc::CallbackServerContext& context) const;

  const RequestParser* parser_;
  TokenAuthenticator* const authenticator_;
  const v1::ModelInfo model_info_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_GENERATION_SERVICE_H_
