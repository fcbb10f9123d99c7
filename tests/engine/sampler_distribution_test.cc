// The CPU sampler draws from the distribution its settings define, by a chi-square test on fixed
// logits (tests/common/chi_square.h): plain softmax, temperature, top-k, top-p, min-p and the
// repetition penalty, each against probabilities computed here from the definitions. The same
// test rejects draws from a slightly different distribution, so it can fail. The CUDA sampler is
// held to the same test in tests/cuda.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/common/chi_square.h"
#include "tests/common/intended_distribution.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::DrawnFrom;
using ::catserve::testing::FixedLogits;
using ::catserve::testing::Intended;
using ::catserve::testing::SeenTokens;
using ::catserve::testing::SettingsUnderTest;

constexpr int kDraws = 40000;

std::vector<int> Draw(const SamplingParams& p, const std::vector<int32_t>& seen) {
  Sampler s;
  std::vector<int> counts(FixedLogits().size());
  for (int i = 0; i < kDraws; ++i) {
    std::vector<float> l = FixedLogits();
    ++counts[s.Sample(absl::MakeSpan(l), seen, p, i)];
  }
  return counts;
}

TEST(SamplerDistributionTest, DrawsFromTheIntendedDistribution) {
  const std::vector<int32_t> seen = SeenTokens();
  const std::vector<SamplingParams> settings = SettingsUnderTest();
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
