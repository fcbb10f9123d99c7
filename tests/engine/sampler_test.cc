#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "engine/sampling/draw.h"
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
    Sampler s;
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> l = logits;
      out.push_back(s.Sample(absl::MakeSpan(l), {}, p, i));
    }
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(SamplerTest, SampledFrequenciesFollowTheDistribution) {
  SamplingParams p;
  p.seed = 9;
  Sampler s;
  std::vector<int> counts(kProbs.size());
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = LogitsFor(kProbs);
    ++counts[s.Sample(absl::MakeSpan(l), {}, p, i)];
  }
  for (size_t i = 0; i < kProbs.size(); ++i) {
    EXPECT_NEAR(counts[i] / static_cast<double>(n), kProbs[i], 0.015) << "token " << i;
  }
}

TEST(SamplerTest, GreedyTakesTheFirstLargestOfALongRow) {
  // Rows of 32003 (not a multiple of the eight lanes) with the largest value twice, at every
  // kind of position: the answer is std::max_element's, the first of them.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-10.0f, 10.0f);
  for (auto [a, b] :
       std::vector<std::pair<int, int>>{{0, 5}, {7, 8}, {100, 32002}, {32001, 32002}}) {
    std::vector<float> l(32003);
    for (float& x : l) x = uniform(rng);
    l[a] = l[b] = 11.0f;
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    EXPECT_EQ(Sampler().Sample(absl::MakeSpan(l), {}, {.temperature = 0.0f}, 0), want);
    EXPECT_EQ(want, a);
  }
}

TEST(SamplerTest, GreedyTakesArgmaxAndPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s;
  std::vector<float> l = {1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.Sample(absl::MakeSpan(l), {}, p, 0), 1);
  p.repetition_penalty = 1.5f;
  Sampler penalised;
  l = {1.0f, 3.0f, 2.9f};
  const std::vector<int32_t> context = {1};
  EXPECT_EQ(penalised.Sample(absl::MakeSpan(l), context, p, 0), 2);  // 3.0 / 1.5 = 2.0 < 2.9
  std::vector<float> neg = {-1.0f, -2.0f};
  const std::vector<int32_t> first = {0};
  ApplyRepetitionPenalty(absl::MakeSpan(neg), first, 2.0f);
  EXPECT_FLOAT_EQ(neg[0], -2.0f);
}

// The support by its definition over a whole sorted vocabulary: softmax (summed in id order),
// sorted by probability then id, cut by top_p then min_p, renormalised.
std::vector<Candidate> FullSortSupport(const std::vector<float>& logits, const SamplingParams& p) {
  std::vector<Candidate> c;
  float mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, l / p.temperature);
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float e = std::exp(logits[i] / p.temperature - mx);
    c.push_back({static_cast<int32_t>(i), e});
    sum += e;
  }
  for (Candidate& x : c) x.prob = static_cast<float>(x.prob / sum);
  std::sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
    return a.prob > b.prob || (a.prob == b.prob && a.token < b.token);
  });
  // top_p: the first prefix whose running mass reaches it (all of them when none does).
  std::vector<double> mass(c.size());
  double running = 0;
  for (size_t i = 0; i < c.size(); ++i) mass[i] = running += c[i].prob;
  const auto reach = std::find_if(mass.begin(), mass.end(), [&](double m) { return m >= p.top_p; });
  c.resize(reach == mass.end() ? c.size() : reach - mass.begin() + 1);
  // min_p: the candidates at least min_p of the best (a prefix, being sorted), the best always.
  const auto kept = std::count_if(
      c.begin(), c.end(), [&](const Candidate& x) { return x.prob >= p.min_p * c[0].prob; });
  c.resize(std::max<size_t>(1, kept));
  const double total = std::accumulate(c.begin(), c.end(), 0.0,
                                       [](double t, const Candidate& x) { return t + x.prob; });
  std::vector<Candidate> out;
  for (const Candidate& x : c) out.push_back({x.token, static_cast<float>(x.prob / total)});
  return out;
}

