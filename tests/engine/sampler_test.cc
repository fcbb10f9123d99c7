#include "engine/sampler.h"

#include <cmath>
#include <set>

#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

// Logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::set<int32_t> Support(const std::vector<float>& logits, const SamplingParams& p) {
  std::set<int32_t> s;
  for (const Candidate& c : SamplingSupport(logits, p)) s.insert(c.token);
  return s;
}

const std::vector<double> kProbs = {0.05, 0.4, 0.1, 0.25, 0.15, 0.05};  // ids by probability:
                                                                        // 1, 3, 4, 2, 0/5

TEST(SamplerTest, TopKKeepsTheKMostLikely) {
  SamplingParams p;
  p.top_k = 3;
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1, 3, 4}));
  p.top_k = 1;
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1}));
}

TEST(SamplerTest, TopPKeepsTheSmallestPrefixReachingP) {
  SamplingParams p;
  p.top_p = 0.65f;  // 0.4 + 0.25 = 0.65 reaches it
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1, 3}));
  p.top_p = 0.66f;  // needs the 0.15 too
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1, 3, 4}));
  p.top_p = 0.3f;
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1}));
}

TEST(SamplerTest, MinPKeepsTokensAboveFractionOfTheBest) {
  SamplingParams p;
  p.min_p = 0.3f;  // floor 0.12: keeps 0.4, 0.25, 0.15
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1, 3, 4}));
  p.min_p = 0.5f;  // floor 0.2
  EXPECT_EQ(Support(LogitsFor(kProbs), p), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, SupportIsRenormalised) {
  SamplingParams p;
  p.top_k = 2;
  const auto c = SamplingSupport(LogitsFor(kProbs), p);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NEAR(c[0].prob, 0.4 / 0.65, 1e-6);
  EXPECT_NEAR(c[1].prob, 0.25 / 0.65, 1e-6);
}

TEST(SamplerTest, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5f;  // probabilities squared, renormalised
  const auto c = SamplingSupport(LogitsFor({0.25, 0.75}), p);
  EXPECT_NEAR(c[0].prob, 0.9, 1e-6);
  EXPECT_EQ(c[0].token, 1);
}

TEST(SamplerTest, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  auto draw = [&](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> l = logits;
      out.push_back(s.Sample(absl::MakeSpan(l), {}));
    }
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, SampledFrequenciesFollowTheDistribution) {
  SamplingParams p;
  p.seed = 9;
  Sampler s(p);
  std::vector<int> counts(kProbs.size());
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = LogitsFor(kProbs);
    ++counts[s.Sample(absl::MakeSpan(l), {})];
  }
  for (size_t i = 0; i < kProbs.size(); ++i) {
    EXPECT_NEAR(counts[i] / static_cast<double>(n), kProbs[i], 0.015) << "token " << i;
  }
}

TEST(SamplerTest, GreedyTakesArgmaxAndPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  std::vector<float> l = {1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.Sample(absl::MakeSpan(l), {}), 1);
  p.repetition_penalty = 1.5f;
  Sampler penalised(p);
  l = {1.0f, 3.0f, 2.9f};
  const std::vector<int32_t> context = {1};
  EXPECT_EQ(penalised.Sample(absl::MakeSpan(l), context), 2);  // 3.0 / 1.5 = 2.0 < 2.9
  std::vector<float> neg = {-1.0f, -2.0f};
  const std::vector<int32_t> first = {0};
  ApplyRepetitionPenalty(absl::MakeSpan(neg), first, 2.0f);
  EXPECT_FLOAT_EQ(neg[0], -2.0f);
}

TEST(SamplerTest, ValidationNamesTheField) {
  SamplingParams p;
  p.temperature = -0.1f;
  EXPECT_NE(ValidateSamplingParams(p).message().find("temperature"), std::string::npos);
  p = {};
  p.top_p = 1.5f;
  EXPECT_NE(ValidateSamplingParams(p).message().find("top_p"), std::string::npos);
  p = {};
  p.min_p = -1;
  EXPECT_NE(ValidateSamplingParams(p).message().find("min_p"), std::string::npos);
  p = {};
  p.repetition_penalty = 0;
  EXPECT_NE(ValidateSamplingParams(p).message().find("repetition_penalty"), std::string::npos);
  EXPECT_TRUE(ValidateSamplingParams({}).ok());
}

}  // namespace
}  // namespace catserve::engine
