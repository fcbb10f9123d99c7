#ifndef CATSERVE_ENGINE_SAMPLING_SAMPLER_H_
#define CATSERVE_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace catserve::engine {

// Per-request sampling settings. temperature 0 means greedy (argmax, ties to the lowest id).
struct SamplingParams {
  float temperature = 1.0f;
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // in (0, 1]; 1: off
  float min_p = 0.0f;               // in [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  uint64_t seed = 0;
};

// Checks the ranges above; the message names the field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Applies the repetition penalty (CTRL style: a positive logit of a token seen in `context` is
// divided by the penalty, a negative one multiplied) in place.
void ApplyRepetitionPenalty(absl::Span<float> logits, absl::Span<const int32_t> context,
                            float penalty);

// The candidate tokens and their probabilities after temperature, top-k, top-p and min-p, in
// descending probability (ties by ascending id), renormalised to sum to 1.
struct Candidate {
  int32_t token;
  float prob;
};
std::vector<Candidate> SamplingSupport(absl::Span<const float> logits,
                                       const SamplingParams& params);

// log(sum over i of exp(logits[i])), never below the largest logit, with the vector exp where the
// CPU has it: a token's log-probability is its logit minus this.
float LogSumExp(absl::Span<const float> logits);

// Draws tokens for one sequence. Same seed and same logits give the same tokens on any machine:
// the generator is std::mt19937_64, whose output the C++ standard fixes. The draw walks the
// support in its order (most likely first); it sorts nothing when the draw, top_p or min_p keeps
// the most likely token (a peaked row, mostly), and the whole vocabulary only when a cut-off or
// the draw falls past its 64 most likely tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  // Samples the next token from `logits` (modified in place by the penalty) given the sequence
  // so far in `context`.
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> context);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> weights_;      // exp(logit / temperature - max) of a whole vocabulary
  std::vector<Candidate> scratch_;  // the candidates of a draw over the whole vocabulary
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_SAMPLING_SAMPLER_H_
