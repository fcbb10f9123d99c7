#include "engine/cuda/attention_routes.h"

#include <algorithm>

namespace catserve::engine::cuda {
namespace {

// Appends the pages of a run of `visible` entries starting at entry 0 of a region whose page list
// starts at page_lists[first]: ceil(visible / B) pages, the last holding visible - (n - 1) * B.
void AppendRun(const std::vector<int32_t>& page_lists, int first, int visible, int page_entries,
               std::vector<int32_t>& pages, std::vector<int32_t>& indptr,
               std::vector<int32_t>& last_len) {
  const int n = (visible + page_entries - 1) / page_entries;
  pages.insert(pages.end(), page_lists.begin() + first, page_lists.begin() + first + n);
  indptr.push_back(static_cast<int32_t>(pages.size()));
  last_len.push_back(n == 0 ? 0 : visible - (n - 1) * page_entries);
}

}  // namespace

AttentionRoutes RouteAttention(const StepPlan& plan, const SplitKvMeta& meta,
                               const AttentionRouteOptions& options) {
  AttentionRoutes r;
  const int num_items = static_cast<int>(meta.items.size());
  r.item_kernel.resize(num_items, AttentionKernel::kSplitKv);
  for (int i = 0; i < num_items; ++i) {
    if (options.prefill && meta.items[i].rows >= options.prefill_min_rows) {
      r.item_kernel[i] = AttentionKernel::kPrefill;
      r.prefill_items.push_back(i);
    } else if (options.flashinfer) {
      r.item_kernel[i] = AttentionKernel::kFlashInfer;
    }
  }

  // The split-KV items, renumbered.
  for (int i = 0; i < num_items; ++i) {
    if (r.item_kernel[i] != AttentionKernel::kSplitKv) continue;
    SplitKvItem it = meta.items[i];
    const int item = static_cast<int>(r.split_items.size());
    const int first = static_cast<int>(r.splits.size());
    for (int s = it.first_split; s < it.first_split + it.splits; ++s) {
      SplitKvSplit sp = meta.splits[s];
      sp.item = item;
      r.splits.push_back(sp);
    }
    it.first_split = first;
    r.split_items.push_back(it);
    r.split_max_item_rows = std::max(r.split_max_item_rows, it.rows);
  }

  // FlashInfer: a request per decoder row in both views.
  const int rows = static_cast<int>(meta.rows.size());
  r.compressed_indptr.assign(1, 0);
  r.local_indptr.assign(1, 0);
  std::vector<bool> on_flashinfer(rows, false);
  for (int i = 0; i < num_items; ++i) {
    if (r.item_kernel[i] != AttentionKernel::kFlashInfer) continue;
    const auto [first, end] = plan.item_rows[i];
    for (int t = first; t < end; ++t) on_flashinfer[t] = true;
  }
  for (int t = 0; t < rows; ++t) {
    const AttentionRow& m = meta.rows[t];
    const int compressed = on_flashinfer[t] ? m.visible_compressed : 0;
    const int local = on_flashinfer[t] ? m.visible_local : 0;
    AppendRun(meta.page_lists, m.compressed_pages, compressed, options.page_entries,
              r.compressed_pages, r.compressed_indptr, r.compressed_last_len);
    AppendRun(meta.page_lists, m.local_pages, local, options.page_entries, r.local_pages,
              r.local_indptr, r.local_last_len);
    if (!on_flashinfer[t]) continue;
    FlashInferRow row{.row = t,
                      .first_tile = static_cast<int32_t>(r.tile_request.size()),
                      .tiles = (compressed + kFlashInferTileKeys - 1) / kFlashInferTileKeys,
                      .local = -1};
    for (int k = 0; k < row.tiles; ++k) {
      r.tile_request.push_back(t);
      r.tile_index.push_back(k);
    }
    if (local > 0) {
      row.local = static_cast<int32_t>(r.local_request.size());
      r.local_request.push_back(t);
    }
    r.flashinfer_rows.push_back(row);
  }
  return r;
}

void PadForGraph(AttentionRoutes& r, int rows, int tile_blocks, int local_pages) {
  const int step_rows = static_cast<int>(r.compressed_last_len.size());
  for (int t = step_rows; t < rows; ++t) {
    r.compressed_indptr.push_back(r.compressed_indptr.back());
    r.compressed_last_len.push_back(0);
    r.local_indptr.push_back(r.local_indptr.back());
    r.local_last_len.push_back(0);
    r.flashinfer_rows.push_back({.row = t, .first_tile = 0, .tiles = 0, .local = -1});
  }
  r.tile_valid.assign(r.tile_request.size(), 1);
  r.tile_valid.resize(tile_blocks, 0);
  r.tile_request.resize(tile_blocks, 0);
  r.tile_index.resize(tile_blocks, 0);
  r.local_valid.assign(r.local_request.size(), 1);
  r.local_valid.resize(rows, 0);
  r.local_request.resize(rows, 0);
  r.local_pages.resize(local_pages, 0);
}

}  // namespace catserve::engine::cuda
