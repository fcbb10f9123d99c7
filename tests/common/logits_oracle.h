#ifndef CATSERVE_TESTS_COMMON_LOGITS_ORACLE_H_
#define CATSERVE_TESTS_COMMON_LOGITS_ORACLE_H_

// The oracle for a bf16 backend, grounded in the fp32 engine. A bf16 backend cannot reproduce
// the CPU's bf16 emulation bit for bit (accumulation order differs), but a correct one lands as
// far from fp32 as the emulation does, while a structural bug (wrong RoPE position, mask, row,
// slot) lands much further. So, for logits rows of the same positions from the fp32 engine, the
// bf16-emulating engine and the candidate:
//   - per row: max|candidate - fp32| <= factor * max|emulation - fp32| + floor, where floor is
//     floor_abs + floor_rel * max|fp32| (one bf16 rounding step of the row's largest logit: the
//     random GQA model's logits reach 64, the fixtures' a few units);
//   - over all rows: relative L2 of candidate vs fp32 <= factor * the emulation's + l2_floor
//     (one bf16 rounding step, 1/256);
//   - greedy tokens equal fp32's wherever fp32's top two logits are at least twice the per-row
//     bound above apart; at a closer pair (a near-tie, which a candidate within the bound may
//     decide either way) a different token ends the comparison, since the paths part there.
// CPU and CUDA tests use this one criterion, and the negative controls
// (tests/engine/logits_oracle_test.cc, tests/cuda) show it rejects planted defects.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"

namespace catserve::testing {

struct OracleBounds {
  double factor = 1.5;
  float floor_abs = 0.05f;
  float floor_rel = 1.0f / 256;
  double l2_floor = 1.0 / 256;
};

// max |a - b|; infinity when any difference is NaN.
inline float MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const float d = std::abs(a[i] - b[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

// sqrt(sum (a - b)^2 / sum b^2) over every row.
inline double RelativeL2(const std::vector<std::vector<float>>& a,
                         const std::vector<std::vector<float>>& b) {
  double err = 0, norm = 0;
  for (size_t r = 0; r < a.size(); ++r) {
    for (size_t i = 0; i < a[r].size(); ++i) {
      const double d = static_cast<double>(a[r][i]) - b[r][i];
      err += d * d;
      norm += static_cast<double>(b[r][i]) * b[r][i];
    }
  }
  return std::isnan(err) ? INFINITY : std::sqrt(err / norm);
}

// How far from the fp32 row a candidate row may land, given the emulation's row.
inline double AllowedDistance(absl::Span<const float> fp32, absl::Span<const float> emulated,
                              const OracleBounds& bounds) {
  float largest = 0;
  for (float v : fp32) largest = std::max(largest, std::abs(v));
  return bounds.factor * MaxAbsDiff(emulated, fp32) + bounds.floor_abs + bounds.floor_rel * largest;
}

// The per-row and all-row criteria. Fails naming the first row out of bounds.
inline ::testing::AssertionResult MatchesFp32LikeBf16(
    const std::vector<std::vector<float>>& fp32, const std::vector<std::vector<float>>& emulated,
    const std::vector<std::vector<float>>& candidate, const OracleBounds& bounds = {}) {
  if (fp32.size() != emulated.size() || fp32.size() != candidate.size() || fp32.empty()) {
    return ::testing::AssertionFailure()
           << "row counts differ or are zero: fp32 " << fp32.size() << ", emulated "
           << emulated.size() << ", candidate " << candidate.size();
  }
  for (size_t r = 0; r < fp32.size(); ++r) {
    if (fp32[r].size() != candidate[r].size() || fp32[r].size() != emulated[r].size()) {
      return ::testing::AssertionFailure() << "row " << r << " has different widths";
    }
    const float emu = MaxAbsDiff(emulated[r], fp32[r]);
    const float got = MaxAbsDiff(candidate[r], fp32[r]);
    const double allowed = AllowedDistance(fp32[r], emulated[r], bounds);
    if (!(got <= allowed)) {
      return ::testing::AssertionFailure()
             << "row " << r << ": max|candidate - fp32| = " << got << " > " << allowed << " ("
             << bounds.factor << " x the emulation's " << emu << " + floor "
             << allowed - bounds.factor * emu << ")";
    }
  }
  const double emu_l2 = RelativeL2(emulated, fp32);
  const double got_l2 = RelativeL2(candidate, fp32);
  const double allowed_l2 = bounds.factor * emu_l2 + bounds.l2_floor;
  if (!(got_l2 <= allowed_l2)) {
    return ::testing::AssertionFailure()
           << "relative L2 over " << fp32.size() << " rows: candidate " << got_l2 << " > "
           << allowed_l2 << " (" << bounds.factor << " x the emulation's " << emu_l2 << " + "
           << bounds.l2_floor << ")";
  }
  return ::testing::AssertionSuccess() << "relative L2 " << got_l2 << " (emulation " << emu_l2
                                       << ") over " << fp32.size() << " rows";
}

inline int ArgMax(absl::Span<const float> v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Gap between the largest and the second largest value.
inline float TopTwoGap(absl::Span<const float> v) {
  float first = -INFINITY, second = -INFINITY;
  for (float x : v) {
    if (x > first) {
      second = first;
      first = x;
    } else if (x > second) {
      second = x;
    }
  }
  return first - second;
}

// Greedy generations compared position by position: fp32_logits[k] and emulated_logits[k] are
// the fp32 and the bf16-emulating engines' logits on fp32's path, the ones that chose
// fp32_tokens[k]. A different token fails the check unless fp32's top-two gap there is below
// twice AllowedDistance (a near-tie), where it ends the comparison instead; `compared` receives
// the positions compared with equal tokens.
inline ::testing::AssertionResult GreedyAgreesUntilNearTie(
    const std::vector<int32_t>& fp32_tokens, const std::vector<std::vector<float>>& fp32_logits,
    const std::vector<std::vector<float>>& emulated_logits,
    const std::vector<int32_t>& candidate_tokens, int* compared, const OracleBounds& bounds = {}) {
  *compared = 0;
  const size_t n = std::min(
      {fp32_tokens.size(), fp32_logits.size(), emulated_logits.size(), candidate_tokens.size()});
  for (size_t k = 0; k < n; ++k) {
    const double near_tie = 2 * AllowedDistance(fp32_logits[k], emulated_logits[k], bounds);
    const bool tie = TopTwoGap(fp32_logits[k]) < near_tie;
    if (!tie && ArgMax(fp32_logits[k]) != fp32_tokens[k]) {
      return ::testing::AssertionFailure()
             << "fp32 logits at position " << k << " do not choose fp32's token";
    }
    if (candidate_tokens[k] != fp32_tokens[k]) {
      if (tie) break;
      return ::testing::AssertionFailure()
             << "position " << k << ": candidate token " << candidate_tokens[k] << ", fp32 "
             << fp32_tokens[k] << " (fp32 top-two gap " << TopTwoGap(fp32_logits[k])
             << ", near-tie below " << near_tie << ")";
    }
    ++*compared;
  }
  if (*compared < static_cast<int>(n)) {
    return ::testing::AssertionSuccess()
           << "stopped at a near-tie decided differently at position " << *compared;
  }
  if (candidate_tokens.size() != fp32_tokens.size()) {
    return ::testing::AssertionFailure() << "the candidate generated " << candidate_tokens.size()
                                         << " tokens, fp32 " << fp32_tokens.size();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_LOGITS_ORACLE_H_
