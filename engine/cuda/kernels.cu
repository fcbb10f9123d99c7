// Kernels of the CUDA backend (see kernels.h). First versions, written for clarity and checked
// against the CPU engine by tests/cuda; docs/CUDA.md lists what is left to make them fast.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "engine/cuda/kernels.h"
#include "engine/kv/page_layout.h"

namespace catserve::engine::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;  // head_dim values one lane holds
constexpr int kAttentionWarps = 4;

__device__ __forceinline__ float ToFloat(uint16_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(bits));
}
__device__ __forceinline__ uint16_t ToBf16(float v) {
  return __bfloat16_as_ushort(__float2bfloat16(v));  // round to nearest even
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float BlockSum(float v) {
  __shared__ float partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = WarpSum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / kWarp;
  v = lane < warps ? partial[lane] : 0.0f;
  return WarpSum(v);
}

__global__ void GatherRowsKernel(const RowSource* sources, int width, const uint16_t* t0,
                                 const uint16_t* t1, const uint16_t* t2, const float* t3,
                                 float* out) {
  const int r = blockIdx.x;
  const RowSource src = sources[r];
  float* dst = out + static_cast<size_t>(r) * width;
  const size_t base = static_cast<size_t>(src.row) * width;
  if (src.table == 3) {
    for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = t3[base + i];
    return;
  }
  const uint16_t* table = src.table == 0 ? t0 : src.table == 1 ? t1 : t2;
  for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = ToFloat(table[base + i]);
}

__global__ void RmsNormKernel(const float* x, const int32_t* row_map, int dim, const float* w,
                              float eps, uint16_t* out) {
  const int i = blockIdx.x;
  const int r = row_map != nullptr ? row_map[i] : i;
  const float* xr = x + static_cast<size_t>(r) * dim;
  float ss = 0.0f;
  for (int k = threadIdx.x; k < dim; k += blockDim.x) ss += xr[k] * xr[k];
  ss = BlockSum(ss);
  const float inv = rsqrtf(ss / dim + eps);
  uint16_t* o = out + static_cast<size_t>(i) * dim;
  for (int k = threadIdx.x; k < dim; k += blockDim.x) o[k] = ToBf16(xr[k] * inv * w[k]);
}

__device__ __forceinline__ size_t KvOffset(int page, int slot, int layer, int kv, int kv_heads,
                                           int kvh, int page_entries, int head_dim,
                                           size_t values_per_page) {
  return static_cast<size_t>(page) * values_per_page +
         PageValueIndex(layer, kv, kvh, slot, kv_heads, page_entries, head_dim);
}

constexpr int kQkvWarps = 8;                       // heads one block of QkvPostKernel takes
constexpr int kMaxPairsPerLane = kMaxPerLane / 2;  // rotate-half pairs one lane holds

// Grid (row, head block); warp w of head block y takes head y * kQkvWarps + w of the row (q heads,
// then k heads, then v heads). Lane j holds the rotate-half pairs (k, k + half) for k = j, j + 32
// (in registers, loaded once), so bias, norm, rotation and the cache store touch only a lane's own
// values and each value is read once and stored once (to qkv, or for k and v with a cache store,
// to the cache only).
__global__ void __launch_bounds__(kQkvWarps* kWarp)
    QkvPostKernel(float* qkv, int heads, int kv_heads, int head_dim, const float* bias,
                  const float* q_norm, const float* k_norm, float qk_eps, const int32_t* positions,
                  const float* rope_cos, const float* rope_sin, KvWrite kv) {
  const int r = blockIdx.x;
  const int lane = threadIdx.x % kWarp;
  const int h = blockIdx.y * kQkvWarps + threadIdx.x / kWarp;
  const int all_heads = heads + 2 * kv_heads;
  if (h >= all_heads) return;
  const bool is_q = h < heads, is_k = !is_q && h < heads + kv_heads, is_v = h >= heads + kv_heads;
  // A v head changes only by its bias and is stored only into the cache.
  if (is_v && bias == nullptr && kv.slots == nullptr) return;
  const int half = head_dim / 2;
  const size_t col = static_cast<size_t>(h) * head_dim;
  float* x = qkv + static_cast<size_t>(r) * all_heads * head_dim + col;
  float a[kMaxPairsPerLane], b[kMaxPairsPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPairsPerLane; ++i) {
    const int k = lane + i * kWarp;
    a[i] = k < half ? x[k] : 0.0f;
    b[i] = k < half ? x[k + half] : 0.0f;
    if (bias != nullptr && k < half) {
      a[i] += bias[col + k];
      b[i] += bias[col + k + half];
    }
  }
  if (!is_v) {
    const float* norm = is_q ? q_norm : k_norm;
    if (norm != nullptr) {
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxPairsPerLane; ++i) ss += a[i] * a[i] + b[i] * b[i];
      ss = WarpSum(ss);
      const float inv = rsqrtf(ss / head_dim + qk_eps);
#pragma unroll
      for (int i = 0; i < kMaxPairsPerLane; ++i) {
        const int k = lane + i * kWarp;
        if (k < half) {
          a[i] = a[i] * inv * norm[k];
          b[i] = b[i] * inv * norm[k + half];
        }
      }
    }
    const int pos = positions[r];
    const float* c = rope_cos + static_cast<size_t>(pos) * half;
    const float* s = rope_sin + static_cast<size_t>(pos) * half;
#pragma unroll
    for (int i = 0; i < kMaxPairsPerLane; ++i) {
      const int k = lane + i * kWarp;
      if (k < half) {
        const float u = a[i], v = b[i];
        a[i] = u * c[k] - v * s[k];
        b[i] = v * c[k] + u * s[k];
      }
    }
  }
  // With the cache store, k and v are read from the cache only: qkv keeps just the q heads.
  if (kv.slots == nullptr ? !is_v || bias != nullptr : is_q) {
#pragma unroll
    for (int i = 0; i < kMaxPairsPerLane; ++i) {
      const int k = lane + i * kWarp;
      if (k < half) {
        x[k] = a[i];
        x[k + half] = b[i];
      }
    }
  }
  if (kv.slots != nullptr && !is_q && kv.slots[r].page >= 0) {
    const KvSlot at = kv.slots[r];
    const int which = is_k ? 0 : 1;
    const int kvh = h - heads - which * kv_heads;
    uint16_t* dst = kv.arena + KvOffset(at.page, at.slot, kv.layer, which, kv_heads, kvh,
                                        kv.page_entries, head_dim, kv.values_per_page);
#pragma unroll
    for (int i = 0; i < kMaxPairsPerLane; ++i) {
      const int k = lane + i * kWarp;
      if (k < half) {
        dst[k] = ToBf16(a[i]);
        dst[k + half] = ToBf16(b[i]);
      }
    }
  }
}

