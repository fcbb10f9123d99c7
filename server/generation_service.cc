#include "server/generation_service.h"

#include <chrono>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/grpc_status.h"
#include "server/utf8.h"

namespace catserve::server {
namespace {

// gRPC reports "no deadline" as a time point centuries away.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 100)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace

GenerationService::GenerationService(const GenerateStream::Shared& shared,
                                     const RequestParser* parser, TokenAuthenticator* authenticator,
                                     v1::ModelInfo model_info)
    : shared_(shared),
      parser_(parser),
      authenticator_(authenticator),
      model_info_(std::move(model_info)) {}

grpc::Status GenerationService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (authenticator_ == nullptr) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  const absl::string_view header = it == metadata.end()
                                       ? absl::string_view()
                                       : absl::string_view(it->second.data(), it->second.size());
  return ToGrpcStatus(authenticator_->Check(header));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const absl::Time arrival = absl::Now();
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) {
    shared_.metrics->CountEndedUnstreamed(metrics::Transport::kGrpc, parser_->default_chunk_size(),
                                          metrics::RequestOutcome::kRejected);
    return GenerateStream::Reject(std::move(auth));
  }
  absl::StatusOr<ParsedGeneration> parsed =
      parser_->Parse(*request, DeadlineOf(*context), absl::Uniform<uint64_t>(absl::BitGen()));
  if (!parsed.ok()) {
    // Counted under the chunk size asked for, or the default one when that is what is wrong.
    absl::StatusOr<int> chunk_size = parser_->ResolveChunkSize(*request);
    const bool served = chunk_size.ok() && parser_->serves_chunk_size(*chunk_size);
    shared_.metrics->CountEndedUnstreamed(metrics::Transport::kGrpc,
                                          served ? *chunk_size : parser_->default_chunk_size(),
                                          metrics::RequestOutcome::kRejected);
    return GenerateStream::Reject(ToGrpcStatus(parsed.status()));
  }
  return GenerateStream::Start(context, shared_, *std::move(parsed), arrival);
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) {
    reactor->Finish(std::move(auth));
    return reactor;
  }
  if (static_cast<int64_t>(request->text().size()) > parser_->limits().max_prompt_bytes) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("the text has ", request->text().size(),
                     " bytes, more than this server reads (", parser_->limits().max_prompt_bytes,
                     "; --max_prompt_bytes); shorten it")));
    return reactor;
  }
  absl::StatusOr<std::vector<int32_t>> ids = shared_.tokenizer->Encode(request->text());
  if (!ids.ok()) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(ids.status().message())));
    return reactor;
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    absl::StatusOr<std::string> piece = shared_.tokenizer->Decode({&id, 1});
    response->add_pieces(piece.ok() ? CoerceToUtf8(*piece) : std::string());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) {
    reactor->Finish(std::move(auth));
    return reactor;
  }
  *response = model_info_;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace catserve::server
