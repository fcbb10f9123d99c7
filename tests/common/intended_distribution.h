#ifndef CATSERVE_TESTS_COMMON_INTENDED_DISTRIBUTION_H_
#define CATSERVE_TESTS_COMMON_INTENDED_DISTRIBUTION_H_

// What a sampler should draw from, computed from the definitions in engine/sampler.h, for the
// chi-square tests of the CPU and the CUDA samplers (tests/common/chi_square.h).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "engine/sampling/sampler.h"

namespace catserve::testing {

// 24 fixed logits, spread over a few units.
inline std::vector<float> FixedLogits() {
  std::vector<float> l;
  for (int i = 0; i < 24; ++i) l.push_back(static_cast<float>(std::sin(1.7 * i) * 2.5 + 0.1 * i));
  return l;
}

// Tokens "already generated", for the repetition penalty.
inline std::vector<int32_t> SeenTokens() { return {0, 3, 5, 11}; }

// Every filter alone and all of them together, each with its own seed.
inline std::vector<engine::SamplingParams> SettingsUnderTest() {
  return {
      {.temperature = 1.0f, .seed = 1},
      {.temperature = 0.7f, .seed = 2},
      {.temperature = 1.3f, .top_k = 7, .seed = 3},
      {.temperature = 1.0f, .top_p = 0.8f, .seed = 4},
      {.temperature = 1.0f, .min_p = 0.1f, .seed = 5},
      {.temperature = 0.9f,
       .top_k = 12,
       .top_p = 0.9f,
       .min_p = 0.02f,
       .repetition_penalty = 1.3f,
       .seed = 6},
  };
}

// The distribution of the definitions: penalty on `seen`, softmax at temperature T, then the
// most likely tokens that survive top-k, top-p (the smallest prefix whose share of the top k's
// mass reaches top_p) and min-p (relative to the best), renormalised.
inline std::vector<double> Intended(std::vector<float> logits, const engine::SamplingParams& p,
                                    const std::vector<int32_t>& seen) {
  for (int32_t t : seen) {
    logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
  }
  const int V = logits.size();
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> prob(V);
  double sum = 0;
  for (int i = 0; i < V; ++i) {
    sum += prob[i] = std::exp((logits[i] - logits[order[0]]) / p.temperature);
  }
  for (double& x : prob) x /= sum;
  int keep = p.top_k > 0 ? std::min(p.top_k, V) : V;
  double top_k_mass = 0;  // top-p counts in the distribution renormalised over the top k
  for (int n = 0; n < keep; ++n) top_k_mass += prob[order[n]];
  double mass = 0;
  for (int n = 0; n < keep; ++n) {
    mass += prob[order[n]];
    if (mass >= p.top_p * top_k_mass) keep = n + 1;
  }
  std::vector<double> out(V, 0.0);
  const double best = prob[order[0]];
  double total = 0;
  for (int n = 0; n < keep; ++n) {
    if (prob[order[n]] < p.min_p * best) break;
    total += out[order[n]] = prob[order[n]];
  }
  for (double& x : out) x /= total;
  return out;
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_INTENDED_DISTRIBUTION_H_