// One block per (chunk, head). Shared memory: q, k, v [length][head_dim] and p [length][length].
__global__ void ChunkAttentionKernel(const float* qkv, const int32_t* first_row,
                                     const int32_t* length, int heads, int head_dim,
                                     uint16_t* out) {
  extern __shared__ float smem[];
  const int c = blockIdx.x, h = blockIdx.y;
  const int n = length[c], r0 = first_row[c];
  const int width = 3 * heads * head_dim;
  float* q = smem;
  float* k = q + n * head_dim;
  float* v = k + n * head_dim;
  float* p = v + n * head_dim;
  for (int i = threadIdx.x; i < n * head_dim; i += blockDim.x) {
    const float* row = qkv + static_cast<size_t>(r0 + i / head_dim) * width;
    const int d = i % head_dim;
    q[i] = row[h * head_dim + d];
    k[i] = row[(heads + h) * head_dim + d];
    v[i] = row[(2 * heads + h) * head_dim + d];
  }
  __syncthreads();
  const float scale = rsqrtf(static_cast<float>(head_dim));
  for (int i = threadIdx.x; i < n * n; i += blockDim.x) {
    const int a = i / n, b = i % n;
    float dot = 0.0f;
    for (int d = 0; d < head_dim; ++d) dot += q[a * head_dim + d] * k[b * head_dim + d];
    p[i] = dot * scale;
  }
  __syncthreads();
  for (int a = threadIdx.x; a < n; a += blockDim.x) {
    float m = -INFINITY;
    for (int b = 0; b < n; ++b) m = fmaxf(m, p[a * n + b]);
    float sum = 0.0f;
    for (int b = 0; b < n; ++b) {
      p[a * n + b] = __expf(p[a * n + b] - m);
      sum += p[a * n + b];
    }
    for (int b = 0; b < n; ++b) p[a * n + b] /= sum;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n * head_dim; i += blockDim.x) {
    const int a = i / head_dim, d = i % head_dim;
    float acc = 0.0f;
    for (int b = 0; b < n; ++b) acc += p[a * n + b] * v[b * head_dim + d];
    out[static_cast<size_t>(r0 + a) * heads * head_dim + h * head_dim + d] = ToBf16(acc);
  }
}

