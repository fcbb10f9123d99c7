// The attention routes of a step (engine/cuda/attention_routes.h), on the host: which items go to
// which kernel, the split-KV items renumbered, and FlashInfer's paged views, tiles and merge,
// emulated key by key as FlashInfer's decode reads them (flashinfer_decode.h), against the CPU's
// paged attention. Needs no device: it checks the metadata the device kernels will read.
#include "engine/cuda/attention_routes.h"

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "engine/cpu/cpu_paged_attention.h"
#include "engine/kernels/thread_pool.h"
#include "engine/kv/page_layout.h"
#include "gtest/gtest.h"
#include "tests/common/paged_attention_case.h"

namespace catserve::engine::cuda {
namespace {

using Case = catserve::testing::PagedAttentionCase;
constexpr int kLayer = Case::kLayer, kPageEntries = Case::kPageEntries;
// The case's prefill (23 tokens at chunk 4) has 10 decoder rows, its decodes 1 or 2.
constexpr int kMinRows = 8;

class AttentionRoutesTest : public ::testing::Test {
 protected:
  void Build(int longest) {
    ASSERT_NO_FATAL_FAILURE(case_.Build(KvDtype::kFp32, 31, {4, 2, 64}, longest));
    splits_.Build(case_.plan, 132);
    meta_ = BuildSplitKvMeta(case_.plan, splits_, case_.items, group(), case_.shape.kv_heads);
  }
  int group() const { return case_.shape.heads / case_.shape.kv_heads; }
  int row_width() const {
    return (case_.shape.heads + 2 * case_.shape.kv_heads) * case_.shape.head_dim;
  }

  std::vector<float> Cpu() {
    ThreadPool threads(1);
    CpuPagedAttention attention;
    std::vector<float> out(case_.plan.rows.size() * case_.shape.heads * case_.shape.head_dim);
    attention.Run(threads, case_.plan, splits_, case_.items, *case_.pool, kLayer, case_.qkv.data(),
                  case_.shape.heads, out.data());
    return out;
  }

  // FlashInfer's block over keys [begin, end) of request `t` of a paged view, for q head h: its
  // normalised output and log2-sum-exp, as the decode kernel leaves them.
  void Block(const std::vector<int32_t>& indptr, const std::vector<int32_t>& pages, int t, int h,
             int begin, int end, std::vector<double>& out, double& lse2) {
    const int D = case_.shape.head_dim, kvh = h / group();
    const float* q = case_.qkv.data() + static_cast<size_t>(t) * row_width() + h * D;
    std::vector<double> scores;
    double m = -std::numeric_limits<double>::infinity();
    for (int key = begin; key < end; ++key) {
      const int page = pages[indptr[t] + key / kPageEntries], slot = key % kPageEntries;
      const float* k = reinterpret_cast<const float*>(case_.pool->page_data(page)) +
                       PageValueIndex(kLayer, 0, kvh, slot, case_.shape.kv_heads, kPageEntries, D);
      double s = 0;
      for (int d = 0; d < D; ++d) s += static_cast<double>(q[d]) * k[d];
      scores.push_back(s / std::sqrt(static_cast<double>(D)));
      m = std::max(m, scores.back());
    }
    out.assign(D, 0.0);
    double sum = 0;
    for (int key = begin; key < end; ++key) {
      const int page = pages[indptr[t] + key / kPageEntries], slot = key % kPageEntries;
      const float* v = reinterpret_cast<const float*>(case_.pool->page_data(page)) +
                       PageValueIndex(kLayer, 1, kvh, slot, case_.shape.kv_heads, kPageEntries, D);
      const double w = std::exp(scores[key - begin] - m);
      sum += w;
      for (int d = 0; d < D; ++d) out[d] += w * v[d];
    }
    for (double& o : out) o /= sum;
    lse2 = (m + std::log(sum)) / std::log(2.0);
  }

