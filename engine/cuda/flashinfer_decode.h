// The decoder's attention for the rows of decode items, on FlashInfer's paged decode kernel
// (BatchDecodeWithPagedKVCacheKernel from the pinned flashinfer-python wheel's headers, which
// deploy/install-deps.sh unpacks for CUDA builds). Plain launch functions, like kernels.h.
//
// CAT's two key ranges of a decoder row (kernels.h's AttentionRow: compressed entries
// [0, visible_compressed), local entries [0, visible_local)) are two FlashInfer requests over the
// same arena, in two launches, each of whose request b is decoder row b (so a request reads its
// query at row b of qkv): the compressed launch's request b lists the row's compressed pages with
// last_page_len = what the row sees of its last one, and runs partitioned into tiles of
// kFlashInferTileKeys keys; the local launch's request b lists its local pages, unpartitioned. A
// row outside the FlashInfer set has no pages in either. Each launch leaves, per block and q head,
// a normalised output and its log2-sum-exp (fp32); one merge kernel then combines a row's tiles in
// order, then its local block, exactly (log-sum-exp in base 2), into out's bf16 row.
//
// The tiles depend only on the row's own visible counts, never on the step's other rows, so a
// row's result does not change with its batch.
#ifndef CATSERVE_ENGINE_CUDA_FLASHINFER_DECODE_H_
#define CATSERVE_ENGINE_CUDA_FLASHINFER_DECODE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace catserve::engine::cuda {

// Keys per compressed tile (a block of the partitioned launch).
inline constexpr int kFlashInferTileKeys = 256;

// Whether this build has FlashInfer's kernel for head_dim and GQA group (q heads per kv head):
// head_dim 64 or 128, group 1, 2, 4 or 8, when the headers were found at configure time.
bool FlashInferDecodeSupports(int head_dim, int group);

// One decoder row that FlashInfer attends, in the order of its blocks.
struct FlashInferRow {
  int32_t row;         // decoder row: its query in qkv, its output row
  int32_t first_tile;  // its compressed tiles are blocks [first_tile, first_tile + tiles)
  int32_t tiles;       // of the compressed launch (0: it sees no compressed entry)
  int32_t local;       // its block of the local launch, -1 when it sees no local entry
};

// A step's metadata, device pointers (int32). Both paged views span every decoder row
// (`decoder_rows` requests).
struct FlashInferDecodeMeta {
  int decoder_rows;
  const int32_t* compressed_indptr;  // [decoder_rows + 1]
  const int32_t* compressed_pages;
  const int32_t* compressed_last_len;  // [decoder_rows]
  const int32_t* local_indptr;         // [decoder_rows + 1]
  const int32_t* local_pages;
  const int32_t* local_last_len;  // [decoder_rows]
  // Compressed launch: block t is tile tile_index[t] of request tile_request[t].
  const int32_t* tile_request;
  const int32_t* tile_index;
  int tiles;
  // Local launch: block j is request local_request[j].
  const int32_t* local_request;
  int locals;
  const int32_t* tile_keys;  // one value: kFlashInferTileKeys
  const FlashInferRow* rows;
  int num_rows;
  // Null, or per block whether it runs (a step replayed from a CUDA graph launches a fixed grid
  // whose unused blocks return at once); bytes of 0 or 1.
  const bool* tile_valid = nullptr;
  const bool* local_valid = nullptr;
};

// fp32 scratch: per block and q head, an output (head_dim values) and a log2-sum-exp. FlashInfer
// stores outputs 16 bytes at a time: both output arrays must be 16-byte aligned.
struct FlashInferScratch {
  float* tile_out;   // [tiles, heads, head_dim]
  float* tile_lse;   // [tiles, heads]
  float* local_out;  // [locals, heads, head_dim]
  float* local_lse;  // [locals, heads]
};

// The floats of scratch `tiles` compressed and `locals` local blocks need.
inline size_t FlashInferScratchFloats(size_t tiles, size_t locals, int heads, int head_dim) {
  return (tiles + locals) * heads * (head_dim + 1);
}
// The scratch laid out in `base` (16-byte aligned, FlashInferScratchFloats long): both outputs
// first, whose sizes are multiples of 4 floats for the head sizes FlashInfer takes, so both stay
// aligned, then the log2-sum-exps.
inline FlashInferScratch FlashInferScratchAt(float* base, size_t tiles, size_t locals, int heads,
                                             int head_dim) {
  const size_t out = static_cast<size_t>(heads) * head_dim, lse = heads;
  return {.tile_out = base,
          .tile_lse = base + (tiles + locals) * out,
          .local_out = base + tiles * out,
          .local_lse = base + (tiles + locals) * out + tiles * lse};
}

// Attention of meta.rows at `layer` into out [decoder rows, heads * head_dim] bf16 (other rows
// untouched). cudaErrorNotSupported when FlashInferDecodeSupports(head_dim, heads / kv_heads) is
// false; cudaErrorInvalidValue, enqueuing nothing, when qkv or an output array of `scratch` is not
// 16-byte aligned.
cudaError_t FlashInferDecode(const float* qkv, int heads, int kv_heads, int head_dim,
                             const FlashInferDecodeMeta& meta, int layer, int page_entries,
                             size_t values_per_page, const uint16_t* arena,
                             FlashInferScratch scratch, uint16_t* out, cudaStream_t stream);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_FLASHINFER_DECODE_H_