// One block per (split, kv head, z), kAttentionWarps warps; for rows z, z + gridDim.z, ... of the
// split's item (a prefill item has many rows, a decode item one), warp w scores keys begin + w,
// begin + w + warps, ... of the split that the row sees, for every q head of the kv head's group
// (lanes split head_dim; online softmax per warp), then the warps' partials merge into the split's
// partial of that row.
__global__ void __launch_bounds__(kAttentionWarps* kWarp)
    SplitKvPartialKernel(const float* qkv, int heads, int kv_heads, int head_dim,
                         const AttentionRow* rows_meta, const SplitKvItem* items,
                         const SplitKvSplit* splits, const int32_t* page_lists, int layer,
                         int page_entries, size_t values_per_page, const uint16_t* arena,
                         SplitKvPartials partials) {
  extern __shared__ float smem[];
  const int s = blockIdx.x, kvh = blockIdx.y;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int group = heads / kv_heads;
  const SplitKvSplit sp = splits[s];
  const SplitKvItem it = items[sp.item];
  const int nq = it.rows * group;
  const size_t split_base = static_cast<size_t>(it.partial_slot) +
                            static_cast<size_t>(s - it.first_split) * nq * kv_heads;
  const float scale = rsqrtf(static_cast<float>(head_dim));
  float* stats = smem;                                  // [warps][group][2]
  float* partial = smem + kAttentionWarps * group * 2;  // [warps][group][head_dim]

  for (int t = it.first_row + blockIdx.z; t < it.first_row + it.rows; t += gridDim.z) {
    const AttentionRow m = rows_meta[t];
    const float* row = qkv + static_cast<size_t>(t) * (heads + 2 * kv_heads) * head_dim;
    float q[kMaxGroup][kMaxPerLane];
    float acc[kMaxGroup][kMaxPerLane];
    float mx[kMaxGroup], sum[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      mx[g] = -INFINITY;
      sum[g] = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + i * kWarp;
        q[g][i] = g < group && d < head_dim ? row[(kvh * group + g) * head_dim + d] * scale : 0.0f;
        acc[g][i] = 0.0f;
      }
    }
    for (int j = sp.begin + warp; j < sp.end; j += kAttentionWarps) {
      const bool compressed = j < it.compressed_keys;
      const int e = compressed ? j : j - it.compressed_keys;
      if (e >= (compressed ? m.visible_compressed : m.visible_local)) continue;  // not seen
      const int page =
          page_lists[(compressed ? m.compressed_pages : m.local_pages) + e / page_entries];
      const size_t k_at = KvOffset(page, e % page_entries, layer, 0, kv_heads, kvh, page_entries,
                                   head_dim, values_per_page);
      const size_t v_at = k_at + static_cast<size_t>(kv_heads) * page_entries * head_dim;
      float kv_k[kMaxPerLane], kv_v[kMaxPerLane];
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + i * kWarp;
        kv_k[i] = d < head_dim ? ToFloat(arena[k_at + d]) : 0.0f;
        kv_v[i] = d < head_dim ? ToFloat(arena[v_at + d]) : 0.0f;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= group) continue;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) dot += q[g][i] * kv_k[i];
        const float score = WarpSum(dot);
        const float new_max = fmaxf(mx[g], score);
        const float keep = __expf(mx[g] - new_max);  // 0 when mx[g] is -inf
        const float p = __expf(score - new_max);
        sum[g] = sum[g] * keep + p;
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) acc[g][i] = acc[g][i] * keep + p * kv_v[i];
        mx[g] = new_max;
      }
    }

    __syncthreads();  // the previous row's merge may still read smem
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) continue;
      if (lane == 0) {
        stats[(warp * group + g) * 2] = mx[g];
        stats[(warp * group + g) * 2 + 1] = sum[g];
      }
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int d = lane + i * kWarp;
        if (d < head_dim) partial[(warp * group + g) * head_dim + d] = acc[g][i];
      }
    }
    __syncthreads();
    // The split's partial of each query: the warps' partials rescaled to their largest max (a
    // split that saw no key leaves max -inf, sum 0, acc 0).
    for (int i = threadIdx.x; i < group * head_dim; i += blockDim.x) {
      const int g = i / head_dim, d = i % head_dim;
      float best = -INFINITY;
      for (int w = 0; w < kAttentionWarps; ++w) best = fmaxf(best, stats[(w * group + g) * 2]);
      float total = 0.0f, value = 0.0f;
      for (int w = 0; w < kAttentionWarps; ++w) {
        const float wm = stats[(w * group + g) * 2];
        if (wm == -INFINITY) continue;  // this warp saw no key
        const float f = __expf(wm - best);
        total += stats[(w * group + g) * 2 + 1] * f;
        value += partial[(w * group + g) * head_dim + d] * f;
      }
      const size_t slot =
          split_base + static_cast<size_t>(kvh) * nq + (t - it.first_row) * group + g;
      partials.acc[slot * head_dim + d] = value;
      if (d == 0) {
        partials.max[slot] = best;
        partials.sum[slot] = total;
      }
    }
  }
}

