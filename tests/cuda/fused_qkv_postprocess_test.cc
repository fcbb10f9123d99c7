// cuda::QkvPostprocess, the one pass that finishes a qkv row and stores its K/V in the cache,
// against the CPU engine's own steps (bias, RmsNorm of q and k heads, RopeTable::Apply, Bf16Bits)
// on random non-zero inputs: GQA and MHA heads shapes (more than one head block of the kernel),
// head sizes 16 to 128, with and without bias and qk-norm, with the cache store (the decoder: k
// and v go to the cache only, q back into qkv) and without (the compressor: everything back into
// qkv). The arena starts as NaN everywhere: every value of every row's entry must be written, and
// nothing else. Skips without a device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/kernels.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/kv/bf16.h"
#include "engine/kv/page_layout.h"
#include "gtest/gtest.h"
#include "tests/cuda/no_device.h"

namespace catserve::engine {
namespace {

using cuda::DeviceBuffer;

constexpr uint16_t kBf16Nan = 0x7fc0;
constexpr int kLayers = 3, kLayer = 1, kPageEntries = 4, kMaxPos = 18;
constexpr float kQkEps = 1e-5f;

struct Shape {
  int heads, kv_heads, head_dim;
};
struct Variant {
  Shape shape;
  bool bias;
  bool qk_norm;
};

std::string Name(const ::testing::TestParamInfo<Variant>& info) {
  const Variant& v = info.param;
  return absl::StrCat("h", v.shape.heads, "kv", v.shape.kv_heads, "d", v.shape.head_dim,
                      v.bias ? "_bias" : "_nobias", v.qk_norm ? "_qknorm" : "_noqknorm");
}

float Bf16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

// Uniform in [-2, -0.1] or [0.1, 2]: never zero, so a value left untouched or zeroed shows.
std::vector<float> NonZero(std::mt19937& rng, size_t n) {
  std::uniform_real_distribution<float> mag(0.1f, 2.0f);
  std::bernoulli_distribution sign(0.5);
  std::vector<float> v(n);
  for (float& x : v) x = sign(rng) ? mag(rng) : -mag(rng);
  return v;
}

class FusedQkvPostprocessTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA_DEVICE();
    const Variant& v = GetParam();
    heads_ = v.shape.heads;
    kv_heads_ = v.shape.kv_heads;
    head_dim_ = v.shape.head_dim;
    width_ = (heads_ + 2 * kv_heads_) * head_dim_;
    std::mt19937 rng(7 + heads_ * 131 + kv_heads_ * 17 + head_dim_ + v.bias * 3 + v.qk_norm * 5);
    qkv_ = NonZero(rng, static_cast<size_t>(kRows) * width_);
    if (v.bias) bias_ = NonZero(rng, width_);
    if (v.qk_norm) {
      q_norm_ = NonZero(rng, head_dim_);
      k_norm_ = NonZero(rng, head_dim_);
    }
    std::uniform_int_distribution<int> pos(0, kMaxPos - 1);
    positions_.resize(kRows);
    for (int32_t& p : positions_) p = pos(rng);
    positions_[0] = 0;  // the compressed entries' position
    // Rows go to distinct (page, slot)s of kPages pages, in shuffled order, so that some pages
    // keep untouched slots.
    std::vector<int> order(kPages * kPageEntries);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    slots_.resize(kRows);
    for (int r = 0; r < kRows; ++r) slots_[r] = {order[r] / kPageEntries, order[r] % kPageEntries};
    values_per_page_ = static_cast<size_t>(kLayers) * 2 * kv_heads_ * kPageEntries * head_dim_;
    rope_ = RopeTable(head_dim_, 10000.0, kMaxPos);
  }

