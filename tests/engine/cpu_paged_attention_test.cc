// The CPU's split-KV decode attention against a direct softmax over exactly the keys each row
// sees, for every split count (splits ending mid-page, empty splits), every KV dtype and every
// kernel set this CPU runs.
#include "engine/cpu/cpu_paged_attention.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "engine/kv/page_layout.h"
#include "engine/kv/sequence.h"
#include "gtest/gtest.h"
#include "tests/common/paged_attention_case.h"

namespace catserve::engine {
namespace {

using Case = catserve::testing::PagedAttentionCase;
constexpr int kLayer = Case::kLayer, kPageEntries = Case::kPageEntries;

// The fp32 value a stored value reads back as.
float StoredValue(KvDtype dtype, const std::byte* at) {
  uint16_t bits;
  switch (dtype) {
    case KvDtype::kFp32: {
      float f;
      std::memcpy(&f, at, sizeof f);
      return f;
    }
    case KvDtype::kBf16: {
      std::memcpy(&bits, at, sizeof bits);
      return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
    }
    case KvDtype::kFp16:
      std::memcpy(&bits, at, sizeof bits);
      return Fp16ToFloat(bits);
  }
  return 0;
}

class CpuPagedAttentionTest : public ::testing::TestWithParam<std::tuple<KvDtype, Case::Shape>> {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(case_.Build(std::get<0>(GetParam()), 17, std::get<1>(GetParam())));
    heads_ = case_.shape.heads;
    kv_heads_ = case_.shape.kv_heads;
    head_dim_ = case_.shape.head_dim;
  }

  // The value at (layer kLayer, k or v, kv head, entry) of a region of item i.
  float Value(int i, bool compressed, int entry, int kv, int kvh, int d) {
    const std::vector<int32_t>& region =
        compressed ? seqs_[i].pages.compressed : seqs_[i].pages.local;
    const KvGeometry& g = pool_->geometry();
    const size_t at =
        PageValueIndex(kLayer, kv, kvh, entry % kPageEntries, kv_heads_, kPageEntries, head_dim_) +
        d;
    return StoredValue(g.dtype,
                       pool_->page_data(region[entry / kPageEntries]) + at * g.bytes_per_value());
  }

  // Softmax attention of every row and head over the keys it sees, in double.
  std::vector<double> Direct() {
    const int T = static_cast<int>(plan_.rows.size()), group = heads_ / kv_heads_;
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
    std::vector<double> out(static_cast<size_t>(T) * heads_ * head_dim_);
    for (int t = 0; t < T; ++t) {
      const StepPlan::Row& r = plan_.rows[t];
      for (int h = 0; h < heads_; ++h) {
        const float* q = qkv_.data() +
                         static_cast<size_t>(t) * (heads_ + 2 * kv_heads_) * head_dim_ +
                         h * head_dim_;
        std::vector<std::pair<bool, int>> keys;
        for (int e = 0; e < r.visible_compressed; ++e) keys.push_back({true, e});
        if (!r.compressed) {
          for (int e = 0; e <= r.entry; ++e) keys.push_back({false, e});
        }
        std::vector<double> score;
        double best = -INFINITY;
        for (auto [c, e] : keys) {
          double dot = 0;
          for (int d = 0; d < head_dim_; ++d) dot += q[d] * Value(r.item, c, e, 0, h / group, d);
          score.push_back(dot * scale);
          best = std::max(best, score.back());
        }
        double total = 0;
        double* o = out.data() + (static_cast<size_t>(t) * heads_ + h) * head_dim_;
        for (size_t k = 0; k < keys.size(); ++k) {
          const double p = std::exp(score[k] - best);
          total += p;
          for (int d = 0; d < head_dim_; ++d) {
            o[d] += p * Value(r.item, keys[k].first, keys[k].second, 1, h / group, d);
          }
        }
        for (int d = 0; d < head_dim_; ++d) o[d] /= total;
      }
    }
    return out;
  }

  std::vector<float> Attend(const AttentionKernels& kernels, const SplitKvPlan& splits,
                            int threads) {
    ThreadPool pool(threads);
    CpuPagedAttention attention(kernels);
    std::vector<float> out(plan_.rows.size() * heads_ * head_dim_, NAN);
    attention.Run(pool, plan_, splits, items_, *pool_, kLayer, qkv_.data(), heads_, out.data());
    return out;
  }

  Case case_;
  int heads_ = 0, kv_heads_ = 0, head_dim_ = 0;  // case_.shape
  std::optional<KvPool>& pool_ = case_.pool;
  std::vector<SequenceState>& seqs_ = case_.seqs;
  std::vector<StepItem>& items_ = case_.items;
  StepPlan& plan_ = case_.plan;
  std::vector<float>& qkv_ = case_.qkv;
};

std::vector<const AttentionKernels*> KernelSets() {
  std::vector<const AttentionKernels*> sets = {&PortableAttentionKernels()};
  if (Avx2AttentionKernels() != nullptr) sets.push_back(Avx2AttentionKernels());
  return sets;
}

TEST_P(CpuPagedAttentionTest, EverySplitCountEqualsTheDirectSoftmax) {
  const std::vector<double> want = Direct();
  for (const AttentionKernels* kernels : KernelSets()) {
    // The longest item has 51 keys: up to 53 splits covers splits of one key and empty ones,
    // and with 4 entries a page most splits end mid-page.
    for (int n = 1; n <= 53; ++n) {
      SplitKvPlan splits;
      splits.BuildFixed(plan_, n);
      const std::vector<float> got = Attend(*kernels, splits, 1 + n % 3);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 2e-5 * (1 + std::abs(want[i])))
            << kernels->name << ", " << n << " splits, value " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(KvDtypesAndShapes, CpuPagedAttentionTest,
                         ::testing::Combine(::testing::Values(KvDtype::kFp32, KvDtype::kBf16,
                                                              KvDtype::kFp16),
                                            ::testing::ValuesIn(Case::Shapes())),
                         [](const auto& info) {
                           return std::string(KvDtypeName(std::get<0>(info.param))) + "_" +
                                  Case::Name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace catserve::engine