// One block per (item, kv head): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) sum_s over the
// item's splits in split order, M = max_s m_s, skipping splits that saw no key
// (MergeAttentionPartials, engine/split_kv_plan.h).
__global__ void SplitKvMergeKernel(int heads, int kv_heads, int head_dim, const SplitKvItem* items,
                                   SplitKvPartials partials, uint16_t* out) {
  const int item = blockIdx.x, kvh = blockIdx.y;
  const int group = heads / kv_heads;
  const SplitKvItem it = items[item];
  const int nq = it.rows * group;
  const size_t stride = static_cast<size_t>(nq) * kv_heads;
  for (int i = threadIdx.x; i < nq * head_dim; i += blockDim.x) {
    const int qi = i / head_dim, d = i % head_dim;
    const size_t slot0 = static_cast<size_t>(it.partial_slot) + static_cast<size_t>(kvh) * nq + qi;
    float best = -INFINITY;
    for (int s = 0; s < it.splits; ++s) best = fmaxf(best, partials.max[slot0 + s * stride]);
    float total = 0.0f, value = 0.0f;
    for (int s = 0; s < it.splits; ++s) {
      const size_t slot = slot0 + s * stride;
      const float m = partials.max[slot];
      if (m == -INFINITY) continue;
      const float f = expf(m - best);
      total += partials.sum[slot] * f;
      value += partials.acc[slot * head_dim + d] * f;
    }
    const int t = it.first_row + qi / group, g = qi % group;
    out[static_cast<size_t>(t) * heads * head_dim + (kvh * group + g) * head_dim + d] =
        ToBf16(value / total);
  }
}

__global__ void SiluMulKernel(const uint16_t* gate_up, int inter, uint16_t* out) {
  const int r = blockIdx.x;
  const uint16_t* g = gate_up + static_cast<size_t>(r) * 2 * inter;
  uint16_t* o = out + static_cast<size_t>(r) * inter;
  for (int i = threadIdx.x; i < inter; i += blockDim.x) {
    const float x = ToFloat(g[i]);
    o[i] = ToBf16(x / (1.0f + __expf(-x)) * ToFloat(g[inter + i]));
  }
}

__global__ void GatherBf16Kernel(const uint16_t* src, const int32_t* first_row, size_t src_stride,
                                 int width, uint16_t* dst) {
  const int r = blockIdx.x;
  const uint16_t* s = src + static_cast<size_t>(first_row[r]) * src_stride;
  uint16_t* d = dst + static_cast<size_t>(r) * width;
  for (int i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
}

int ThreadsFor(int work) {
  int t = 32;
  while (t < work && t < 256) t *= 2;
  return t;
}

}  // namespace

