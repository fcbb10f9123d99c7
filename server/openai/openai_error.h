// OpenAI's error shape and HTTP statuses for catserve's absl::Status codes.
#ifndef CATSERVE_SERVER_OPENAI_OPENAI_ERROR_H_
#define CATSERVE_SERVER_OPENAI_OPENAI_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/http/http_server.h"

namespace catserve::server::openai {

// INVALID_ARGUMENT about the request field `param`.
absl::Status InvalidParam(absl::string_view param, absl::string_view message);
// The field a status is about ("" when it names none).
std::string ParamOf(const absl::Status& status);

// A status from the request rules shared with gRPC (RequestParser, scheduler::ValidateRequest) in
// this API's terms: the field it names (scheduler::FieldOf) becomes its param, spelled as this
// API spells it ("sampling.temperature" is "temperature", "text" and "token_ids" are "prompt"),
// in the message too.
absl::Status InOpenAiTerms(const absl::Status& status);

// An error as the OpenAI API answers it.
struct HttpError {
  int status = 500;
  std::string body;  // {"error": {"message", "type", "param", "code"}}
  http::Headers headers;
};

// INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429 with
// Retry-After when it passes with time (scheduler::IsRetryLater: the queue is full) else 413 (the
// request needs more KV memory than the pool has), UNAVAILABLE 503 (draining, shutting down),
// DEADLINE_EXCEEDED 408, anything else 500.
HttpError ToHttpError(const absl::Status& status);
// The error body for an HTTP `status` the server gives itself (404, 405, 413, 503).
std::string ErrorBody(int status, absl::string_view message);

// Answers `call` with `status` as an OpenAI error.
void ReplyError(http::Call& call, const absl::Status& status);

}  // namespace catserve::server::openai

#endif  // CATSERVE_SERVER_OPENAI_OPENAI_ERROR_H_
