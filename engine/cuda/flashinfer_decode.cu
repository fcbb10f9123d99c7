// FlashInfer's paged decode as the decoder's attention for decode rows (flashinfer_decode.h).
// Built with FlashInfer's headers when CMake found them (CATSERVE_HAVE_FLASHINFER); without them
// every call answers cudaErrorNotSupported and the engine keeps catserve's own kernels.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "engine/cuda/flashinfer_decode.h"

#if CATSERVE_HAVE_FLASHINFER
#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/variants.cuh>
#include <flashinfer/page.cuh>
#endif

namespace catserve::engine::cuda {
namespace {

#if CATSERVE_HAVE_FLASHINFER

// Combines a row's compressed tiles (in order) and its local block for one q head: with M the
// largest log2-sum-exp, out = sum_i 2^(lse_i - M) o_i / sum_i 2^(lse_i - M).
__global__ void MergeFlashInferKernel(const FlashInferRow* rows, int heads, int head_dim,
                                      FlashInferScratch s, uint16_t* out) {
  const FlashInferRow r = rows[blockIdx.x];
  const int h = blockIdx.y;
  float m = -INFINITY;
  for (int t = 0; t < r.tiles; ++t) m = fmaxf(m, s.tile_lse[(r.first_tile + t) * heads + h]);
  if (r.local >= 0) m = fmaxf(m, s.local_lse[r.local * heads + h]);
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float den = 0.0f, acc = 0.0f;
    for (int t = 0; t < r.tiles; ++t) {
      const size_t slot = static_cast<size_t>(r.first_tile + t) * heads + h;
      const float w = exp2f(s.tile_lse[slot] - m);
      den += w;
      acc += w * s.tile_out[slot * head_dim + d];
    }
    if (r.local >= 0) {
      const size_t slot = static_cast<size_t>(r.local) * heads + h;
      const float w = exp2f(s.local_lse[slot] - m);
      den += w;
      acc += w * s.local_out[slot * head_dim + d];
    }
    const float v = den > 0.0f ? acc / den : 0.0f;
    out[(static_cast<size_t>(r.row) * heads + h) * head_dim + d] =
        __bfloat16_as_ushort(__float2bfloat16(v));
  }
}

using KvType = __nv_bfloat16;
using Params = flashinfer::BatchDecodeParams<float, KvType, float, int32_t>;
using Variant =
    flashinfer::DefaultAttention</*use_custom_mask=*/false, /*use_sliding_window=*/false,
                                 /*use_logits_soft_cap=*/false, /*use_alibi=*/false>;

// One launch of FlashInfer's kernel over `blocks` blocks per kv head, with the thread shape and
// shared memory its own dispatcher (BatchDecodeWithPagedKVCacheDispatched) picks for bf16 keys on
// sm_80 and newer (two cp.async stages).
template <uint32_t kHeadDim, uint32_t kGroup>
cudaError_t LaunchDecode(const Params& params, int blocks, int kv_heads, cudaStream_t stream) {
  constexpr uint32_t kStages = 2;
  constexpr uint32_t kVec = std::max<uint32_t>(16 / sizeof(KvType), kHeadDim / 32);
  constexpr uint32_t kBdx = kHeadDim / kVec;
  constexpr uint32_t kBdy = kGroup;
  constexpr uint32_t kThreads = std::max<uint32_t>(128, kBdx * kBdy);
  constexpr uint32_t kBdz = kThreads / (kBdx * kBdy);
  constexpr uint32_t kTilePerBdx = kGroup == 1 ? 4 : 1;
  constexpr size_t kSmem =
      std::max<size_t>(2 * kStages * kTilePerBdx * kBdy * kBdz * kHeadDim * sizeof(KvType),
                       kBdz * kBdy * kHeadDim * sizeof(float)) +
      std::max<size_t>(kTilePerBdx * kThreads * sizeof(KvType*), 2 * kBdy * kBdz * sizeof(float));
  auto kernel = flashinfer::BatchDecodeWithPagedKVCacheKernel<flashinfer::PosEncodingMode::kNone,
                                                              kStages, kTilePerBdx, kVec, kBdx,
                                                              kBdy, kBdz, Variant, Params>;
  // The shared-memory limit is the kernel's, set once (device 0 is the only one the engine uses).
  static const cudaError_t limit =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (limit != cudaSuccess) return limit;
  kernel<<<dim3(blocks, kv_heads), dim3(kBdx, kBdy, kBdz), kSmem, stream>>>(params);
  return cudaGetLastError();
}

template <uint32_t kHeadDim>
cudaError_t LaunchForGroup(int group, const Params& params, int blocks, int kv_heads,
                           cudaStream_t stream) {
  switch (group) {
    case 1:
      return LaunchDecode<kHeadDim, 1>(params, blocks, kv_heads, stream);
    case 2:
      return LaunchDecode<kHeadDim, 2>(params, blocks, kv_heads, stream);
    case 4:
      return LaunchDecode<kHeadDim, 4>(params, blocks, kv_heads, stream);
    case 8:
      return LaunchDecode<kHeadDim, 8>(params, blocks, kv_heads, stream);
    default:
      return cudaErrorNotSupported;
  }
}

cudaError_t Launch(int head_dim, int group, const Params& params, int blocks, int kv_heads,
                   cudaStream_t stream) {
  if (blocks == 0) return cudaSuccess;
  switch (head_dim) {
    case 64:
      return LaunchForGroup<64>(group, params, blocks, kv_heads, stream);
    case 128:
      return LaunchForGroup<128>(group, params, blocks, kv_heads, stream);
    default:
      return cudaErrorNotSupported;
  }
}

// The paged view of one key range at `layer`: keys and values of a kv head are contiguous per
// page (engine/kv/page_layout.h), which is FlashInfer's HND layout with the page's stride.
flashinfer::paged_kv_t<KvType, int32_t> PagedView(int kv_heads, int head_dim, int decoder_rows,
                                                  const int32_t* indptr, const int32_t* pages,
                                                  const int32_t* last_len, int layer,
                                                  int page_entries, size_t values_per_page,
                                                  const uint16_t* arena) {
  const size_t block = static_cast<size_t>(kv_heads) * page_entries * head_dim;
  auto* k = reinterpret_cast<KvType*>(const_cast<uint16_t*>(arena)) + layer * 2 * block;
  const int64_t strides[3] = {static_cast<int64_t>(values_per_page),
                              static_cast<int64_t>(page_entries) * head_dim, head_dim};
  return flashinfer::paged_kv_t<KvType, int32_t>(
      kv_heads, page_entries, head_dim, decoder_rows, flashinfer::QKVLayout::kHND, k, k + block,
      strides, const_cast<int32_t*>(pages), const_cast<int32_t*>(indptr),
      const_cast<int32_t*>(last_len));
}

#endif  // CATSERVE_HAVE_FLASHINFER

}  // namespace