cudaError_t GatherRows(const RowSource* sources, int rows, int width, const uint16_t* t0,
                       const uint16_t* t1, const uint16_t* t2, const float* t3, float* out,
                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GatherRowsKernel<<<rows, ThreadsFor(width), 0, stream>>>(sources, width, t0, t1, t2, t3, out);
  return cudaGetLastError();
}

cudaError_t RmsNormToBf16(const float* x, const int32_t* row_map, int rows, int dim, const float* w,
                          float eps, uint16_t* out, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<rows, ThreadsFor(dim), 0, stream>>>(x, row_map, dim, w, eps, out);
  return cudaGetLastError();
}

cudaError_t QkvPostprocess(float* qkv, int rows, int heads, int kv_heads, int head_dim,
                           const float* bias, const float* q_norm, const float* k_norm,
                           float qk_eps, const int32_t* positions, const float* rope_cos,
                           const float* rope_sin, KvWrite kv, cudaStream_t stream) {
  if (head_dim % 2 != 0 || head_dim > kMaxHeadDim) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const int all_heads = heads + 2 * kv_heads;
  const int warps = std::min(all_heads, kQkvWarps);
  const dim3 grid(rows, (all_heads + kQkvWarps - 1) / kQkvWarps);
  QkvPostKernel<<<grid, warps * kWarp, 0, stream>>>(qkv, heads, kv_heads, head_dim, bias, q_norm,
                                                    k_norm, qk_eps, positions, rope_cos, rope_sin,
                                                    kv);
  return cudaGetLastError();
}

cudaError_t ChunkAttention(const float* qkv, const int32_t* first_row, const int32_t* length,
                           int chunks, int max_length, int heads, int head_dim, uint16_t* out,
                           cudaStream_t stream) {
  if (chunks == 0) return cudaSuccess;
  const size_t smem =
      (3 * static_cast<size_t>(max_length) * head_dim + max_length * max_length) * sizeof(float);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;
  ChunkAttentionKernel<<<dim3(chunks, heads), 128, smem, stream>>>(qkv, first_row, length, heads,
                                                                   head_dim, out);
  return cudaGetLastError();
}

cudaError_t SplitKvAttention(const float* qkv, int heads, int kv_heads, int head_dim,
                             const AttentionRow* rows_meta, const SplitKvItem* items, int num_items,
                             int max_item_rows, const SplitKvSplit* splits, int num_splits,
                             const int32_t* page_lists, int layer, int page_entries,
                             size_t values_per_page, const uint16_t* arena,
                             SplitKvPartials partials, uint16_t* out, cudaStream_t stream) {
  if (num_items == 0) return cudaSuccess;
  // Rows of one item spread over grid z, at most kMaxRowBlocks apart.
  constexpr int kMaxRowBlocks = 1024;
  const int row_blocks = std::min(std::max(max_item_rows, 1), kMaxRowBlocks);
  const int group = heads / kv_heads;
  if (head_dim > kMaxHeadDim || group > kMaxGroup) return cudaErrorInvalidValue;
  const size_t smem = static_cast<size_t>(kAttentionWarps) * group * (2 + head_dim) * sizeof(float);
  SplitKvPartialKernel<<<dim3(num_splits, kv_heads, row_blocks), kAttentionWarps * kWarp, smem,
                         stream>>>(qkv, heads, kv_heads, head_dim, rows_meta, items, splits,
                                   page_lists, layer, page_entries, values_per_page, arena,
                                   partials);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  SplitKvMergeKernel<<<dim3(num_items, kv_heads), 128, 0, stream>>>(heads, kv_heads, head_dim,
                                                                    items, partials, out);
  return cudaGetLastError();
}

cudaError_t SiluMul(const uint16_t* gate_up, int rows, int inter, uint16_t* out,
                    cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  SiluMulKernel<<<rows, ThreadsFor(inter), 0, stream>>>(gate_up, inter, out);
  return cudaGetLastError();
}

cudaError_t GatherBf16(const uint16_t* src, const int32_t* first_row, int rows, size_t src_stride,
                       int width, uint16_t* dst, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  GatherBf16Kernel<<<rows, ThreadsFor(width), 0, stream>>>(src, first_row, src_stride, width, dst);
  return cudaGetLastError();
}

}  // namespace catserve::engine::cuda
