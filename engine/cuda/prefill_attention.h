// The decoder's paged attention for items with many rows (prefill), on tensor cores. The same
// function as SplitKvAttention (kernels.h) for every row, computed flash-attention-2 style: a
// block per (item, tile of 64 or 128 queries, kv head) holds its queries in bf16, streams the
// item's keys through shared memory 64 at a time and multiplies with mma.sync m16n8k16 (bf16
// operands, fp32 accumulation), the softmax online in registers. Plain pointers and ints, as
// kernels.h.
//
// Work of a 4096-token prompt at chunk 1 (4097 rows, row i sees compressed entries 0..i: a causal
// square), paper shape (24 heads of 64, MHA), per layer:
//   FLOPs: 2 products x 2 x 64 x 24 heads x 4097^2 / 2 = 51.6 GFLOP (12 layers: 0.62 TFLOP); whole
//     64-key tiles with the diagonal ones part masked add ~1.6% (128-query tiles ~3%).
//   exp2: 24 x 4097^2 / 2 = 0.20 G a layer, on the SFU's 16 a clock per SM.
//   Device memory, each byte once: q fp32 4097 x 1536 x 4 = 25 MB, K and V bf16 4097 x 24 x 64 x
//     2 x 2 = 25 MB, out bf16 12.6 MB: 63 MB. K/V are re-read by every q tile that sees them:
//     ~0.85 GB a layer from L2 with 64-query tiles, ~0.43 GB with 128 (one layer's K/V, 25 MB,
//     fits the H100's 50 MB L2).
//   Floors (H100 SXM, 132 SMs at ~1.75 GHz): mma.sync bf16 at ~660 TFLOP/s (2/3 of the wgmma
//     peak; FA2 reaches ~350 on H100 in practice): 80 us; exp2 at 3.7 G/s: 56 us; HBM 63 MB at
//     3.3 TB/s: 19 us; L2 0.43 GB at ~7 TB/s: 60 us. So ~0.1 ms a layer, ~1.2 ms for 12 layers at
//     the floor; at FA2's realised 35-50% of it, 2-4 ms for 12 layers (against 887 ms today).
//   None of these numbers is measured: the kernel has not run on a GPU yet.
#ifndef CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
#define CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/cuda/kernels.h"

namespace catserve::engine::cuda {

// One item (a sequence of the step) of PrefillAttention: decoder rows [first_row, first_row +
// rows), whose AttentionRows (rows_meta[first_row ...]) say what each row sees; its keys are its
// compressed entries [0, compressed_keys) (pages at page_lists[compressed_pages ...]) and its
// local entries [0, local_keys) (pages at page_lists[local_pages ...]). A row sees compressed
// entry e iff e < min(visible_compressed, compressed_keys) and local entry e iff
// e < min(visible_local, local_keys): with compressed_keys and local_keys the most any row of the
// item sees, exactly what SplitKvAttention's item sees. Every row of an item shares its page lists
// (as BuildSplitKvMeta makes them); the rows' own compressed_pages / local_pages are not read.
struct PrefillItem {
  int32_t first_row;
  int32_t rows;
  int32_t compressed_keys;
  int32_t local_keys;
  int32_t compressed_pages;
  int32_t local_pages;
};

// The PrefillItems of a step's SplitKvMeta (split_kv_meta.h): `items` and `rows` are its items and
// rows. Host code only.
inline std::vector<PrefillItem> PrefillItemsFor(const std::vector<SplitKvItem>& items,
                                                const std::vector<AttentionRow>& rows) {
  std::vector<PrefillItem> out;
  out.reserve(items.size());
  for (const SplitKvItem& it : items) {
    PrefillItem p{it.first_row, it.rows, it.compressed_keys, 0, 0, 0};
    if (it.rows > 0) {
      p.compressed_pages = rows[it.first_row].compressed_pages;
      p.local_pages = rows[it.first_row].local_pages;
    }
    for (int r = it.first_row; r < it.first_row + it.rows; ++r) {
      p.local_keys = std::max(p.local_keys, rows[r].visible_local);
    }
    out.push_back(p);
  }
  return out;
}

// The keys a block moves through shared memory at a time.
inline constexpr int kPrefillTileKeys = 64;

// The tile of queries one block takes (rows x q heads of a kv head's group, row major), when the
// caller leaves it to PrefillAttention: 128 (8 warps; half the re-reads of K/V from L2 of 64) when
// that still makes at least 256 blocks of the longest item, else 64 (4 warps).
inline int PrefillQueryTile(int max_item_rows, int heads, int kv_heads) {
  const long long queries = static_cast<long long>(max_item_rows) * (heads / kv_heads);
  return (queries + 127) / 128 * kv_heads >= 256 ? 128 : 64;
}

// Varlen paged attention of the decoder at layer `layer`, as SplitKvAttention computes it for every
// row (softmax over every key the row sees, scale 1/sqrt(head_dim); out [rows, heads * head_dim]
// bf16, written for every row of every item and nothing else) with q rounded to bf16 and the
// probabilities rounded to bf16 before they weight V (fp32 scores, sums and accumulators): within
// ~1e-2 relative L2 of the fp32 result. A row that sees no key gets zeros. An item's results do not
// depend on the other items of the step (no work is split across blocks).
//
// Grid: (kv_heads, ceil(max_item_rows * group / query_tile), num_items), query_tile / 16 warps of
// 16 queries each; the q tiles of an item are taken last first, so that the tiles seeing most keys
// start first. `max_item_rows`: the most rows of one item (an item's tiles beyond its rows return).
// `query_tile`: 64, 128, or 0 for PrefillQueryTile's choice. The results do not depend on it (bit
// for bit): every query runs the same 64-key tiles in the same order, and a tile that a query does
// not see leaves its state exactly as it was (its max, and so its rescale factor 1, unchanged; its
// weights 0 against finite values).
//
// Takes head_dim a multiple of 16 up to kMaxHeadDim, groups (heads / kv_heads) 1..kMaxGroup,
// values_per_page a multiple of 8, 16-byte aligned qkv and arena and a 4-byte aligned out; returns
// cudaErrorInvalidValue for anything else, enqueuing nothing (the engine routes an item here only
// when PrefillAttentionSupports takes the model's heads; its buffers meet the rest by
// construction).
cudaError_t PrefillAttention(const float* qkv, int heads, int kv_heads, int head_dim,
                             const AttentionRow* rows_meta, const PrefillItem* items, int num_items,
                             int max_item_rows, const int32_t* page_lists, int layer,
                             int page_entries, size_t values_per_page, const uint16_t* arena,
                             uint16_t* out, cudaStream_t stream, int query_tile = 0);

// Whether PrefillAttention takes this shape (the launch-independent part of its checks).
inline bool PrefillAttentionSupports(int heads, int kv_heads, int head_dim) {
  return heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && heads / kv_heads <= kMaxGroup &&
         head_dim > 0 && head_dim % 16 == 0 && head_dim <= kMaxHeadDim;
}

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
