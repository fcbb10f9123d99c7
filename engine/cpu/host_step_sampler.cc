#include "engine/cpu/host_step_sampler.h"

#include <chrono>
#include <vector>

namespace catserve::engine {

HostStepSampler::HostStepSampler(int threads) {
  if (threads > 1) {
    // It runs one loop per step, between the engine's: its workers sleep at once rather than
    // poll, leaving the cores to the engine's compute threads.
    pool_ = std::make_unique<ThreadPool>(threads, std::chrono::microseconds(0));
  }
}

void HostStepSampler::Sample(absl::Span<const StepItem> items, absl::Span<float> logits, int vocab,
                             absl::Span<SampledToken> tokens) {
  const auto sample = [&](int begin, int end) {
    Sampler sampler;
    for (int i = begin; i < end; ++i) {
      const StepItem& item = items[i];
      if (!item.want_logits) continue;
      absl::Span<float> row = logits.subspan(static_cast<size_t>(i) * vocab, vocab);
      SampledToken& out = tokens[i];
      out.top.clear();
      if (item.logprobs < 0) {
        out.token = sampler.Sample(row, item.seq->tokens, *item.sampling, item.draw);
        out.logprob = 0.0f;
        continue;
      }
      // Under the model's raw distribution: before the penalty changes the row (only the penalty
      // writes to it, so without one the row stays raw).
      const float lse = LogSumExp(row);
      out.top = TopLogprobs(row, item.logprobs, lse);
      if (item.sampling->repetition_penalty == 1.0f) {
        out.token = sampler.Sample(row, item.seq->tokens, *item.sampling, item.draw);
        out.logprob = row[out.token] - lse;
      } else {
        const std::vector<float> raw(row.begin(), row.end());
        out.token = sampler.Sample(row, item.seq->tokens, *item.sampling, item.draw);
        out.logprob = raw[out.token] - lse;
      }
    }
  };
  // Waking the pool costs tens of microseconds: worth it from about two greedy rows of a 32000
  // vocabulary per thread.
  constexpr size_t kLogitsWorthSharing = size_t{1} << 16;
  size_t wanted = 0;
  for (const StepItem& item : items) wanted += item.want_logits ? vocab : 0;
  const int n = static_cast<int>(items.size());
  if (pool_ != nullptr && wanted >= kLogitsWorthSharing) {
    pool_->ParallelFor(n, sample);
  } else {
    sample(0, n);
  }
}

}  // namespace catserve::engine
