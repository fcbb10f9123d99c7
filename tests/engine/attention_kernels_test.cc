// Both attention kernel sets against double sums, for keys and values stored as fp32, bf16 and
// fp16 (16-bit values are widened exactly as they are loaded).
#include "engine/kernels/attention_kernels.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "engine/kv/kv_dtype.h"
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

// `values` stored as `dtype`, and the fp32 values that storage reads back as.
struct Stored {
  std::vector<float> fp32;
  std::vector<uint16_t> bits;
  std::vector<float> exact;  // what the stored values are
  const void* data() const {
    return bits.empty() ? static_cast<const void*>(fp32.data()) : bits.data();
  }
};

Stored Store(KvDtype dtype, const std::vector<float>& values) {
  Stored s;
  if (dtype == KvDtype::kFp32) {
    s.fp32 = values;
    s.exact = values;
    return s;
  }
  s.bits.resize(values.size());
  StoreKvValues(dtype, values.data(), static_cast<int>(values.size()), s.bits.data());
  for (uint16_t b : s.bits) {
    s.exact.push_back(dtype == KvDtype::kBf16 ? std::bit_cast<float>(static_cast<uint32_t>(b) << 16)
                                              : Fp16ToFloat(b));
  }
  return s;
}

TEST(AttentionKernelsTest, ScoresAndAccumulateMatchDoubleSumsForEveryDtype) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Head sizes with and without 32-, 8- and 1-wide tails; key counts with and without 4-key tails.
  for (KvDtype dtype : {KvDtype::kFp32, KvDtype::kBf16, KvDtype::kFp16}) {
    for (int hd : {3, 8, 44, 64, 128}) {
      for (int n : {1, 4, 7, 16}) {
        std::vector<float> q(hd), kv(n * hd), vv(n * hd), p(n), acc0(hd);
        for (float& x : q) x = normal(rng);
        for (float& x : kv) x = normal(rng);
        for (float& x : vv) x = normal(rng);
        for (float& x : p) x = std::abs(normal(rng));
        for (float& x : acc0) x = normal(rng);
        const Stored k = Store(dtype, kv), v = Store(dtype, vv);
        for (const AttentionKernels* ks : KernelSets()) {
          SCOPED_TRACE(::testing::Message()
                       << ks->name << " " << KvDtypeName(dtype) << " hd " << hd << " n " << n);
          std::vector<float> s(n);
          ks->scores[static_cast<int>(dtype)](q.data(), k.data(), n, hd, 0.25f, s.data());
          std::vector<float> acc = acc0;
          ks->accumulate[static_cast<int>(dtype)](0.5f, p.data(), v.data(), n, hd, acc.data());
          for (int j = 0; j < n; ++j) {
            double dot = 0;
            for (int i = 0; i < hd; ++i) dot += static_cast<double>(q[i]) * k.exact[j * hd + i];
            EXPECT_NEAR(s[j], dot * 0.25, 1e-5 * (1 + std::sqrt(hd)));
          }
          for (int i = 0; i < hd; ++i) {
            double a = 0.5 * acc0[i];
            for (int j = 0; j < n; ++j) a += static_cast<double>(p[j]) * v.exact[j * hd + i];
            EXPECT_NEAR(acc[i], a, 1e-5 * (1 + n));
          }
        }
      }
    }
  }
}

