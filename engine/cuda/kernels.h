// The CUDA backend's kernels of its own, behind plain launch functions (pointers and ints only,
// so that nvcc never sees Abseil). bf16 values cross this boundary as their 16 bits (uint16_t);
// every launcher enqueues on `stream` and returns the launch's error (cudaGetLastError).
//
// Conventions: activations in the residual stream and GEMM outputs are fp32, GEMM inputs bf16,
// except the gate/up GEMM's output, which only SiluMul reads: bf16.
// A "qkv" buffer is [rows, (heads + 2 * kv_heads) * head_dim] fp32 (q heads, k heads, v heads).
// KV pages are [layer][k|v][kv_head][slot][head_dim] bf16, `values_per_page` values a page.
#ifndef CATSERVE_ENGINE_CUDA_KERNELS_H_
#define CATSERVE_ENGINE_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace catserve::engine::cuda {

// Largest head_dim and GQA group the attention kernels take (checked when the engine is built).
inline constexpr int kMaxHeadDim = 128;
inline constexpr int kMaxGroup = 8;

// Where an input row comes from: row `row` of table `table` (0..2: bf16 tables t0..t2 of `width`
// columns; 3: the fp32 table t3, the fx of this step's chunks).
struct RowSource {
  int32_t table;
  int32_t row;
};
cudaError_t GatherRows(const RowSource* sources, int rows, int width, const uint16_t* t0,
                       const uint16_t* t1, const uint16_t* t2, const float* t3, float* out,
                       cudaStream_t stream);

// out[i] = bf16(x[r] / sqrt(mean(x[r]^2) + eps) * w) with r = row_map[i] (or i when row_map is
// null), for `rows` rows of `dim`.
cudaError_t RmsNormToBf16(const float* x, const int32_t* row_map, int rows, int dim, const float* w,
                          float eps, uint16_t* out, cudaStream_t stream);

// Per decoder row: the page and slot its K/V entry goes to; page -1 for a row that has none (a
// padding row of a step replayed from a CUDA graph), whose k and v are not stored.
struct KvSlot {
  int32_t page;
  int32_t slot;
};
// Where QkvPostprocess stores each row's k and v heads as bf16: row r's entry at slots[r] of
// layer `layer` in `arena` (pages of `page_entries` entries, `values_per_page` values). Null
// slots (the default): no store, as for the compressor, whose keys stay in qkv.
struct KvWrite {
  const KvSlot* slots = nullptr;
  int layer = 0;
  int page_entries = 0;
  size_t values_per_page = 0;
  uint16_t* arena = nullptr;
};

// One pass over each row of qkv: + bias (if not null) over every column; per-head RMSNorm of q
// and k heads with q_norm / k_norm (if not null, epsilon qk_eps); rotate-half RoPE of q and k
// heads at positions[row] with tables cos/sin [*, head_dim / 2]. Without a cache store (kv.slots
// null) every result goes back into qkv in place (fp32). With one (the decoder) the row's final k
// and v heads go, rounded to bf16, only to its cache entry, and only the q heads back into qkv:
// the decoder's attention reads q from qkv and every key and value, this step's included, from
// the cache, so qkv's k and v columns are left as the GEMM wrote them. head_dim even and at most
// kMaxHeadDim, else cudaErrorInvalidValue.
cudaError_t QkvPostprocess(float* qkv, int rows, int heads, int kv_heads, int head_dim,
                           const float* bias, const float* q_norm, const float* k_norm,
                           float qk_eps, const int32_t* positions, const float* rope_cos,
                           const float* rope_sin, KvWrite kv, cudaStream_t stream);

// Bidirectional attention of the compressor within each chunk: chunk c is rows
// [first_row[c], first_row[c] + length[c]) of qkv (MHA). out [rows, heads * head_dim] bf16.
cudaError_t ChunkAttention(const float* qkv, const int32_t* first_row, const int32_t* length,
                           int chunks, int max_length, int heads, int head_dim, uint16_t* out,
                           cudaStream_t stream);

// What a decoder row attends to: compressed entries [0, visible_compressed) of its sequence,
// whose pages are page_lists[compressed_pages ...], and local slots [0, visible_local), pages
// at page_lists[local_pages ...].
struct AttentionRow {
  int32_t visible_compressed;
  int32_t visible_local;
  int32_t compressed_pages;
  int32_t local_pages;
};
// The split-KV decomposition of engine/split_kv_plan.h, as device metadata. An item (a sequence
// of the step) owns decoder rows [first_row, first_row + rows) and splits [first_split,
// first_split + splits); its keys are numbered compressed entries first (keys < compressed_keys)
// then local ones. Partials are laid out as on the CPU (CpuPagedAttention): the query slot of
// (split s, kv head, row t, q head g of the group) is
//   partial_slot + (s - first_split) * rows * group * kv_heads + kvh * rows * group
//   + (t - first_row) * group + g.
struct SplitKvItem {
  int32_t first_row;
  int32_t rows;
  int32_t compressed_keys;
  int32_t first_split;
  int32_t splits;
  int32_t partial_slot;
};
struct SplitKvSplit {
  int32_t item;
  int32_t begin;  // first key
  int32_t end;    // one past the last key
};
// Where the partials live: slot i's max at max[i], sum at sum[i], accumulator at
// acc[i * head_dim ...] (fp32, the layout of SplitKvPlan's contract).
struct SplitKvPartials {
  float* max;
  float* sum;
  float* acc;
};
// Varlen paged attention of the decoder at layer `layer`, split-KV: blocks per (split, kv head)
// (and up to 1024 over an item's rows, `max_item_rows` the most rows any item has) score every
// query of the split's item in that head group against the split's keys that each row sees
// (AttentionRow) and leave a partial (online softmax, fp32); then one block per (item, kv head)
// merges the item's partials in split order exactly as MergeAttentionPartials does.
// out [rows, heads * head_dim] bf16.
cudaError_t SplitKvAttention(const float* qkv, int heads, int kv_heads, int head_dim,
                             const AttentionRow* rows_meta, const SplitKvItem* items, int num_items,
                             int max_item_rows, const SplitKvSplit* splits, int num_splits,
                             const int32_t* page_lists, int layer, int page_entries,
                             size_t values_per_page, const uint16_t* arena,
                             SplitKvPartials partials, uint16_t* out, cudaStream_t stream);

// out[r, i] = bf16(silu(g) * u) with g = gate_up[r, i], u = gate_up[r, inter + i]: gate_up is the
// bf16 output of the gate/up GEMM [rows, 2 * inter]; silu and the product are computed in fp32.
cudaError_t SiluMul(const uint16_t* gate_up, int rows, int inter, uint16_t* out,
                    cudaStream_t stream);

// dst row i (width values) = src[first_row[i] * src_stride ...]: gathers each chunk's l token
// states (contiguous rows) into one row of the proj_fx GEMM's input.
cudaError_t GatherBf16(const uint16_t* src, const int32_t* first_row, int rows, size_t src_stride,
                       int width, uint16_t* dst, cudaStream_t stream);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_KERNELS_H_
