// FlashInfer's paged decode as catserve runs it (engine/cuda/flashinfer_decode.h), on the device,
// against the CPU's paged attention on the same bf16 pages: every decoder row of the
// PagedAttentionCase routed to FlashInfer (attention_routes.h), for the head shapes FlashInfer is
// built for, with the chunk-1 decode short (one tile) and long (700 keys: three tiles, the last
// partial). Rows of other routes must stay untouched. Skips without a device, and where this build
// has no FlashInfer (which the GPU proof counts as a failure: it fails on any skip).
#include "engine/cuda/flashinfer_decode.h"

#include <cuda_runtime_api.h>

#include <bit>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_paged_attention.h"
#include "engine/cuda/attention_routes.h"
#include "engine/cuda/device_buffer.h"
#include "engine/kernels/thread_pool.h"
#include "gtest/gtest.h"
#include "tests/common/paged_attention_case.h"
#include "tests/cuda/no_device.h"

namespace catserve::engine::cuda {
namespace {

using Case = catserve::testing::PagedAttentionCase;
constexpr int kLayer = Case::kLayer, kPageEntries = Case::kPageEntries;
constexpr uint16_t kPoison = 0x7fc1;  // a bf16 NaN

class FlashInferDecodeTest : public ::testing::TestWithParam<Case::Shape> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA_DEVICE();
    const Case::Shape s = GetParam();
    if (!FlashInferDecodeSupports(s.head_dim, s.heads / s.kv_heads)) {
      GTEST_SKIP() << "this build has no FlashInfer decode for " << Case::Name(s);
    }
  }

  // Runs the case with the chunk-1 decode at `longest` cached entries; items with at least
  // `prefill_min_rows` rows go elsewhere (their rows must stay poisoned).
  void Check(int longest, bool prefill) {
    Case c;
    ASSERT_NO_FATAL_FAILURE(c.Build(KvDtype::kBf16, 41, GetParam(), longest));
    const int H = c.shape.heads, D = c.shape.head_dim, group = H / c.shape.kv_heads;
    SplitKvPlan splits;
    splits.Build(c.plan, 132);
    const SplitKvMeta meta = BuildSplitKvMeta(c.plan, splits, c.items, group, c.shape.kv_heads);
    const AttentionRoutes r = RouteAttention(c.plan, meta,
                                             {.flashinfer = true,
                                              .prefill = prefill,
                                              .page_entries = kPageEntries,
                                              .prefill_min_rows = 8});

    ThreadPool threads(1);
    CpuPagedAttention attention;
    std::vector<float> want(c.plan.rows.size() * H * D);
    attention.Run(threads, c.plan, splits, c.items, *c.pool, kLayer, c.qkv.data(), H, want.data());

    DeviceBuffer arena, qkv, ci, cp, cl, li, lp, ll, treq, tidx, lreq, keys, rows, scratch, out;
    ASSERT_TRUE(arena.Upload(c.pool->page_data(0), c.pool->total_bytes()).ok());
    ASSERT_TRUE(qkv.Upload(c.qkv).ok());
    auto up = [](DeviceBuffer& b, const auto& v) {
      // An empty list still needs a valid pointer.
      if (v.empty()) return b.Reserve(16).ok();
      return b.Upload(v).ok();
    };
    ASSERT_TRUE(up(ci, r.compressed_indptr) && up(cp, r.compressed_pages) &&
                up(cl, r.compressed_last_len) && up(li, r.local_indptr) && up(lp, r.local_pages) &&
                up(ll, r.local_last_len) && up(treq, r.tile_request) && up(tidx, r.tile_index) &&
                up(lreq, r.local_request) && up(keys, std::vector<int32_t>{kFlashInferTileKeys}) &&
                up(rows, r.flashinfer_rows));
    const size_t tiles = r.tile_request.size(), locals = r.local_request.size();
    ASSERT_TRUE(
        scratch.Reserve(std::max<size_t>(FlashInferScratchFloats(tiles, locals, H, D), 1) * 4)
            .ok());
    const size_t values = c.plan.rows.size() * H * D;
    std::vector<uint16_t> bits(values, kPoison);
    ASSERT_TRUE(out.Upload(bits).ok());
    const FlashInferDecodeMeta m{.decoder_rows = static_cast<int>(c.plan.rows.size()),
                                 .compressed_indptr = ci.as<int32_t>(),
                                 .compressed_pages = cp.as<int32_t>(),
                                 .compressed_last_len = cl.as<int32_t>(),
                                 .local_indptr = li.as<int32_t>(),
                                 .local_pages = lp.as<int32_t>(),
                                 .local_last_len = ll.as<int32_t>(),
                                 .tile_request = treq.as<int32_t>(),
                                 .tile_index = tidx.as<int32_t>(),
                                 .tiles = static_cast<int>(tiles),
                                 .local_request = lreq.as<int32_t>(),
                                 .locals = static_cast<int>(locals),
                                 .tile_keys = keys.as<int32_t>(),
                                 .rows = rows.as<FlashInferRow>(),
                                 .num_rows = static_cast<int>(r.flashinfer_rows.size())};
    const FlashInferScratch sc = FlashInferScratchAt(scratch.as<float>(), tiles, locals, H, D);
    ASSERT_EQ(FlashInferDecode(qkv.as<float>(), H, c.shape.kv_heads, D, m, kLayer, kPageEntries,
                               c.pool->geometry().values_per_page(), arena.as<uint16_t>(), sc,
                               out.as<uint16_t>(), nullptr),
              cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(bits.data(), out.data(), values * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t t = 0; t < c.plan.rows.size(); ++t) {
      const bool on = r.item_kernel[c.plan.rows[t].item] == AttentionKernel::kFlashInfer;
      for (size_t i = t * H * D; i < (t + 1) * H * D; ++i) {
        if (!on) {
          ASSERT_EQ(bits[i], kPoison) << "row " << t << " is not FlashInfer's, value " << i;
          continue;
        }
        const float got = std::bit_cast<float>(static_cast<uint32_t>(bits[i]) << 16);
        // bf16 output: its rounding (2^-8 relative) plus the accumulation order's.
        ASSERT_NEAR(got, want[i], 5e-3 * std::abs(want[i]) + 1e-4) << "row " << t << ", " << i;
      }
    }
  }
};

TEST_P(FlashInferDecodeTest, EveryRowMatchesTheCpuInOneTile) { Check(49, false); }
TEST_P(FlashInferDecodeTest, EveryRowMatchesTheCpuOverSeveralTiles) {
  Check(Case::kLongest, false);
}
TEST_P(FlashInferDecodeTest, RowsOfOtherRoutesAreLeftAlone) { Check(Case::kLongest, true); }

// The shapes FlashInfer is built for: head_dim 64 and 128, groups 1, 2, 4 and 8; with 6 and 2 q
// heads, tile counts times heads that are not multiples of 4 (the scratch's alignment).
INSTANTIATE_TEST_SUITE_P(Shapes, FlashInferDecodeTest,
                         ::testing::Values(Case::Shape{4, 4, 64}, Case::Shape{4, 2, 128},
                                           Case::Shape{8, 2, 64}, Case::Shape{8, 1, 128},
                                           Case::Shape{6, 6, 64}, Case::Shape{2, 1, 128}),
                         [](const auto& info) { return Case::Name(info.param); });

}  // namespace
}  // namespace catserve::engine::cuda
