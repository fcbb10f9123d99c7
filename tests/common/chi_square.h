#ifndef CATSERVE_TESTS_COMMON_CHI_SQUARE_H_
#define CATSERVE_TESTS_COMMON_CHI_SQUARE_H_

// Pearson's chi-square goodness-of-fit test for samplers: do `counts` (draws per token) come from
// the distribution `probs`? The draws of a seeded sampler are fixed, so a test built on this is
// deterministic; the significance level says how unlucky a correct sampler would have to be.

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace catserve::testing {

// The upper `alpha` quantile of chi-square with `df` degrees of freedom, by Wilson-Hilferty
// (within a few percent for df >= 3). `z` is the standard normal's upper quantile for alpha.
inline double ChiSquareCritical(int df, double z) {
  const double a = 2.0 / (9.0 * df);
  const double c = 1.0 - a + z * std::sqrt(a);
  return df * c * c * c;
}

// Upper normal quantile of alpha = 1e-4.
inline constexpr double kZ1e4 = 3.719;

// Passes when the statistic over tokens with probs[i] > 0 stays below the critical value at
// alpha = 1e-4, and no draw fell on a token of probability 0.
inline ::testing::AssertionResult DrawnFrom(const std::vector<int>& counts,
                                            const std::vector<double>& probs) {
  if (counts.size() != probs.size()) return ::testing::AssertionFailure() << "sizes differ";
  long total = 0;
  for (int c : counts) total += c;
  double stat = 0;
  int df = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) {
      if (counts[i] > 0) {
        return ::testing::AssertionFailure()
               << counts[i] << " draws of token " << i << ", whose probability is 0";
      }
      continue;
    }
    const double expected = probs[i] * total;
    stat += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++df;
  }
  if (df < 1) return ::testing::AssertionFailure() << "fewer than two possible tokens";
  const double critical = ChiSquareCritical(df, kZ1e4);
  if (stat > critical) {
    return ::testing::AssertionFailure()
           << "chi-square " << stat << " > " << critical << " (" << df
           << " degrees of freedom, alpha 1e-4, " << total << " draws)";
  }
  return ::testing::AssertionSuccess() << "chi-square " << stat << " <= " << critical;
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_CHI_SQUARE_H_
