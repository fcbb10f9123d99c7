// The CPU sampler draws from the distribution its settings define, by a chi-square test on fixed
// logits (tests/common/chi_square.h): plain softmax, temperature, top-k, top-p, min-p and the
// repetition penalty, each against probabilities computed here from the definitions. The same
// test rejects draws from a slightly different distribution, so it can fail. The CUDA sampler is
// held to the same test in tests/cuda.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/sampler.h"
#include "gtest/gtest.h"
#include "tests/common/chi_square.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::DrawnFrom;

constexpr int kDraws = 40000;

// 24 fixed logits, spread over a few units.
std::vector<float> FixedLogits() {
  std::vector<float> l;
  for (int i = 0; i < 24; ++i) l.push_back(static_cast<float>(std::sin(1.7 * i) * 2.5 + 0.1 * i));
  return l;
}

// The distribution of the definitions: penalty on `seen`, softmax at temperature T, then the
// smallest set of the most likely tokens (top-k, top-p by prefix mass, min-p relative to the
// best), renormalised.
std::vector<double> Intended(std::vector<float> logits, const SamplingParams& p,
                             const std::vector<int32_t>& seen) {
  for (int32_t t : seen)
    logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
  const int V = logits.size();
  std::vector<int> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> prob(V);
  double sum = 0;
  for (int i = 0; i < V; ++i)
    sum += prob[i] = std::exp((logits[i] - logits[order[0]]) / p.temperature);
  for (double& x : prob) x /= sum;
  int keep = p.top_k > 0 ? std::min(p.top_k, V) : V;
  double mass = 0;
  for (int n = 0; n < keep; ++n) {
    mass += prob[order[n]];
    if (mass >= p.top_p) keep = n + 1;
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

std::vector<int> Draw(const SamplingParams& p, const std::vector<int32_t>& seen) {
  Sampler s(p);
  std::vector<int> counts(FixedLogits().size());
  for (int i = 0; i < kDraws; ++i) {
    std::vector<float> l = FixedLogits();
    ++counts[s.Sample(absl::MakeSpan(l), seen)];
  }
  return counts;
}

TEST(SamplerDistributionTest, DrawsFromTheIntendedDistribution) {
  const std::vector<int32_t> seen = {0, 3, 5, 11};
  const std::vector<SamplingParams> settings = {
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
  for (const SamplingParams& p : settings) {
    EXPECT_TRUE(DrawnFrom(Draw(p, seen), Intended(FixedLogits(), p, seen)))
        << "temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p
        << " min_p " << p.min_p << " penalty " << p.repetition_penalty;
  }
}

TEST(SamplerDistributionTest, RejectsDrawsFromANearbyDistribution) {
  const SamplingParams p{.temperature = 1.0f, .seed = 7};
  const std::vector<int> counts = Draw(p, {});
  SamplingParams other = p;
  other.temperature = 1.1f;
  EXPECT_FALSE(DrawnFrom(counts, Intended(FixedLogits(), other, {})));
  other = p;
  other.top_k = 20;  // drops four unlikely tokens that were drawn
  EXPECT_FALSE(DrawnFrom(counts, Intended(FixedLogits(), other, {})));
  other = p;
  other.repetition_penalty = 1.2f;  // a penalty on the likeliest token the sampler did not apply
  const std::vector<float> logits = FixedLogits();
  const int32_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_FALSE(DrawnFrom(counts, Intended(logits, other, {best})));
}

}  // namespace
}  // namespace catserve::engine