  // The CPU engine's post-processing of every row (CpuEngine::AttentionInputs).
  std::vector<float> Reference() const {
    std::vector<float> want = qkv_;
    for (int r = 0; r < kRows; ++r) {
      float* row = want.data() + static_cast<size_t>(r) * width_;
      if (!bias_.empty()) {
        for (int i = 0; i < width_; ++i) row[i] += bias_[i];
      }
      if (!q_norm_.empty()) {
        RmsNorm(row, q_norm_.data(), heads_, head_dim_, kQkEps, row);
        float* k = row + heads_ * head_dim_;
        RmsNorm(k, k_norm_.data(), kv_heads_, head_dim_, kQkEps, k);
      }
      rope_.Apply(row, heads_ + kv_heads_, positions_[r]);
    }
    return want;
  }

  // Runs the kernel; fills got_ (qkv after) and arena_ (the whole arena after, bf16 bits).
  void Run(bool write_kv) {
    DeviceBuffer qkv, bias, q_norm, k_norm, positions, cos, sin, slots, arena;
    ASSERT_TRUE(qkv.Upload(qkv_).ok());
    if (!bias_.empty()) {
      ASSERT_TRUE(bias.Upload(bias_).ok());
    }
    if (!q_norm_.empty()) {
      ASSERT_TRUE(q_norm.Upload(q_norm_).ok());
      ASSERT_TRUE(k_norm.Upload(k_norm_).ok());
    }
    ASSERT_TRUE(positions.Upload(positions_).ok());
    ASSERT_TRUE(cos.Upload(rope_.cos_table()).ok());
    ASSERT_TRUE(sin.Upload(rope_.sin_table()).ok());
    ASSERT_TRUE(slots.Upload(slots_).ok());
    const std::vector<uint16_t> poison(kPages * values_per_page_, kBf16Nan);
    ASSERT_TRUE(arena.Upload(poison).ok());
    cuda::KvWrite kv;
    if (write_kv) {
      kv = {slots.as<cuda::KvSlot>(), kLayer, kPageEntries, values_per_page_, arena.as<uint16_t>()};
    }
    ASSERT_EQ(cuda::QkvPostprocess(qkv.as<float>(), kRows, heads_, kv_heads_, head_dim_,
                                   bias.as<float>(), q_norm.as<float>(), k_norm.as<float>(), kQkEps,
                                   positions.as<int32_t>(), cos.as<float>(), sin.as<float>(), kv,
                                   nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    got_.assign(qkv_.size(), NAN);
    ASSERT_EQ(
        cudaMemcpy(got_.data(), qkv.data(), got_.size() * sizeof(float), cudaMemcpyDeviceToHost),
        cudaSuccess);
    arena_.assign(poison.size(), 0);
    ASSERT_EQ(cudaMemcpy(arena_.data(), arena.data(), arena_.size() * sizeof(uint16_t),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
  }

  // qkv after the kernel against the reference: fp32 within rsqrtf's, fused multiply-adds' and
  // the summation order's rounding (a few ulps of values up to about 10, cancellation in RoPE
  // included). Only the first `columns` columns of each row when columns >= 0.
  void ExpectQkvMatches(const std::vector<float>& want, int columns = -1) const {
    for (size_t i = 0; i < want.size(); ++i) {
      if (columns >= 0 && static_cast<int>(i % width_) >= columns) continue;
      ASSERT_TRUE(std::isfinite(got_[i])) << "qkv value " << i;
      ASSERT_NEAR(got_[i], want[i], 2e-5f * std::abs(want[i]) + 2e-5f)
          << "row " << i / width_ << " column " << i % width_;
    }
  }

  int heads_ = 0, kv_heads_ = 0, head_dim_ = 0, width_ = 0;
  static constexpr int kRows = 11, kPages = 4;
  size_t values_per_page_ = 0;
  std::vector<float> qkv_, bias_, q_norm_, k_norm_;
  std::vector<int32_t> positions_;
  std::vector<cuda::KvSlot> slots_;
  RopeTable rope_;
  std::vector<float> got_;
  std::vector<uint16_t> arena_;
};

TEST_P(FusedQkvPostprocessTest, PostprocessesAndWritesTheCache) {
  // The kernel's fp32 k and v, from the call without a cache store (checked below and by
  // WithoutSlotsLeavesTheArenaAlone): what the cache must hold, rounded.
  ASSERT_NO_FATAL_FAILURE(Run(/*write_kv=*/false));
  const std::vector<float> fp32 = got_;
  ASSERT_NO_FATAL_FAILURE(Run(/*write_kv=*/true));
  const std::vector<float> want = Reference();
  const int q_columns = heads_ * head_dim_;
  ASSERT_NO_FATAL_FAILURE(ExpectQkvMatches(want, q_columns));
  // q heads post-processed in qkv as without the store; k and v columns left as they were.
  for (size_t i = 0; i < qkv_.size(); ++i) {
    const int column = static_cast<int>(i % width_);
    ASSERT_EQ(got_[i], column < q_columns ? fp32[i] : qkv_[i])
        << "row " << i / width_ << " column " << column;
  }

  // Every row's k and v heads in its cache entry: the bf16 of the kernel's own fp32 value,
  // exactly, and within one bf16 rounding of the reference.
  std::vector<bool> written(arena_.size(), false);
  for (int r = 0; r < kRows; ++r) {
    const cuda::KvSlot at = slots_[r];
    for (int kv = 0; kv < 2; ++kv) {
      for (int kvh = 0; kvh < kv_heads_; ++kvh) {
        const size_t base =
            static_cast<size_t>(at.page) * values_per_page_ +
            PageValueIndex(kLayer, kv, kvh, at.slot, kv_heads_, kPageEntries, head_dim_);
        const size_t col = static_cast<size_t>(heads_ + kv * kv_heads_ + kvh) * head_dim_;
        for (int d = 0; d < head_dim_; ++d) {
          const size_t q = static_cast<size_t>(r) * width_ + col + d;
          const uint16_t bits = arena_[base + d];
          written[base + d] = true;
          ASSERT_EQ(bits, Bf16Bits(fp32[q]))
              << "row " << r << (kv == 0 ? " k" : " v") << " head " << kvh << " value " << d;
          ASSERT_NEAR(Bf16ToFloat(bits), want[q], std::abs(want[q]) / 256 + 2e-5f)
              << "row " << r << (kv == 0 ? " k" : " v") << " head " << kvh << " value " << d;
        }
      }
    }
  }
  for (size_t i = 0; i < arena_.size(); ++i) {
    if (!written[i]) {
      ASSERT_EQ(arena_[i], kBf16Nan) << "arena value " << i << " was written";
    }
  }
}

TEST_P(FusedQkvPostprocessTest, WithoutSlotsLeavesTheArenaAlone) {
  // The compressor's call: every column post-processed in qkv, no cache store.
  ASSERT_NO_FATAL_FAILURE(Run(/*write_kv=*/false));
  ASSERT_NO_FATAL_FAILURE(ExpectQkvMatches(Reference()));
  for (size_t i = 0; i < arena_.size(); ++i) ASSERT_EQ(arena_[i], kBf16Nan) << "arena value " << i;
}

std::vector<Variant> Variants() {
  const Shape shapes[] = {
      {8, 2, 64},    // GQA, group 4, 12 heads: two head blocks
      {16, 2, 128},  // GQA, group 8, the largest head
      {6, 3, 16},    // GQA, group 2, a head smaller than a warp's pairs
      {4, 4, 128},   // MHA, 12 heads
      {5, 5, 96},    // MHA, 15 heads, a second pair for half the lanes
  };
  std::vector<Variant> out;
  for (const Shape& s : shapes) {
    for (bool bias : {false, true}) {
      for (bool qk_norm : {false, true}) out.push_back({s, bias, qk_norm});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedQkvPostprocessTest, ::testing::ValuesIn(Variants()), Name);

TEST(FusedQkvPostprocessShapeTest, RejectsHeadsItCannotHold) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (int head_dim : {cuda::kMaxHeadDim + 2, 63}) {
    EXPECT_EQ(cuda::QkvPostprocess(nullptr, 1, 1, 1, head_dim, nullptr, nullptr, nullptr, kQkEps,
                                   nullptr, nullptr, nullptr, cuda::KvWrite{}, nullptr),
              cudaErrorInvalidValue)
        << "head_dim " << head_dim;
  }
}

}  // namespace
}  // namespace catserve::engine
