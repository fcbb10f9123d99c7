#ifndef CATSERVE_ENGINE_KV_KV_GEOMETRY_H_
#define CATSERVE_ENGINE_KV_KV_GEOMETRY_H_

#include <cstddef>

#include "engine/kv/kv_dtype.h"
#include "engine/model/config.h"

namespace catserve::engine {

// Shape of one page of compressed-KV storage. An entry is the K and V of one decoder position for
// every layer; a page holds `page_entries` entries. Within a page the values are laid out as
// [layer][k or v][kv_head][slot][head_dim]: the keys one attention task reads (one layer, one kv
// head) are contiguous across the page's slots. A value is stored as `dtype`: fp32, bf16 or fp16
// on the CPU backend (EngineOptions::kv_dtype), bf16 on the CUDA backend.
struct KvGeometry {
  int layers = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int page_entries = 16;
  KvDtype dtype = KvDtype::kFp32;

  int bytes_per_value() const { return KvDtypeBytes(dtype); }

  size_t entry_width() const { return static_cast<size_t>(kv_heads) * head_dim; }
  size_t values_per_page() const {
    return static_cast<size_t>(layers) * 2 * page_entries * entry_width();
  }
  // Bytes one entry takes for all layers.
  size_t entry_bytes() const {
    return static_cast<size_t>(layers) * 2 * entry_width() * bytes_per_value();
  }
  size_t page_bytes() const { return values_per_page() * bytes_per_value(); }
};

// The geometry of a model's pages: its layers, kv heads and head size, `page_entries` entries a
// page, values stored as `dtype`. Every pool, engine and sizing decision takes its geometry from
// here.
KvGeometry KvGeometryOf(const ModelConfig& config, int page_entries, KvDtype dtype);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KV_KV_GEOMETRY_H_
