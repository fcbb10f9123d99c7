#include "engine/generate.h"

#include <algorithm>

#include "absl/status/status.h"

namespace catserve::engine {

absl::StatusOr<std::vector<int32_t>> GenerateAlone(Engine& engine, absl::Span<const int32_t> prompt,
                                                   int chunk_size, int max_new_tokens,
                                                   const SamplingParams& sampling,
                                                   absl::Span<const int32_t> stop_ids) {
  if (absl::Status s = ValidateSamplingParams(sampling); !s.ok()) return s;
  const int total = static_cast<int>(prompt.size()) + max_new_tokens;
  KvEntries worst = KvEntriesAfter(total, 1);  // chunk size 1 holds the most entries
  absl::StatusOr<KvPool> pool = engine.CreateKvPool((worst.compressed + 15) / 16 + 2, 16);
  if (!pool.ok()) return pool.status();
  SequenceState seq;
  seq.chunk_size = chunk_size;
  seq.tokens.assign(prompt.begin(), prompt.end());
  Sampler sampler(sampling);
  std::vector<float> logits(engine.config().vocab_size);
  std::vector<int32_t> out;
  int pending = static_cast<int>(prompt.size());
  while (static_cast<int>(out.size()) < max_new_tokens) {
    if (!ReservePages(*pool, seq, seq.cached + pending)) {
      return absl::InternalError("offline KV pool too small");
    }
    StepItem item{&seq, pending, true};
    if (absl::Status s = engine.Step({&item, 1}, *pool, absl::MakeSpan(logits)); !s.ok()) {
      pool->ReleaseAll(seq.pages);
      return s;
    }
    TrimPages(*pool, seq);
    const int32_t token = sampler.Sample(absl::MakeSpan(logits), seq.tokens);
    out.push_back(token);
    seq.tokens.push_back(token);
    pending = 1;
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) break;
  }
  pool->ReleaseAll(seq.pages);
  return out;
}

}  // namespace catserve::engine
