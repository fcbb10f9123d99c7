// OpenAiApi: the OpenAI-compatible HTTP API (docs/OPENAI_API.md) as routes of an http::HttpServer.
#ifndef CATSERVE_SERVER_OPENAI_OPENAI_API_H_
#define CATSERVE_SERVER_OPENAI_OPENAI_API_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "catserve/v1/generation.pb.h"
#include "server/http/http_server.h"
#include "server/openai/chat_template.h"
#include "server/openai/completion_call.h"
#include "server/request_parser.h"
#include "server/token_authenticator.h"

namespace catserve::server::openai {

// GET /v1/models, POST /v1/completions, POST /v1/chat/completions. Every request is checked as a
// gRPC call is: its bearer token (the same --auth_tokens_file), then RequestParser's rules and
// limits (the same ones, word for word), then the scheduler's admission (the same queue,
// priorities and pool). Errors are OpenAI's JSON error shape (openai_error.h).
class OpenAiApi {
 public:
  struct Config {
    CompletionCall::Shared shared;
    const RequestParser* parser;
    TokenAuthenticator* authenticator;  // null: no token needed
    v1::ModelInfo model_info;
    // A request's deadline: this long after it arrives; InfiniteDuration for none.
    absl::Duration request_timeout = absl::InfiniteDuration();
    // The model directory's chat template (chat_template.json), if it declares one.
    std::optional<ChatTemplate> chat_template;
    // The model directory carries a Jinja chat template only (not rendered: chat is refused).
    bool jinja_chat_template = false;
  };

  // Everything in `config` must outlive the HTTP server the routes are added to.
  explicit OpenAiApi(Config config);

  void AddRoutes(http::Routes& routes) const;
  // The largest body a request may have: room for the longest prompt the limits allow, as text
  // (JSON-escaped) or token ids.
  int64_t max_body_bytes() const;
  // Answers the HTTP layer's own refusals (404, 405, 413, 503) in OpenAI's error shape.
  static void AnswerError(http::Call& call, int status, absl::string_view message);

 private:
  // The token check; false when `call` was answered with 401.
  bool Authenticate(const http::Request& request, http::Call& call) const;
  void Models(const http::Request& request, std::shared_ptr<http::Call> call) const;
  void Completions(const http::Request& request, std::shared_ptr<http::Call> call) const;
  void ChatCompletions(const http::Request& request, std::shared_ptr<http::Call> call) const;
  void CountRejected(int chunk_size) const;
  // Validates `completion` as a gRPC request and submits it; answers `call` with any error.
  void Submit(absl::StatusOr<CompletionRequest> completion, absl::Time arrival,
              std::shared_ptr<http::Call> call) const;

  const Config config_;
  const std::string models_json_;
};

}  // namespace catserve::server::openai

#endif  // CATSERVE_SERVER_OPENAI_OPENAI_API_H_
