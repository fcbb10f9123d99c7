#ifndef CATSERVE_SCHEDULER_REQUEST_H_
#define CATSERVE_SCHEDULER_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/model/config.h"
#include "engine/sampling/sampler.h"

namespace catserve::scheduler {

// One generation as the scheduler sees it: token ids in, token ids out. Text, tiers and stop
// strings are the server's business.
struct GenerationRequest {
  std::vector<int32_t> prompt;  // non-empty, every id inside the vocabulary
  int max_new_tokens = 16;      // >= 1
  engine::SamplingParams sampling;
  // Generation finishes (reason kStop) right after emitting one of these ids. The model's EOS
  // id is added by the scheduler unless ignore_eos.
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int chunk_size = 0;  // must be served by the model
  // The coarsest chunk size the scheduler may switch the request to under memory pressure (a
  // served size >= chunk_size); 0 = chunk_size: never coarser than asked.
  int coarsest_chunk_size = 0;
  int priority = 0;  // higher is admitted first; FIFO within a priority
  absl::Time deadline = absl::InfiniteFuture();
  bool want_logprobs = false;  // each token's log-probability
  int top_logprobs = 0;  // and its this many most likely alternatives (0..20; implies logprobs)
};

// The one statement of what a request may ask of this model, whichever transport it came by:
// a non-empty prompt of token ids inside the vocabulary, stop token ids inside it too,
// max_tokens >= 1, a served chunk_size, a coarsest_chunk_size that is 0 or a served size >= it,
// prompt + max_tokens within the model's context, and sampling values in range. INVALID_ARGUMENT
// whose message names the field (as the public APIs spell it) and what to change. The transports'
// parsers call it before answering a request; Scheduler::Submit calls it for callers that come
// to the scheduler directly. Deeper layers (the engine's ValidateStep) only guard their own
// preconditions.
absl::Status ValidateRequest(const engine::ModelConfig& config, const GenerationRequest& request);

// INVALID_ARGUMENT about the request field `field`, as catserve.v1 spells it ("max_tokens",
// "sampling.temperature", "prompt", "stop", ...): named in the message and, for a transport that
// spells its fields otherwise, in a payload FieldOf reads. Every request rule names its field so.
absl::Status InvalidField(absl::string_view field, absl::string_view message);
// The field an InvalidField status is about; empty for any other status.
std::string FieldOf(const absl::Status& status);

// RESOURCE_EXHAUSTED that passes with time (the queue is full), as opposed to a request that can
// never fit this server's pool. Transports tell clients to retry the first (HTTP 429 with
// Retry-After).
absl::Status RetryLaterError(absl::string_view message);
bool IsRetryLater(const absl::Status& status);

enum class FinishReason { kStop, kLength, kCancelled, kDeadlineExceeded, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "cancelled", ...

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0.0f;  // log-probability under the model's raw distribution (if asked for)
  std::vector<engine::TokenLogprob> top;  // the top_logprobs most likely, most likely first
};

struct FinishInfo {
  FinishReason reason = FinishReason::kStop;
  absl::Status error;  // set when reason is kError
  int prompt_tokens = 0;
  int generated_tokens = 0;
  int chunk_size = 0;      // the chunk size it finished with
  bool degraded = false;   // it ran at a coarser chunk size than asked (admitted or continued)
  bool preempted = false;  // its pages were taken back and its cache recomputed at least once
  int cached_prompt_tokens = 0;  // prompt tokens taken from the prefix cache, not computed
  // Compressed-KV bytes the sequence held when it finished (before they were freed).
  size_t kv_bytes_at_end = 0;
};

// Receives one request's results. Called on the scheduler's delivery thread, in order: OnAdmitted
// once (unless finished while queued), OnToken per generated token, then OnFinish exactly once; no
// call follows OnFinish. Implementations must not block (queue the work and return).
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnAdmitted() {}
  virtual void OnToken(const GeneratedToken& token) = 0;
  virtual void OnFinish(const FinishInfo& info) = 0;
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_REQUEST_H_
