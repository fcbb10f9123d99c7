// PrefillAttention (prefill_attention.h): flash-attention-2 on mma.sync m16n8k16 bf16 -> fp32.
//
// A block of kWarps = 4 or 8 warps takes 16 kWarps queries of one item and one kv head: query f of
// the item is its row f / group, q head kvh * group + f % group (so a GQA group shares every K/V
// tile it loads), and warp w owns queries 16w..16w+15 of the tile. Shared memory (bf16, rows
// padded by 16 bytes so that ldmatrix's eight 16-byte rows fall in distinct banks): Q [16 kWarps]
// [D], K and V [2][64][D] (double buffered: cp.async fetches tile j + 1 while the warps multiply
// tile j). The item's keys run as the compressed region's tiles, then the local region's, each up
// to the most any query of the block sees; a warp skips the products of a tile none of its queries
// sees.
//
// Per key tile, warp w: S[16][64] = Q K^T (D/16 k-steps x 8 n-tiles of mma; Q's and K's fragments
// by ldmatrix), mask by each query's limits, scale by log2(e)/sqrt(D), online softmax (row max
// over the 4 lanes that share a row; ex2.approx), then O[16][D] += P V with P taken straight from
// S's accumulators as bf16 A fragments and V's B fragments by ldmatrix.trans.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "engine/cuda/prefill_attention.h"
#include "engine/kv/page_layout.h"

namespace catserve::engine::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kTileK = kPrefillTileKeys;
static_assert(kTileK % 16 == 0, "keys go through the products 16 at a time");

struct Params {
  const float* qkv;
  int heads, kv_heads, group;
  const AttentionRow* rows;
  const PrefillItem* items;
  const int32_t* page_lists;
  int layer, page_entries;
  size_t values_per_page;
  const uint16_t* arena;
  uint16_t* out;
  int tiles;         // gridDim.y
  float scale_log2;  // log2(e) / sqrt(head_dim)
};

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared (address `dst`), asynchronously; `bytes` 0 writes zeros (and reads
// nothing).
__device__ __forceinline__ void CopyAsync16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8 and receives, from
// matrix i, the elements (row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1) in r[i] (lower column in
// the low half); .trans gives (rows 2 (l % 4) and 2 (l % 4) + 1, column l / 4) instead.
// `row` is a shared-memory address (SharedAddress).
__device__ __forceinline__ void LoadMatrix(uint32_t (&r)[4], uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
}
__device__ __forceinline__ void LoadMatrixTrans(uint32_t (&r)[4], uint32_t row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(row));
}

// c[16x8] += a[16x16] b[16x8]. With g = lane / 4, t = lane % 4: a = {A[g][2t..], A[g+8][2t..],
// A[g][2t+8..], A[g+8][2t+8..]}, b = {B[2t..][g], B[2t+8..][g]} (pairs along k, lower k in the low
// half), c = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}.
__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x on the SFU (ex2.approx, flushing subnormals): 2^-inf = 0, relative error ~2^-22.
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

