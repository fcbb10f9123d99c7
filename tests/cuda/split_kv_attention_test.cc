// The device's split-KV decode attention (cuda::SplitKvAttention) against the CPU's
// (CpuPagedAttention) on the same bf16 pages and the same SplitKvPlan, for every split count
// (splits ending mid-page, empty splits): the GPU kernel reproduces the decomposition and the
// merge the CPU tests pin. Skips without a device.
#include <cuda_runtime_api.h>

#include <bit>
#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu_paged_attention.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/split_kv_meta.h"
#include "engine/sequence.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

using cuda::DeviceBuffer;

constexpr int kLayers = 2, kLayer = 1, kHeads = 4, kKvHeads = 2, kHeadDim = 44, kPageEntries = 4;
constexpr int kPages = 256;

class SplitKvAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device (" << (e != cudaSuccess ? cudaGetErrorString(e) : "none")
                   << "): the CUDA backend's tests need a GPU";
    }
    const KvGeometry g{.layers = kLayers,
                       .kv_heads = kKvHeads,
                       .head_dim = kHeadDim,
                       .page_entries = kPageEntries,
                       .dtype = KvDtype::kBf16};
    absl::StatusOr<KvPool> pool = KvPool::Create(g, kPages);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_.emplace(*std::move(pool));
    // As the CPU test: decode at chunk 4; a chunk completing at chunk 2 ([fx, S]); a fresh
    // prefill of 23 tokens at chunk 4 (23 rows of one item); decode at chunk 1 over 50
    // compressed entries.
    const int chunk[] = {4, 2, 4, 1}, cached[] = {37, 41, 0, 49}, fed[] = {1, 1, 23, 1};
    seqs_.resize(4);
    std::mt19937 rng(23);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    for (int i = 0; i < 4; ++i) {
      SequenceState& s = seqs_[i];
      s.chunk_size = chunk[i];
      s.cached = cached[i];
      s.tokens.assign(cached[i] + fed[i], 5);
      ASSERT_TRUE(ReservePages(*pool_, s, cached[i] + fed[i]));
      items_.push_back({&s, fed[i], true});
      for (std::vector<int32_t>* region : {&s.pages.compressed, &s.pages.local}) {
        for (int32_t page : *region) {
          std::vector<float> values(g.values_per_page());
          for (float& v : values) v = normal(rng);
          StoreKvValues(g.dtype, values.data(), static_cast<int>(values.size()),
                        pool_->page_data(page));
        }
      }
    }
    plan_.Build(items_);
    qkv_.resize(plan_.rows.size() * (kHeads + 2 * kKvHeads) * kHeadDim);
    for (float& v : qkv_) v = normal(rng);
    ASSERT_TRUE(arena_.Upload(pool_->page_data(0), pool_->total_bytes()).ok());
    ASSERT_TRUE(qkv_device_.Upload(qkv_).ok());
  }

  std::vector<float> Cpu(const SplitKvPlan& splits) {
    ThreadPool threads(1);
    CpuPagedAttention attention;
    std::vector<float> out(plan_.rows.size() * kHeads * kHeadDim, NAN);
    attention.Run(threads, plan_, splits, items_, *pool_, kLayer, qkv_.data(), kHeads, out.data());
    return out;
  }

  std::vector<float> Gpu(const SplitKvPlan& splits) {
    const cuda::SplitKvMeta meta =
        cuda::BuildSplitKvMeta(plan_, splits, items_, kHeads / kKvHeads, kKvHeads);
    DeviceBuffer rows, pages, items, split_list, partials, out;
    EXPECT_TRUE(rows.Upload(meta.rows).ok());
    EXPECT_TRUE(pages.Upload(meta.page_lists).ok());
    EXPECT_TRUE(items.Upload(meta.items).ok());
    EXPECT_TRUE(split_list.Upload(meta.splits).ok());
    EXPECT_TRUE(partials.Reserve(meta.partial_slots * (2 + kHeadDim) * sizeof(float)).ok());
    const size_t values = plan_.rows.size() * kHeads * kHeadDim;
    EXPECT_TRUE(out.Reserve(values * sizeof(uint16_t)).ok());
    float* p = partials.as<float>();
    const cuda::SplitKvPartials parts{p, p + meta.partial_slots, p + 2 * meta.partial_slots};
    EXPECT_EQ(cuda::SplitKvAttention(qkv_device_.as<float>(), kHeads, kKvHeads, kHeadDim,
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

  std::optional<KvPool> pool_;
  std::vector<SequenceState> seqs_;
  std::vector<StepItem> items_;
  StepPlan plan_;
  std::vector<float> qkv_;
  DeviceBuffer arena_, qkv_device_;
};

TEST_F(SplitKvAttentionTest, EverySplitCountMatchesTheCpu) {
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

TEST_F(SplitKvAttentionTest, TheEnginesPlanMatchesTheCpu) {
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

}  // namespace
}  // namespace catserve::engine
