#ifndef CATSERVE_ENGINE_SAMPLING_SAMPLER_H_
#define CATSERVE_ENGINE_SAMPLING_SAMPLER_H_

#include <cstdint>
#include <string>
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

// Checks the ranges above; the message names the field and its allowed range, and `field`, when
// given, is set to that field's name ("temperature", "top_p", ...) on an error.
absl::Status ValidateSamplingParams(const SamplingParams& params, std::string* field = nullptr);

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

// The most alternatives a token carries (OpenAI's top_logprobs limit).
inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// What a draw produced for one sequence. Log-probabilities are natural logs under the model's
// raw distribution: the logits before penalty, temperature and cut-offs (so with a repetition
// penalty, greedy's token need not be the first alternative).
struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;           // of `token`, when logprobs were asked for
  std::vector<TokenLogprob> top;  // the most likely tokens asked for, most likely first
};

// The `n` most likely tokens of `logits` (ties to the lower id) with their log-probabilities,
// `log_sum_exp` being LogSumExp(logits). n in [0, kMaxTopLogprobs].
std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, int n, float log_sum_exp);

// log(sum over i of exp(logits[i])), never below the largest logit, with the vector exp where the
// CPU has it: a token's log-probability is its logit minus this.
float LogSumExp(absl::Span<const float> logits);

// Draws tokens on the host. A draw is the inverse CDF of u = DrawUniform(params.seed, draw)
// (draw.h) over the support in ascending token id, the order the device sampler walks too, so
// that both pick the same token from the same logits except where u lands within float rounding
// of a boundary; the most likely token stands in should rounding leave u past the last. A whole
// vocabulary is walked without a sort; a cut (top_k, top_p, min_p) sorts what it must
// (SamplingSupport). Holds scratch space only: one Sampler serves any number of sequences, one
// thread at a time.
class Sampler {
 public:
  // Draw number `draw` of the request's stream (0 for its first generated token), from `logits`
  // (modified in place by the penalty) given the sequence so far in `context`.
  int32_t Sample(absl::Span<float> logits, absl::Span<const int32_t> context,
                 const SamplingParams& params, uint64_t draw);

 private:
  std::vector<float> weights_;  // exp(logit / temperature - max) of a whole vocabulary
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_SAMPLING_SAMPLER_H_
