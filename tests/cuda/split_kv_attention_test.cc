// The device's split-KV decode attention (cuda::SplitKvAttention) against the CPU's
// (CpuPagedAttention) on the same bf16 pages and the same SplitKvPlan, for every split count
// (splits ending mid-page, empty splits): the GPU kernel reproduces the decomposition and the
// merge the CPU tests pin, for every heads shape of the case (GQA groups 1 to 8, head sizes 16 to
// 128, and head sizes with and without 16-byte rows). Skips without a device.
#include <cuda_runtime_api.h>

#include <bit>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "engine/cpu/cpu_paged_attention.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/split_kv_meta.h"
#include "engine/kv/sequence.h"
#include "gtest/gtest.h"
#include "tests/common/paged_attention_case.h"
#include "tests/cuda/no_device.h"

namespace catserve::engine {
namespace {

using cuda::DeviceBuffer;

using Case = catserve::testing::PagedAttentionCase;
constexpr int kLayer = Case::kLayer, kPageEntries = Case::kPageEntries;

class SplitKvAttentionTest : public ::testing::TestWithParam<Case::Shape> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA_DEVICE();
    ASSERT_NO_FATAL_FAILURE(case_.Build(KvDtype::kBf16, 23, GetParam()));
    heads_ = case_.shape.heads;
    kv_heads_ = case_.shape.kv_heads;
    head_dim_ = case_.shape.head_dim;
    ASSERT_TRUE(arena_.Upload(pool_->page_data(0), pool_->total_bytes()).ok());
    ASSERT_TRUE(qkv_device_.Upload(qkv_).ok());
  }

  std::vector<float> Cpu(const SplitKvPlan& splits) {
    ThreadPool threads(1);
    CpuPagedAttention attention;
    std::vector<float> out(plan_.rows.size() * heads_ * head_dim_, NAN);
    attention.Run(threads, plan_, splits, items_, *pool_, kLayer, qkv_.data(), heads_, out.data());
    return out;
  }

  std::vector<float> Gpu(const SplitKvPlan& splits) {
    const cuda::SplitKvMeta meta =
        cuda::BuildSplitKvMeta(plan_, splits, items_, heads_ / kv_heads_, kv_heads_);
    DeviceBuffer rows, pages, items, split_list, partials, out;
    EXPECT_TRUE(rows.Upload(meta.rows).ok());
    EXPECT_TRUE(pages.Upload(meta.page_lists).ok());
    EXPECT_TRUE(items.Upload(meta.items).ok());
    EXPECT_TRUE(split_list.Upload(meta.splits).ok());
    EXPECT_TRUE(partials.Reserve(meta.partial_slots * (2 + head_dim_) * sizeof(float)).ok());
    const size_t values = plan_.rows.size() * heads_ * head_dim_;
    EXPECT_TRUE(out.Reserve(values * sizeof(uint16_t)).ok());
    float* p = partials.as<float>();
    const cuda::SplitKvPartials parts{p, p + meta.partial_slots, p + 2 * meta.partial_slots};
    EXPECT_EQ(cuda::SplitKvAttention(qkv_device_.as<float>(), heads_, kv_heads_, head_dim_,
                                     rows.as<cuda::AttentionRow>(), items.as<cuda::SplitKvItem>(),
                                     static_cast<int>(meta.items.size()), meta.max_item_rows,
                                     split_list.as<cuda::SplitKvSplit>(),
                                     static_cast<int>(meta.splits.size()), pages.as<int32_t>(),
                                     kLayer, kPageEntries, pool_->geometry().values_per_page(),
                                     arena_.as<uint16_t>(), parts, out.as<uint16_t>(), nullptr),
              cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint16_t> bits(values);
    EXPECT_EQ(
        cudaMemcpy(bits.data(), out.data(), values * sizeof(uint16_t), cudaMemcpyDeviceToHost),
        cudaSuccess);
    std::vector<float> got(values);
    for (size_t i = 0; i < values; ++i) {
      got[i] = std::bit_cast<float>(static_cast<uint32_t>(bits[i]) << 16);
    }
    return got;
  }

  Case case_;
  int heads_ = 0, kv_heads_ = 0, head_dim_ = 0;  // case_.shape
  std::optional<KvPool>& pool_ = case_.pool;
  std::vector<StepItem>& items_ = case_.items;
  StepPlan& plan_ = case_.plan;
  std::vector<float>& qkv_ = case_.qkv;
  DeviceBuffer arena_, qkv_device_;
};

TEST_P(SplitKvAttentionTest, EverySplitCountMatchesTheCpu) {
  // The longest item has 51 keys: up to 53 splits covers one-key and empty splits, and with 4
  // entries a page most splits end mid-page. The device writes bf16: within its rounding (2^-8
  // relative) plus the accumulation order's.
  for (int n = 1; n <= 53; ++n) {
    SplitKvPlan splits;
    splits.BuildFixed(plan_, n);
    const std::vector<float> want = Cpu(splits), got = Gpu(splits);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 5e-3 * std::abs(want[i]) + 1e-4) << n << " splits, value " << i;
    }
  }
}

TEST_P(SplitKvAttentionTest, TheEnginesPlanMatchesTheCpu) {
  // Build(plan, workers) as CudaEngine calls it, for a few SM counts.
  for (int workers : {1, 3, 132}) {
    SplitKvPlan splits;
    splits.Build(plan_, workers);
    const std::vector<float> want = Cpu(splits), got = Gpu(splits);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 5e-3 * std::abs(want[i]) + 1e-4)
          << workers << " workers, value " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SplitKvAttentionTest, ::testing::ValuesIn(Case::Shapes()),
                         [](const auto& info) { return Case::Name(info.param); });

}  // namespace
}  // namespace catserve::engine
