// The AVX2 attention kernels against the portable ones (which are plain loops), and both
// widenings against the scalar conversions for every 16-bit pattern.
#include "engine/attention_kernels.h"

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "engine/kv_dtype.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

std::vector<const AttentionKernels*> KernelSets() {
  std::vector<const AttentionKernels*> sets = {&PortableAttentionKernels()};
  if (Avx2AttentionKernels() != nullptr) sets.push_back(Avx2AttentionKernels());
  return sets;
}

TEST(AttentionKernelsTest, BestIsAvx2WhereTheCpuHasIt) {
  EXPECT_EQ(&BestAttentionKernels(), Avx2AttentionKernels() != nullptr
                                         ? Avx2AttentionKernels()
                                         : &PortableAttentionKernels());
}

TEST(AttentionKernelsTest, ScoresAndAccumulateMatchDoubleSums) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Head sizes with and without 32-, 8- and 1-wide tails; key counts with and without 4-key tails.
  for (int hd : {3, 8, 44, 64, 128}) {
    for (int n : {1, 4, 7, 16}) {
      std::vector<float> q(hd), k(n * hd), v(n * hd), p(n), acc0(hd);
      for (float& x : q) x = normal(rng);
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      for (float& x : p) x = std::abs(normal(rng));
      for (float& x : acc0) x = normal(rng);
      for (const AttentionKernels* ks : KernelSets()) {
        std::vector<float> s(n);
        ks->scores(q.data(), k.data(), n, hd, 0.25f, s.data());
        std::vector<float> acc = acc0;
        ks->accumulate(0.5f, p.data(), v.data(), n, hd, acc.data());
        for (int j = 0; j < n; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += static_cast<double>(q[i]) * k[j * hd + i];
          EXPECT_NEAR(s[j], dot * 0.25, 1e-5 * (1 + std::sqrt(hd))) << ks->name << " hd " << hd;
        }
        for (int i = 0; i < hd; ++i) {
          double a = 0.5 * acc0[i];
          for (int j = 0; j < n; ++j) a += static_cast<double>(p[j]) * v[j * hd + i];
          EXPECT_NEAR(acc[i], a, 1e-5 * (1 + n)) << ks->name << " hd " << hd << " n " << n;
        }
      }
    }
  }
}

TEST(AttentionKernelsTest, ExpSumIsWithinTwoUlpOfExpf) {
  for (const AttentionKernels* ks : KernelSets()) {
    // From 0 down past the smallest normal result (-87.3), 13 values at a time (one 8-wide pass
    // and a 5-wide tail).
    for (float start = 0.0f; start > -100.0f; start -= 0.37f) {
      std::vector<float> s(13);
      for (int j = 0; j < 13; ++j) s[j] = start - 0.011f * j + 3.0f;
      std::vector<float> in = s;
      const float sum = ks->exp_sum(s.data(), 13, 3.0f);
      double want_sum = 0;
      for (int j = 0; j < 13; ++j) {
        const float want = std::exp(in[j] - 3.0f);
        want_sum += want;
        if (want < 1.2e-38f) {
          EXPECT_LE(s[j], 1.2e-38f) << ks->name << " at " << in[j] - 3.0f;
        } else {
          EXPECT_NEAR(s[j], want, 2.5e-7f * want) << ks->name << " at " << in[j] - 3.0f;
        }
      }
      // Relative, plus the 13 values below the smallest normal that the AVX2 exp flushes to 0.
      EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum + 13 * 1.2e-38) << ks->name;
    }
  }
}

TEST(AttentionKernelsTest, WideningIsExactForEveryPattern) {
  std::vector<uint16_t> all(65536 + 5);  // a tail beyond the 8-wide passes
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  for (const AttentionKernels* ks : KernelSets()) {
    std::vector<float> bf(all.size()), fp(all.size());
    ks->widen_bf16(all.data(), static_cast<int>(all.size()), bf.data());
    ks->widen_fp16(all.data(), static_cast<int>(all.size()), fp.data());
    for (size_t i = 0; i < all.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(bf[i]), static_cast<uint32_t>(all[i]) << 16) << ks->name;
      const float want = Fp16ToFloat(all[i]);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(fp[i])) << ks->name << " " << i;
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(fp[i]), std::bit_cast<uint32_t>(want))
            << ks->name << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace catserve::engine
