#ifndef CATSERVE_ENGINE_CPU_HOST_STEP_SAMPLER_H_
#define CATSERVE_ENGINE_CPU_HOST_STEP_SAMPLER_H_

#include <memory>

#include "absl/types/span.h"
#include "engine/kernels/thread_pool.h"
#include "engine/sampling/sampler.h"
#include "engine/step/engine.h"

namespace catserve::engine {

// Draws a step's tokens on the host from its logits rows (row i for item i): what the CPU engine
// does after its forward. Each row touches only its own logits and its sequence's tokens, and a
// draw depends only on (seed, draw index) (draw.h), so rows run in any order on any thread and
// give what they give on one. One thread calls Sample at a time.
class HostStepSampler {
 public:
  // Rows are shared over `threads` host threads (<= 1: the calling thread alone) when a step has
  // enough of them to pay for waking the pool.
  explicit HostStepSampler(int threads);

  int threads() const { return pool_ == nullptr ? 1 : pool_->size(); }

  // Draws tokens[i] for every item with want_logits from logits[i * vocab ...] (modified in
  // place by the penalty), with its sampling settings, draw index and logprobs (validated by
  // ValidateStepSampling).
  void Sample(absl::Span<const StepItem> items, absl::Span<float> logits, int vocab,
              absl::Span<SampledToken> tokens);

 private:
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_CPU_HOST_STEP_SAMPLER_H_