TEST(SamplerTest, TopPAndMinPCutsPastTheFirstSortedPrefixEqualTheFullSort) {
  // 3000 tokens of near-flat logits (with ties): top_p and min_p keep hundreds to thousands of
  // candidates, so SamplingSupport sorts longer and longer prefixes before the cut falls inside.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.7f);
  std::vector<float> logits(3000);
  for (float& l : logits) l = std::round(normal(rng) * 64) / 64;
  std::set<size_t> sizes;
  for (const SamplingParams& p : std::vector<SamplingParams>{{.top_p = 0.05f},
                                                             {.top_p = 0.5f},
                                                             {.top_p = 0.99f},
                                                             {.temperature = 0.5f, .top_p = 0.9f},
                                                             {.min_p = 0.9f},
                                                             {.min_p = 0.3f},
                                                             {.top_p = 0.7f, .min_p = 0.4f}}) {
    const std::vector<Candidate> got = SamplingSupport(logits, p),
                                 want = FullSortSupport(logits, p);
    ASSERT_EQ(got.size(), want.size()) << "top_p " << p.top_p << " min_p " << p.min_p;
    sizes.insert(got.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].token, want[i].token) << i;
      ASSERT_NEAR(got[i].prob, want[i].prob, 1e-6 * want[i].prob) << i;
    }
  }
  // Cuts inside the first sorted prefix (64), inside a longer one, and past 512.
  EXPECT_LE(*sizes.begin(), 64u);
  EXPECT_GT(*sizes.rbegin(), 512u);
  EXPECT_TRUE(std::any_of(sizes.begin(), sizes.end(), [](size_t n) { return n > 64 && n <= 512; }));
}

// The token Sampler draws first (draw 0): the same uniform draw walked over FullSortSupport in
// ascending token id, the most likely token standing in past the end.
int32_t FullSortSample(const std::vector<float>& logits, const SamplingParams& p) {
  const double u = DrawUniform(p.seed, 0);
  std::vector<Candidate> support = FullSortSupport(logits, p);
  const int32_t most_likely = support.front().token;
  std::sort(support.begin(), support.end(),
            [](const Candidate& a, const Candidate& b) { return a.token < b.token; });
  double acc = 0;
  for (const Candidate& c : support) {
    acc += c.prob;
    if (u < acc) return c.token;
  }
  return most_likely;
}

TEST(SamplerTest, PeakedRowsDrawWhatTheFullSortDraws) {
  // One token (or two tied) well ahead of 5000: the sampler takes the most likely token without
  // sorting when the draw falls on it, or when top_p or min_p keep it alone.
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> one(5000);
  for (float& l : one) l = normal(rng);
  std::vector<float> tied = one;
  one[1234] = 9.0f;
  tied[4000] = tied[77] = 9.0f;
  int other_than_first = 0;
  for (const std::vector<float>* logits : {&one, &tied}) {
    for (SamplingParams p : std::vector<SamplingParams>{{.temperature = 1.0f},
                                                        {.temperature = 0.7f},
                                                        {.temperature = 1.5f, .top_p = 0.6f},
                                                        {.top_p = 0.3f},
                                                        {.top_p = 0.7f},
                                                        {.min_p = 0.05f},
                                                        {.temperature = 2.0f, .min_p = 0.2f}}) {
      for (uint64_t seed = 0; seed < 300; ++seed) {
        p.seed = seed;
        std::vector<float> row = *logits;
        const int32_t got = Sampler().Sample(absl::MakeSpan(row), {}, p, 0);
        ASSERT_EQ(got, FullSortSample(*logits, p))
            << "temperature " << p.temperature << " top_p " << p.top_p << " min_p " << p.min_p
            << " seed " << seed;
        other_than_first += got != 1234 && got != 77 ? 1 : 0;
      }
    }
  }
  // Draws past the most likely token happened too (the path that sorts).
  EXPECT_GT(other_than_first, 300);
}

TEST(SamplerTest, LogSumExpEqualsTheDoubleSum) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int n : {1, 7, 8, 1000, 32001}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng);
    const double mx = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(v - mx);
    EXPECT_NEAR(LogSumExp(x), mx + std::log(sum), 1e-5 * std::max(1.0, std::abs(mx))) << n;
    EXPECT_GE(LogSumExp(x), mx) << n;
  }
  // One logit far ahead: its log-probability is 0, not above.
  std::vector<float> peaked(5000, -3.0f);
  peaked[42] = 80.0f;
  EXPECT_EQ(LogSumExp(peaked), 80.0f);
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