  // The rows FlashInfer attends, from the routes alone: its blocks, then the merge.
  std::vector<float> Emulate(const AttentionRoutes& r) {
    const int H = case_.shape.heads, D = case_.shape.head_dim;
    std::vector<float> out(r.compressed_last_len.size() * H * D, NAN);
    for (const FlashInferRow& row : r.flashinfer_rows) {
      const int t = row.row;
      const int kc = LengthOf(r.compressed_indptr, r.compressed_last_len, t);
      const int kl = LengthOf(r.local_indptr, r.local_last_len, t);
      EXPECT_EQ(row.tiles, (kc + kFlashInferTileKeys - 1) / kFlashInferTileKeys);
      EXPECT_EQ(row.local >= 0, kl > 0);
      for (int h = 0; h < H; ++h) {
        std::vector<std::vector<double>> outs;
        std::vector<double> lses;
        for (int k = 0; k < row.tiles; ++k) {
          EXPECT_EQ(r.tile_request[row.first_tile + k], t);
          EXPECT_EQ(r.tile_index[row.first_tile + k], k);
          outs.emplace_back();
          lses.emplace_back();
          Block(r.compressed_indptr, r.compressed_pages, t, h, k * kFlashInferTileKeys,
                std::min(kc, (k + 1) * kFlashInferTileKeys), outs.back(), lses.back());
        }
        if (row.local >= 0) {
          EXPECT_EQ(r.local_request[row.local], t);
          outs.emplace_back();
          lses.emplace_back();
          Block(r.local_indptr, r.local_pages, t, h, 0, kl, outs.back(), lses.back());
        }
        double m = -std::numeric_limits<double>::infinity(), den = 0;
        for (double l : lses) m = std::max(m, l);
        std::vector<double> acc(D, 0.0);
        for (size_t b = 0; b < outs.size(); ++b) {
          const double w = std::exp2(lses[b] - m);
          den += w;
          for (int d = 0; d < D; ++d) acc[d] += w * outs[b][d];
        }
        // A row with no block (a graph's padding) is merged from nothing: zeros, as on the GPU.
        for (int d = 0; d < D; ++d) {
          out[(static_cast<size_t>(t) * H + h) * D + d] =
              outs.empty() ? 0.0f : static_cast<float>(acc[d] / den);
        }
      }
    }
    return out;
  }

  // FlashInfer's kv_len of request t: (pages - 1) * page_entries + last, 0 without pages.
  static int LengthOf(const std::vector<int32_t>& indptr, const std::vector<int32_t>& last, int t) {
    const int pages = indptr[t + 1] - indptr[t];
    return pages == 0 ? 0 : (pages - 1) * kPageEntries + last[t];
  }

