// CompletionRequest: the body of POST /v1/completions, read into catserve's own request.
#ifndef CATSERVE_SERVER_OPENAI_COMPLETION_REQUEST_H_
#define CATSERVE_SERVER_OPENAI_COMPLETION_REQUEST_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "catserve/v1/generation.pb.h"
#include "server/openai/chat_template.h"

namespace catserve::server::openai {

// What the OpenAI API asks beyond what catserve.v1.GenerateRequest carries.
struct CompletionRequest {
  // The same request as the gRPC API would receive it; RequestParser validates both alike.
  v1::GenerateRequest generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int logprobs = -1;           // -1: none; else alternatives per token, 0..20
  bool chat = false;           // /v1/chat/completions: answered in the chat shapes
};

// The deepest nesting of JSON arrays and objects a body may have; deeper is refused before it
// is parsed (a recursive parser's stack must not be the limit).
inline constexpr int kMaxJsonDepth = 32;

// Reads a /v1/completions body (a JSON object). Takes OpenAI's fields — model, prompt (a string,
// token ids, or a list holding one of either), max_tokens (default 16), temperature, top_p, seed,
// stop (a string or a list), logprobs (0..20), stream, stream_options.include_usage, n (1 only),
// echo (false only), best_of (1 only), suffix (empty only), presence_penalty and
// frequency_penalty (0 only), logit_bias (empty only), user (ignored) — and catserve's and vLLM's
// extras at the top level (where the openai client's `extra_body` puts them): chunk_size, tier,
// coarsest_chunk_size, top_k (-1 or 0 = off), min_p, repetition_penalty, ignore_eos,
// stop_token_ids, priority (vLLM's order: lower runs first; catserve.v1 runs higher first, so
// it is negated). Unknown fields are ignored, as OpenAI-compatible servers do. `model` must be
// `model_name` when set (NOT_FOUND otherwise). Every other error is INVALID_ARGUMENT naming the
// field (openai_error.h's ParamOf gives it) and what to change. Values are checked for type
// here and for range by RequestParser, whose errors name their field as catserve.v1 spells it
// (openai_error.h's InOpenAiTerms says it in this API's names).
absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body,
                                                         absl::string_view model_name);

// Reads a /v1/chat/completions body: `messages` rendered by `chat_template` into the prompt (its
// stop strings added to the request's), `max_completion_tokens` or `max_tokens` (default 256),
// `logprobs` (true/false) with `top_logprobs` (0..20), `tools`/`functions` refused, and every
// other field as ParseCompletionRequest.
absl::StatusOr<CompletionRequest> ParseChatRequest(absl::string_view body,
                                                   absl::string_view model_name,
                                                   const ChatTemplate& chat_template);

// The nesting depth of `json`'s arrays and objects (outside strings), stopping once it exceeds
// `limit`.
int JsonDepth(absl::string_view json, int limit);

}  // namespace catserve::server::openai

#endif  // CATSERVE_SERVER_OPENAI_COMPLETION_REQUEST_H_
