#ifndef CATSERVE_ENGINE_KV_PAGE_LAYOUT_H_
#define CATSERVE_ENGINE_KV_PAGE_LAYOUT_H_

// Where a value lives in a KV page, stated once for the host and the device (this header is plain
// C++ that nvcc compiles too). A page holds `page_entries` entries of every layer, laid out
// [layer][k or v][kv_head][slot][head_dim]: the keys (or values) one attention task reads, one
// layer and one kv head, are contiguous across the page's slots.

#include <cstddef>

#if defined(__CUDACC__)
#define CATSERVE_PAGE_LAYOUT_FN __host__ __device__ inline
#else
#define CATSERVE_PAGE_LAYOUT_FN inline
#endif

namespace catserve::engine {

// The index, in values from the start of its page, of the first of the head_dim values of the
// key (kv = 0) or value (kv = 1) of kv head `kv_head` at `slot` in `layer`.
CATSERVE_PAGE_LAYOUT_FN size_t PageValueIndex(int layer, int kv, int kv_head, int slot,
                                              int kv_heads, int page_entries, int head_dim) {
  return ((static_cast<size_t>(layer) * 2 + kv) * kv_heads + kv_head) * page_entries * head_dim +
         static_cast<size_t>(slot) * head_dim;
}

}  // namespace catserve::engine

#undef CATSERVE_PAGE_LAYOUT_FN

#endif  // CATSERVE_ENGINE_KV_PAGE_LAYOUT_H_
