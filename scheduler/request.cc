#include "scheduler/request.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace catserve::scheduler {
namespace {

absl::Status CheckTokenIds(absl::Span<const int32_t> ids, int vocab_size, absl::string_view field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return InvalidField(field, absl::StrCat(field, "[", i, "] = ", ids[i],
                                              " is not a token id of this model (the "
                                              "vocabulary is [0, ",
                                              vocab_size, "))"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const engine::ModelConfig& c, const GenerationRequest& r) {
  if (r.prompt.empty()) {
    return InvalidField("prompt", "prompt is empty: send text or at least one token id");
  }
  if (absl::Status s = CheckTokenIds(r.prompt, c.vocab_size, "prompt"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckTokenIds(r.stop_token_ids, c.vocab_size, "stop_token_ids"); !s.ok()) {
    return s;
  }
  if (r.max_new_tokens < 1) {
    return InvalidField("max_tokens",
                        absl::StrCat("max_tokens must be >= 1 (got ", r.max_new_tokens, ")"));
  }
  if (!c.serves_chunk_size(r.chunk_size)) {
    return InvalidField("chunk_size",
                        absl::StrCat("chunk_size ", r.chunk_size,
                                     " is not served by this model; served chunk sizes: ",
                                     absl::StrJoin(c.chunk_sizes(), ", ")));
  }
  if (r.coarsest_chunk_size != 0 &&
      (!c.serves_chunk_size(r.coarsest_chunk_size) || r.coarsest_chunk_size < r.chunk_size)) {
    return InvalidField("coarsest_chunk_size",
                        absl::StrCat("coarsest_chunk_size ", r.coarsest_chunk_size,
                                     " must be a served chunk size >= the chunk size ",
                                     r.chunk_size, ", or 0 (none coarser); served chunk sizes: ",
                                     absl::StrJoin(c.chunk_sizes(), ", ")));
  }
  const int64_t prompt_tokens = static_cast<int64_t>(r.prompt.size());
  if (prompt_tokens + r.max_new_tokens > c.max_position_embeddings) {
    return InvalidField(
        "max_tokens",
        absl::StrCat("the prompt (", prompt_tokens, " tokens) + max_tokens (", r.max_new_tokens,
                     ") exceeds the model's context of ", c.max_position_embeddings,
                     " tokens; lower max_tokens to at most ",
                     std::max<int64_t>(c.max_position_embeddings - prompt_tokens, 0),
                     " or shorten the prompt"));
  }
  if (r.top_logprobs < 0 || r.top_logprobs > engine::kMaxTopLogprobs) {
    return InvalidField("top_logprobs",
                        absl::StrCat("top_logprobs must be in [0, ", engine::kMaxTopLogprobs,
                                     "], got ", r.top_logprobs));
  }
  std::string field;
  if (absl::Status s = engine::ValidateSamplingParams(r.sampling, &field); !s.ok()) {
    return InvalidField(absl::StrCat("sampling.", field), absl::StrCat("sampling.", s.message()));
  }
  return absl::OkStatus();
}

namespace {
constexpr char kRetryLaterPayload[] = "type.catserve.dev/retry-later";
constexpr char kFieldPayload[] = "type.catserve.dev/field";
}  // namespace

absl::Status InvalidField(absl::string_view field, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

std::string FieldOf(const absl::Status& status) {
  absl::optional<absl::Cord> field = status.GetPayload(kFieldPayload);
  return field.has_value() ? std::string(*field) : std::string();
}

absl::Status RetryLaterError(absl::string_view message) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kRetryLaterPayload, absl::Cord("1"));
  return status;
}

bool IsRetryLater(const absl::Status& status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         status.GetPayload(kRetryLaterPayload).has_value();
}

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadlineExceeded:
      return "deadline_exceeded";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

}  // namespace catserve::scheduler
