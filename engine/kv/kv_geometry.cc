#include "engine/kv/kv_geometry.h"

namespace catserve::engine {

KvGeometry KvGeometryOf(const ModelConfig& config, int page_entries, KvDtype dtype) {
  return KvGeometry{.layers = config.num_hidden_layers,
                    .kv_heads = config.num_kv_heads,
                    .head_dim = config.head_dim(),
                    .page_entries = page_entries,
                    .dtype = dtype};
}

}  // namespace catserve::engine