// kWarps warps of 16 queries: a tile of kTileQ = 16 kWarps queries. Up to D = 64, 16 warps an SM
// (128 registers a thread, which the state of a query row fits without spilling).
template <int D, int kWarps>
__global__ void __launch_bounds__(kWarps* kWarp, D <= 64 ? 16 / kWarps : 1)
    PrefillAttentionKernel(Params p) {
  constexpr int kThreads = kWarps * kWarp;
  constexpr int kTileQ = 16 * kWarps;
  constexpr int kStride = D + 8;  // bf16 a shared row: 16 bytes of padding
  constexpr uint32_t kRowBytes = kStride * 2;
  constexpr int kChunks = D / 8;       // 16-byte pieces of a row
  constexpr int kSteps = D / 16;       // k-steps of S = Q K^T
  constexpr int kDTiles = D / 8;       // n-tiles of O
  constexpr int kKTiles = kTileK / 8;  // n-tiles of S
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* const qs = smem;                   // [kTileQ][kStride]
  uint16_t* const ks = qs + kTileQ * kStride;  // [2][kTileK][kStride]
  uint16_t* const vs = ks + 2 * kTileK * kStride;
  __shared__ int limit_c[kTileQ], limit_l[kTileQ];
  __shared__ int block_limit[2];

  const int kvh = blockIdx.x;
  const int tile = p.tiles - 1 - static_cast<int>(blockIdx.y);
  const PrefillItem it = p.items[blockIdx.z];
  const int group = p.group;
  const int nq = it.rows * group;
  const int q0 = tile * kTileQ;
  if (q0 >= nq) return;  // the whole block: no barrier is pending
  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
  const int width = (p.heads + 2 * p.kv_heads) * D;
  const int compressed_keys = max(it.compressed_keys, 0), local_keys = max(it.local_keys, 0);

  // Each query's limits, and the tile's queries in bf16.
  if (tid < kTileQ) {
    const int f = q0 + tid;
    int c = 0, l = 0;
    if (f < nq) {
      const AttentionRow m = p.rows[it.first_row + f / group];
      c = max(min(m.visible_compressed, compressed_keys), 0);
      l = max(min(m.visible_local, local_keys), 0);
    }
    limit_c[tid] = c;
    limit_l[tid] = l;
  }
  for (int i = tid; i < kTileQ * (D / 4); i += kThreads) {
    const int qi = i / (D / 4), c4 = i % (D / 4), f = q0 + qi;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (f < nq) {
      const int t = it.first_row + f / group, g = f % group;
      v = *reinterpret_cast<const float4*>(p.qkv + static_cast<size_t>(t) * width +
                                           (kvh * group + g) * D + c4 * 4);
    }
    uint2 packed;
    packed.x = PackBf16(v.x, v.y);
    packed.y = PackBf16(v.z, v.w);
    *reinterpret_cast<uint2*>(qs + qi * kStride + c4 * 4) = packed;
  }
  __syncthreads();
  if (warp == 0) {
    int c = 0, l = 0;
#pragma unroll
    for (int i = lane; i < kTileQ; i += kWarp) {
      c = max(c, limit_c[i]);
      l = max(l, limit_l[i]);
    }
    for (int o = kWarp / 2; o > 0; o /= 2) {
      c = max(c, __shfl_xor_sync(0xffffffffu, c, o));
      l = max(l, __shfl_xor_sync(0xffffffffu, l, o));
    }
    if (lane == 0) {
      block_limit[0] = c;
      block_limit[1] = l;
    }
  }
  __syncthreads();
  const int block_c = block_limit[0], block_l = block_limit[1];
  const int tiles_c = (block_c + kTileK - 1) / kTileK;
  const int tiles_total = tiles_c + (block_l + kTileK - 1) / kTileK;

  // This lane's two queries (rows g and g + 8 of the warp's 16) and the warp's largest limits.
  const int qa = warp * 16 + lane / 4, qb = qa + 8;
  const int lim_ca = limit_c[qa], lim_cb = limit_c[qb];
  const int lim_la = limit_l[qa], lim_lb = limit_l[qb];
  int warp_c = max(lim_ca, lim_cb), warp_l = max(lim_la, lim_lb);
  for (int o = kWarp / 2; o > 0; o /= 2) {
    warp_c = max(warp_c, __shfl_xor_sync(0xffffffffu, warp_c, o));
    warp_l = max(warp_l, __shfl_xor_sync(0xffffffffu, warp_l, o));
  }

  // Q's A fragments, by ldmatrix from shared memory at each use (registers would hold D / 4 more
  // a thread): rows warp*16 + (l % 8) + 8 [matrix odd], columns 16s + 8 [matrix >= 2].
  const uint32_t q_row =
      SharedAddress(qs + (warp * 16 + lane % 8 + ((lane / 8) & 1) * 8) * kStride + (lane / 16) * 8);

  // Key tile j into buffer `buf`: its keys' K and V rows, zeros past the region's block limit.
  const uint16_t* const kv_base =
      p.arena + PageValueIndex(p.layer, 0, kvh, 0, p.kv_heads, p.page_entries, D);
  const int v_offset = p.kv_heads * p.page_entries * D;  // from a page's K to its V
  const uint32_t k_smem = SharedAddress(ks), v_smem = SharedAddress(vs);
  auto load_tile = [&](int j, int buf) {
    const bool compressed = j < tiles_c;
    const int e0 = (compressed ? j : j - tiles_c) * kTileK;
    const int count = compressed ? block_c : block_l;
    const int32_t* pages = p.page_lists + (compressed ? it.compressed_pages : it.local_pages);
    const uint32_t buf_bytes = buf * kTileK * kRowBytes;
#pragma unroll
    for (int i = tid; i < kTileK * kChunks; i += kThreads) {
      const int kr = i / kChunks, ch = i % kChunks, e = e0 + kr;
      const uint16_t* src = p.arena;
      int bytes = 0;
      if (e < count) {
        const int page = pages[e / p.page_entries];
        src = kv_base + static_cast<size_t>(page) * p.values_per_page + (e % p.page_entries) * D +
              ch * 8;
        bytes = 16;
      }
      const uint32_t at = buf_bytes + kr * kRowBytes + ch * 16;
      CopyAsync16(k_smem + at, src, bytes);
      CopyAsync16(v_smem + at, bytes != 0 ? src + v_offset : src, bytes);
    }
  };

  float o[kDTiles][4];
#pragma unroll
  for (int d = 0; d < kDTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float max_a = -INFINITY, max_b = -INFINITY;  // running max of scaled (log2) scores
  float sum_a = 0.0f, sum_b = 0.0f;            // this lane's part of the running sums

  if (tiles_total > 0) load_tile(0, 0);
  CopyAsyncCommit();
  for (int j = 0; j < tiles_total; ++j) {
    const int buf = j & 1;
    if (j + 1 < tiles_total) {
      load_tile(j + 1, buf ^ 1);  // its buffer was last read in iteration j - 1, before a barrier
      CopyAsyncCommit();
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();  // tile j is in shared memory for every thread

    const bool compressed = j < tiles_c;
    const int e0 = (compressed ? j : j - tiles_c) * kTileK;
    if (e0 < (compressed ? warp_c : warp_l)) {  // some query of this warp sees a key of the tile
      const int lim_a = compressed ? lim_ca : lim_la, lim_b = compressed ? lim_cb : lim_lb;
      const uint16_t* kt = ks + buf * kTileK * kStride;
      const uint16_t* vt = vs + buf * kTileK * kStride;

      float s[kKTiles][4];
#pragma unroll
      for (int n = 0; n < kKTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      {
        // K's B fragments for n-tiles 2np and 2np + 1: matrices (keys +0, d +0), (keys +0, d +8),
        // (keys +8, d +0), (keys +8, d +8); lane gives row (lane % 8) of matrix lane / 8.
        const int mi = lane / 8;
        const uint32_t row =
            SharedAddress(kt + (lane % 8 + (mi >> 1) * 8) * kStride + (mi & 1) * 8);
#pragma unroll
        for (int st = 0; st < kSteps; ++st) {
          uint32_t qf[4];
          LoadMatrix(qf, q_row + st * 32);
#pragma unroll
          for (int np = 0; np < kKTiles / 2; ++np) {
            uint32_t b[4];
            LoadMatrix(b, row + np * 16 * kRowBytes + st * 32);
            Mma(s[2 * np], qf, b[0], b[1]);
            Mma(s[2 * np + 1], qf, b[2], b[3]);
          }
        }
      }

      // Mask, scale, and the tile's row maxima (a row's 64 scores lie in the 4 lanes of a quad).
      float tile_max_a = -INFINITY, tile_max_b = -INFINITY;
#pragma unroll
      for (int n = 0; n < kKTiles; ++n) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int e = e0 + n * 8 + 2 * (lane % 4) + i;
          s[n][i] = e < lim_a ? s[n][i] * p.scale_log2 : -INFINITY;
          s[n][2 + i] = e < lim_b ? s[n][2 + i] * p.scale_log2 : -INFINITY;
          tile_max_a = fmaxf(tile_max_a, s[n][i]);
          tile_max_b = fmaxf(tile_max_b, s[n][2 + i]);
        }
      }
#pragma unroll
      for (int off = 1; off < 4; off *= 2) {
        tile_max_a = fmaxf(tile_max_a, __shfl_xor_sync(0xffffffffu, tile_max_a, off));
        tile_max_b = fmaxf(tile_max_b, __shfl_xor_sync(0xffffffffu, tile_max_b, off));
      }
      const float new_a = fmaxf(max_a, tile_max_a), new_b = fmaxf(max_b, tile_max_b);
      // A row that has seen no key yet keeps max -inf; subtracting 0 then gives exp2(-inf) = 0.
      const float base_a = new_a == -INFINITY ? 0.0f : new_a;
      const float base_b = new_b == -INFINITY ? 0.0f : new_b;
      const float keep_a = Exp2(max_a - base_a), keep_b = Exp2(max_b - base_b);
      max_a = new_a;
      max_b = new_b;
      sum_a *= keep_a;
      sum_b *= keep_b;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        o[d][0] *= keep_a;
        o[d][1] *= keep_a;
        o[d][2] *= keep_b;
        o[d][3] *= keep_b;
      }
#pragma unroll
      for (int n = 0; n < kKTiles; ++n) {
        s[n][0] = Exp2(s[n][0] - base_a);
        s[n][1] = Exp2(s[n][1] - base_a);
        s[n][2] = Exp2(s[n][2] - base_b);
        s[n][3] = Exp2(s[n][3] - base_b);
        sum_a += s[n][0] + s[n][1];
        sum_b += s[n][2] + s[n][3];
      }

      // O += P V, 16 keys at a time. P's A fragment of keys 16kk..: S's n-tiles 2kk and 2kk + 1.
      // V's B fragments for d-tiles 2dp and 2dp + 1: matrices (keys +0, d +0), (keys +8, d +0),
      // (keys +0, d +8), (keys +8, d +8), transposed.
      const int mi = lane / 8;
      const uint32_t vrow = SharedAddress(vt + (lane % 8 + (mi & 1) * 8) * kStride + (mi >> 1) * 8);
#pragma unroll
      for (int kk = 0; kk < kTileK / 16; ++kk) {
        const uint32_t a[4] = {PackBf16(s[2 * kk][0], s[2 * kk][1]),
                               PackBf16(s[2 * kk][2], s[2 * kk][3]),
                               PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          uint32_t b[4];
          LoadMatrixTrans(b, vrow + kk * 16 * kRowBytes + dp * 32);
          Mma(o[2 * dp], a, b[0], b[1]);
          Mma(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with buffer `buf` before iteration j + 1 refills it
  }

  // out = O / sum; a lane's sums cover its own columns only: add the quad's.
#pragma unroll
  for (int off = 1; off < 4; off *= 2) {
    sum_a += __shfl_xor_sync(0xffffffffu, sum_a, off);
    sum_b += __shfl_xor_sync(0xffffffffu, sum_b, off);
  }
  const float inv_a = sum_a > 0.0f ? 1.0f / sum_a : 0.0f;
  const float inv_b = sum_b > 0.0f ? 1.0f / sum_b : 0.0f;
  const int out_width = p.heads * D;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int f = q0 + (h == 0 ? qa : qb);
    if (f >= nq) continue;
    const float inv = h == 0 ? inv_a : inv_b;
    const int t = it.first_row + f / group, g = f % group;
    uint16_t* dst =
        p.out + static_cast<size_t>(t) * out_width + (kvh * group + g) * D + 2 * (lane % 4);
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) {
      *reinterpret_cast<uint32_t*>(dst + d * 8) =
          PackBf16(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
    }
  }
}

template <int D, int kWarps>
cudaError_t Launch(const Params& p, dim3 grid, cudaStream_t stream) {
  constexpr size_t kSmem =
      static_cast<size_t>(16 * kWarps + 4 * kTileK) * (D + 8) * sizeof(uint16_t);
  if (kSmem > 48 * 1024) {
    // The kernel's limit, set once (device 0 is the only one the engine uses).
    static const cudaError_t limit =
        cudaFuncSetAttribute(PrefillAttentionKernel<D, kWarps>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    if (limit != cudaSuccess) return limit;
  }
  PrefillAttentionKernel<D, kWarps><<<grid, kWarps * kWarp, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <int D>
cudaError_t LaunchFor(int query_tile, const Params& p, dim3 grid, cudaStream_t stream) {
  return query_tile == 128 ? Launch<D, 8>(p, grid, stream) : Launch<D, 4>(p, grid, stream);
}

}  // namespace

cudaError_t PrefillAttention(const float* qkv, int heads, int kv_heads, int head_dim,
                             const AttentionRow* rows_meta, const PrefillItem* items, int num_items,
                             int max_item_rows, const int32_t* page_lists, int layer,
                             int page_entries, size_t values_per_page, const uint16_t* arena,
                             uint16_t* out, cudaStream_t stream, int query_tile) {
  if (!PrefillAttentionSupports(heads, kv_heads, head_dim) || page_entries <= 0 ||
      values_per_page % 8 != 0 || reinterpret_cast<uintptr_t>(qkv) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(arena) % 16 != 0 || reinterpret_cast<uintptr_t>(out) % 4 != 0 ||
      num_items < 0 || max_item_rows < 0 ||
      (query_tile != 0 && query_tile != 64 && query_tile != 128)) {
    return cudaErrorInvalidValue;
  }
  if (num_items == 0 || max_item_rows == 0) return cudaSuccess;
  const int group = heads / kv_heads;
  const long long queries = static_cast<long long>(max_item_rows) * group;
  if (query_tile == 0) query_tile = PrefillQueryTile(max_item_rows, heads, kv_heads);
  const long long tiles = (queries + query_tile - 1) / query_tile;
  if (tiles > 65535 || num_items > 65535) return cudaErrorInvalidValue;
  Params p{qkv,
           heads,
           kv_heads,
           group,
           rows_meta,
           items,
           page_lists,
           layer,
           page_entries,
           values_per_page,
           arena,
           out,
           static_cast<int>(tiles),
           static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)))};
  const dim3 grid(kv_heads, static_cast<unsigned>(tiles), num_items);
  switch (head_dim) {
    case 16:
      return LaunchFor<16>(query_tile, p, grid, stream);
    case 32:
      return LaunchFor<32>(query_tile, p, grid, stream);
    case 48:
      return LaunchFor<48>(query_tile, p, grid, stream);
    case 64:
      return LaunchFor<64>(query_tile, p, grid, stream);
    case 80:
      return LaunchFor<80>(query_tile, p, grid, stream);
    case 96:
      return LaunchFor<96>(query_tile, p, grid, stream);
    case 112:
      return LaunchFor<112>(query_tile, p, grid, stream);
    case 128:
      return LaunchFor<128>(query_tile, p, grid, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace catserve::engine::cuda