  Case case_;
  SplitKvPlan splits_;
  SplitKvMeta meta_;
};

TEST_F(AttentionRoutesTest, EachItemGoesToOneKernelByItsOwnRows) {
  ASSERT_NO_FATAL_FAILURE(Build(49));
  const AttentionRoutes all_flashinfer = RouteAttention(case_.plan, meta_,
                                                        {.flashinfer = true,
                                                         .prefill = false,
                                                         .page_entries = kPageEntries,
                                                         .prefill_min_rows = kMinRows});
  const AttentionRoutes mixed = RouteAttention(case_.plan, meta_,
                                               {.flashinfer = true,
                                                .prefill = true,
                                                .page_entries = kPageEntries,
                                                .prefill_min_rows = kMinRows});
  const AttentionRoutes own = RouteAttention(case_.plan, meta_,
                                             {.flashinfer = false,
                                              .prefill = false,
                                              .page_entries = kPageEntries,
                                              .prefill_min_rows = kMinRows});
  for (size_t i = 0; i < case_.items.size(); ++i) {
    const bool long_item = meta_.items[i].rows >= kMinRows;  // the 23-token prefill
    EXPECT_EQ(all_flashinfer.item_kernel[i], AttentionKernel::kFlashInfer) << i;
    EXPECT_EQ(mixed.item_kernel[i],
              long_item ? AttentionKernel::kPrefill : AttentionKernel::kFlashInfer)
        << i;
    EXPECT_EQ(own.item_kernel[i], AttentionKernel::kSplitKv) << i;
  }
  EXPECT_EQ(mixed.prefill_items, std::vector<int32_t>{2});
  EXPECT_TRUE(all_flashinfer.split_items.empty());
  // On its own kernels the split-KV lists are the plan's.
  ASSERT_EQ(own.split_items.size(), meta_.items.size());
  ASSERT_EQ(own.splits.size(), meta_.splits.size());
  for (size_t s = 0; s < own.splits.size(); ++s) {
    EXPECT_EQ(own.splits[s].item, meta_.splits[s].item);
    EXPECT_EQ(own.splits[s].begin, meta_.splits[s].begin);
  }
}

TEST_F(AttentionRoutesTest, SplitKvItemsAreRenumberedWithTheirSplits) {
  ASSERT_NO_FATAL_FAILURE(Build(Case::kLongest));
  // Prefill on, FlashInfer off: the 23-row item leaves the split-KV lists.
  const AttentionRoutes r = RouteAttention(case_.plan, meta_,
                                           {.flashinfer = false,
                                            .prefill = true,
                                            .page_entries = kPageEntries,
                                            .prefill_min_rows = kMinRows});
  ASSERT_EQ(r.split_items.size(), meta_.items.size() - 1);
  size_t next = 0;
  for (size_t i = 0, k = 0; i < meta_.items.size(); ++i) {
    if (i == 2) continue;
    const SplitKvItem& want = meta_.items[i];
    const SplitKvItem& got = r.split_items[k];
    EXPECT_EQ(got.first_row, want.first_row);
    EXPECT_EQ(got.partial_slot, want.partial_slot);
    EXPECT_EQ(got.first_split, static_cast<int>(next));
    ASSERT_EQ(got.splits, want.splits);
    for (int s = 0; s < want.splits; ++s) {
      EXPECT_EQ(r.splits[next + s].item, static_cast<int>(k));
      EXPECT_EQ(r.splits[next + s].begin, meta_.splits[want.first_split + s].begin);
      EXPECT_EQ(r.splits[next + s].end, meta_.splits[want.first_split + s].end);
    }
    next += want.splits;
    ++k;
  }
  EXPECT_EQ(r.splits.size(), next);
}

TEST_F(AttentionRoutesTest, FlashInferViewsTilesAndMergeComputeTheCpusAttention) {
  for (int longest : {49, 255, 256, 257, Case::kLongest}) {
    SCOPED_TRACE(longest);
    ASSERT_NO_FATAL_FAILURE(Build(longest));
    for (bool prefill : {false, true}) {
      const AttentionRoutes r = RouteAttention(case_.plan, meta_,
                                               {.flashinfer = true,
                                                .prefill = prefill,
                                                .page_entries = kPageEntries,
                                                .prefill_min_rows = kMinRows});
      const std::vector<float> want = Cpu(), got = Emulate(r);
      int attended = 0;
      for (size_t t = 0; t < case_.plan.rows.size(); ++t) {
        const bool on = r.item_kernel[case_.plan.rows[t].item] == AttentionKernel::kFlashInfer;
        // Rows of other routes have no pages in either view.
        if (!on) {
          EXPECT_EQ(r.compressed_indptr[t + 1], r.compressed_indptr[t]);
          EXPECT_EQ(r.local_indptr[t + 1], r.local_indptr[t]);
          continue;
        }
        ++attended;
        const size_t width = case_.shape.heads * case_.shape.head_dim;
        for (size_t i = t * width; i < (t + 1) * width; ++i) {
          ASSERT_NEAR(got[i], want[i], 1e-4 * std::abs(want[i]) + 1e-5) << "row " << t;
        }
      }
      int want_rows = 0;
      for (size_t i = 0; i < case_.items.size(); ++i) {
        if (!prefill || meta_.items[i].rows < kMinRows) want_rows += meta_.items[i].rows;
      }
      EXPECT_EQ(attended, static_cast<int>(r.flashinfer_rows.size()));
      EXPECT_EQ(attended, want_rows);
    }
  }
}

TEST_F(AttentionRoutesTest, PaddedForAGraphTheStepsRowsComputeTheSame) {
  ASSERT_NO_FATAL_FAILURE(Build(Case::kLongest));
  const AttentionRoutes r = RouteAttention(
      case_.plan, meta_, {.flashinfer = true, .prefill = false, .page_entries = kPageEntries});
  AttentionRoutes padded = r;
  const int rows = static_cast<int>(case_.plan.rows.size());
  const int tiles = static_cast<int>(r.tile_request.size());
  const int local_pages = static_cast<int>(r.local_pages.size());
  PadForGraph(padded, 16, 2 * tiles, local_pages + 40);
  // Every list but the compressed pages has the graph's length.
  ASSERT_EQ(padded.compressed_indptr.size(), 17u);
  ASSERT_EQ(padded.local_indptr.size(), 17u);
  ASSERT_EQ(padded.compressed_last_len.size(), 16u);
  ASSERT_EQ(padded.local_last_len.size(), 16u);
  ASSERT_EQ(padded.flashinfer_rows.size(), 16u);
  ASSERT_EQ(padded.tile_request.size(), static_cast<size_t>(2 * tiles));
  ASSERT_EQ(padded.tile_valid.size(), static_cast<size_t>(2 * tiles));
  ASSERT_EQ(padded.local_request.size(), 16u);
  ASSERT_EQ(padded.local_valid.size(), 16u);
  ASSERT_EQ(padded.local_pages.size(), static_cast<size_t>(local_pages + 40));
  EXPECT_EQ(padded.compressed_pages, r.compressed_pages);
  // The step's blocks run, the padding's do not, and every block names a request of the graph.
  for (int k = 0; k < 2 * tiles; ++k) {
    EXPECT_EQ(padded.tile_valid[k], k < tiles ? 1 : 0) << k;
    EXPECT_LT(padded.tile_request[k], 16);
  }
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(padded.local_valid[j], j < static_cast<int>(r.local_request.size()) ? 1 : 0) << j;
    EXPECT_LT(padded.local_request[j], 16);
  }
  const std::vector<float> want = Emulate(r), got = Emulate(padded);
  const size_t width = case_.shape.heads * case_.shape.head_dim;
  for (size_t i = 0; i < rows * width; ++i) ASSERT_EQ(got[i], want[i]) << i;
  for (size_t i = rows * width; i < 16 * width; ++i) ASSERT_EQ(got[i], 0.0f) << i;
  for (int t = rows; t < 16; ++t) {
    EXPECT_EQ(LengthOf(padded.compressed_indptr, padded.compressed_last_len, t), 0);
    EXPECT_EQ(LengthOf(padded.local_indptr, padded.local_last_len, t), 0);
  }
}

TEST_F(AttentionRoutesTest, LongRowsSpanSeveralTiles) {
  ASSERT_NO_FATAL_FAILURE(Build(Case::kLongest));
  const AttentionRoutes r = RouteAttention(case_.plan, meta_,
                                           {.flashinfer = true,
                                            .prefill = true,
                                            .page_entries = kPageEntries,
                                            .prefill_min_rows = kMinRows});
  int most = 0;
  for (const FlashInferRow& row : r.flashinfer_rows) most = std::max(most, row.tiles);
  EXPECT_GE(most, Case::kLongest / kFlashInferTileKeys + 1);  // 700 keys: 3 tiles
}

}  // namespace
}  // namespace catserve::engine::cuda
