#include "engine/generate.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine {

absl::StatusOr<std::vector<int32_t>> GenerateAlone(Engine& engine, absl::Span<const int32_t> prompt,
                                                   int chunk_size, int max_new_tokens,
                                                   const SamplingParams& sampling,
                                                   absl::Span<const int32_t> stop_ids) {
  if (absl::Status s = ValidateSamplingParams(sampling); !s.ok()) return s;
  if (!engine.config().serves_chunk_size(chunk_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", chunk_size, " is not served by the model"));
  }
  // Every token but the last generated one enters the cache.
  const int cached = static_cast<int>(prompt.size()) + max_new_tokens - 1;
  constexpr int kPageEntries = 16;
  absl::StatusOr<KvPool> pool =
      engine.CreateKvPool(PeakPages(cached, chunk_size, kPageEntries), kPageEntries);
  if (!pool.ok()) return pool.status();
  SequenceState seq;
  seq.chunk_size = chunk_size;
  seq.tokens.assign(prompt.begin(), prompt.end());
  std::vector<int32_t> out;
  int pending = static_cast<int>(prompt.size());
  while (static_cast<int>(out.size()) < max_new_tokens) {
    if (!ReservePages(*pool, seq, seq.cached + pending)) {
      return absl::InternalError("offline KV pool too small");
    }
    const StepItem item{.seq = &seq,
                        .num_tokens = pending,
                        .want_logits = true,
                        .sampling = &sampling,
                        .draw = out.size()};
    SampledToken sampled;
    if (absl::Status s = engine.Step({&item, 1}, *pool, {&sampled, 1}); !s.ok()) {
      pool->ReleaseAll(seq.pages);
      return s;
    }
    TrimPages(*pool, seq);
    const int32_t token = sampled.token;
    out.push_back(token);
    seq.tokens.push_back(token);
    pending = 1;
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) break;
  }
  pool->ReleaseAll(seq.pages);
  return out;
}

}  // namespace catserve::engine