bool FlashInferDecodeSupports(int head_dim, int group) {
#if CATSERVE_HAVE_FLASHINFER
  return (head_dim == 64 || head_dim == 128) &&
         (group == 1 || group == 2 || group == 4 || group == 8);
#else
  (void)head_dim;
  (void)group;
  return false;
#endif
}

cudaError_t FlashInferDecode(const float* qkv, int heads, int kv_heads, int head_dim,
                             const FlashInferDecodeMeta& meta, int layer, int page_entries,
                             size_t values_per_page, const uint16_t* arena,
                             FlashInferScratch scratch, uint16_t* out, cudaStream_t stream) {
  const int group = heads / kv_heads;
  if (!FlashInferDecodeSupports(head_dim, group)) return cudaErrorNotSupported;
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!aligned(qkv) || !aligned(scratch.tile_out) || !aligned(scratch.local_out)) {
    return cudaErrorInvalidValue;
  }
  if (meta.num_rows == 0) return cudaSuccess;
#if CATSERVE_HAVE_FLASHINFER
  const int stride = (heads + 2 * kv_heads) * head_dim;  // a qkv row
  // One launch over a paged view: `blocks` blocks, block b attending request requests[b] (tile
  // tiles[b] of it when partitioned), its output and log2-sum-exp at row b of o and lse.
  auto launch = [&](const int32_t* indptr, const int32_t* pages, const int32_t* last_len,
                    bool partitioned, const int32_t* requests, const int32_t* tiles, int blocks,
                    const bool* valid, float* o, float* lse) {
    Params p(const_cast<float*>(qkv), /*q_rope_offset=*/nullptr,
             PagedView(kv_heads, head_dim, meta.decoder_rows, indptr, pages, last_len, layer,
                       page_entries, values_per_page, arena),
             o, lse, /*maybe_alibi_slopes=*/nullptr, heads, stride, head_dim, /*window_left=*/-1,
             /*logits_soft_cap=*/0.0f,
             /*sm_scale=*/1.0f / std::sqrt(static_cast<float>(head_dim)), /*rope_scale=*/1.0f,
             /*rope_theta=*/1e4f);
    p.kv_chunk_size_ptr = const_cast<int32_t*>(meta.tile_keys);
    p.request_indices = const_cast<int32_t*>(requests);
    p.kv_tile_indices = const_cast<int32_t*>(tiles);
    p.padded_batch_size = blocks;
    p.partition_kv = partitioned;
    p.block_valid_mask = const_cast<bool*>(valid);
    return Launch(head_dim, group, p, blocks, kv_heads, stream);
  };
  if (cudaError_t e =
          launch(meta.compressed_indptr, meta.compressed_pages, meta.compressed_last_len,
                 /*partitioned=*/true, meta.tile_request, meta.tile_index, meta.tiles,
                 meta.tile_valid, scratch.tile_out, scratch.tile_lse);
      e != cudaSuccess) {
    return e;
  }
  // Unpartitioned, a block reads its tile index but starts at key 0 whatever it says.
  if (cudaError_t e = launch(meta.local_indptr, meta.local_pages, meta.local_last_len,
                             /*partitioned=*/false, meta.local_request, meta.local_request,
                             meta.locals, meta.local_valid, scratch.local_out, scratch.local_lse);
      e != cudaSuccess) {
    return e;
  }
  MergeFlashInferKernel<<<dim3(meta.num_rows, heads), std::min(head_dim, 128), 0, stream>>>(
      meta.rows, heads, head_dim, scratch, out);
  return cudaGetLastError();
#else
  return cudaErrorNotSupported;
#endif
}

}  // namespace catserve::engine::cuda