// attend over two runs (in two calls, the second rescaling what the first left; in one call; and
// in one call with an empty run between them) against the softmax of both runs in doubles, for
// every query head of a group: head sizes with the fused AVX2 paths
// (32, 48, 64, 96, 128) and without (3, 8, 44); groups of 1 to 11 query heads (tiles of 8, 4, 2
// and 1, and their mixes); runs shorter than a vector or than one pass of a tile, with tails, and
// longer than the kernels' 64-key pieces.
TEST(AttentionKernelsTest, AttendIsTheOnlineSoftmaxOfItsRuns) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (KvDtype dtype : {KvDtype::kFp32, KvDtype::kBf16, KvDtype::kFp16}) {
    for (int hd : {3, 8, 32, 44, 48, 64, 96, 128}) {
      for (int group : {1, 2, 3, 4, 7, 8, 11}) {
        for (int n : {1, 3, 5, 8, 13, 16, 70}) {
          const int keys = 2 * n;
          std::vector<float> q(group * hd), kv(keys * hd), vv(keys * hd);
          for (float& x : q) x = normal(rng);
          for (float& x : kv) x = normal(rng);
          for (float& x : vv) x = normal(rng);
          const Stored k = Store(dtype, kv), v = Store(dtype, vv);
          const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
          // Per query: the max score, the sum of exps and the weighted sum of values.
          std::vector<double> best(group, -INFINITY), want_sum(group, 0.0),
              want_acc(group * hd, 0.0);
          for (int g = 0; g < group; ++g) {
            std::vector<double> score(keys);
            for (int j = 0; j < keys; ++j) {
              double dot = 0;
              for (int i = 0; i < hd; ++i) {
                dot += static_cast<double>(q[g * hd + i]) * k.exact[j * hd + i];
              }
              score[j] = dot * scale;
              best[g] = std::max(best[g], score[j]);
            }
            for (int j = 0; j < keys; ++j) {
              const double e = std::exp(score[j] - best[g]);
              want_sum[g] += e;
              for (int i = 0; i < hd; ++i) want_acc[g * hd + i] += e * v.exact[j * hd + i];
            }
          }
          const size_t bytes = KvDtypeBytes(dtype);
          const auto* kb = static_cast<const std::byte*>(k.data());
          const auto* vb = static_cast<const std::byte*>(v.data());
          const size_t second = static_cast<size_t>(n) * hd * bytes;
          const KvRun first_run = {kb, vb, n}, second_run = {kb + second, vb + second, n},
                      empty_run = {kb, vb, 0};
          // The same keys as one call per run, as one call over both runs, and with an empty run
          // between them.
          const std::vector<std::vector<KvRun>> calls_of[] = {{{first_run}, {second_run}},
                                                              {{first_run, second_run}},
                                                              {{first_run, empty_run, second_run}}};
          for (const AttentionKernels* ks : KernelSets()) {
            for (int way = 0; way < 3; ++way) {
              SCOPED_TRACE(::testing::Message()
                           << ks->name << " " << KvDtypeName(dtype) << " hd " << hd << " group "
                           << group << " n " << n << " way " << way);
              std::vector<float> m(group, -INFINITY), sum(group, 0.0f), acc(group * hd, 0.0f);
              const auto attend = ks->attend[static_cast<int>(dtype)];
              for (const std::vector<KvRun>& runs : calls_of[way]) {
                attend(q.data(), group, runs.data(), static_cast<int>(runs.size()), hd, scale,
                       m.data(), sum.data(), acc.data());
              }
              for (int g = 0; g < group; ++g) {
                EXPECT_NEAR(m[g], best[g], 1e-5 * (1 + std::abs(best[g]))) << "query " << g;
                EXPECT_NEAR(sum[g], want_sum[g], 1e-5 * want_sum[g]) << "query " << g;
                for (int i = 0; i < hd; ++i) {
                  EXPECT_NEAR(acc[g * hd + i] / sum[g], want_acc[g * hd + i] / want_sum[g],
                              1e-5 * (1 + std::sqrt(keys)))
                      << "query " << g << " value " << i;
                }
              }
            }
          }
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

TEST(AttentionKernelsTest, SixteenBitLoadsAreExactForEveryPattern) {
  // Every finite pattern as the one key of a head of size 1 scored against q = 1: the score is
  // the widened value itself, through the 8-wide loads (hd 8: the pattern in lane 0..7) too.
  for (KvDtype dtype : {KvDtype::kBf16, KvDtype::kFp16}) {
    for (const AttentionKernels* ks : KernelSets()) {
      const float q[8] = {1, 1, 1, 1, 1, 1, 1, 1};
      for (int bits = 0; bits < 65536; bits += 8) {
        uint16_t key[8];
        float want[8];
        bool finite = true;
        for (int l = 0; l < 8; ++l) {
          key[l] = static_cast<uint16_t>(bits + l);
          want[l] = dtype == KvDtype::kBf16
                        ? std::bit_cast<float>(static_cast<uint32_t>(key[l]) << 16)
                        : Fp16ToFloat(key[l]);
          finite = finite && std::isfinite(want[l]);
        }
        if (!finite) continue;
        for (int l = 0; l < 8; ++l) {
          float s;
          ks->scores[static_cast<int>(dtype)](q, key + l, 1, 1, 1.0f, &s);
          ASSERT_EQ(s, want[l]) << ks->name << " " << KvDtypeName(dtype) << " " << bits + l;
        }
        // One 8-wide load: the accumulated row is exactly the 8 values.
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const float one = 1.0f;
        ks->accumulate[static_cast<int>(dtype)](0.0f, &one, key, 1, 8, acc);
        for (int l = 0; l < 8; ++l) {
          ASSERT_EQ(acc[l], want[l]) << ks->name << " " << KvDtypeName(dtype) << " " << bits + l;
        }
      }
    }
  }
}

}  // namespace
}  // namespace catserve::engine
