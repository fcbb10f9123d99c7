#ifndef CATSERVE_TESTS_COMMON_PLANTED_DEFECTS_H_
#define CATSERVE_TESTS_COMMON_PLANTED_DEFECTS_H_

// Structural bugs planted through data, for the negative controls of the logits oracle
// (tests/common/logits_oracle.h): a copy of a model's weights that computes what a buggy engine
// would, or a corruption of the cached KV between steps. No engine code is touched, so the same
// defects feed the CPU engine and the CUDA engine.

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"
#include "tests/common/run_alone.h"

namespace catserve::testing {

// The adaptive rows of chunk sizes `a` and `b` swapped, in the decoder and the compressor: what
// an engine that indexes them by the wrong chunk size computes.
inline engine::ModelWeights SwapAdaptiveRows(engine::ModelWeights w, int width_d, int width_c,
                                             int a, int b) {
  auto swap_rows = [](std::vector<float>& table, int width, int r0, int r1) {
    std::swap_ranges(table.begin() + static_cast<size_t>(r0) * width,
                     table.begin() + static_cast<size_t>(r0 + 1) * width,
                     table.begin() + static_cast<size_t>(r1) * width);
  };
  swap_rows(w.decoder.adaptive_token, width_d, a, b);
  swap_rows(w.compressor.adaptive_tokens, width_c, a, b);
  return w;
}

// Every decoder key rotated by one more RoPE position than its query: the key projection (and
// its bias) multiplied by the rotate-half rotation of position 1. Without qk_norm this is exactly
// an engine whose keys carry a RoPE position offset of one; with qk_norm it is close to it.
inline engine::ModelWeights KeysOneRopePositionAhead(engine::ModelWeights w,
                                                     const engine::ModelConfig& c) {
  const int hd = c.head_dim(), half = hd / 2;
  for (engine::BlockWeights& b : w.decoder.layers) {
    auto rotate = [&](float* v, size_t stride) {  // one head's key (hd values, `stride` apart)
      for (int i = 0; i < half; ++i) {
        const double angle = std::pow(c.rope_theta, -2.0 * i / hd);
        const float cs = static_cast<float>(std::cos(angle)),
                    sn = static_cast<float>(std::sin(angle));
        float& x0 = v[i * stride];
        float& x1 = v[(i + half) * stride];
        const float r0 = x0 * cs - x1 * sn, r1 = x1 * cs + x0 * sn;
        x0 = r0;
        x1 = r1;
      }
    };
    const size_t k_row = static_cast<size_t>(b.heads) * b.head_dim;  // first key row of qkv
    for (int h = 0; h < b.kv_heads; ++h) {
      const size_t head_row = k_row + static_cast<size_t>(h) * hd;
      for (int col = 0; col < b.width; ++col) rotate(&b.qkv[head_row * b.width + col], b.width);
      if (!b.qkv_bias.empty()) rotate(&b.qkv_bias[head_row], 1);
    }
  }
  return w;
}

// The compressor's chunk-index embedding read one row late (pos_tokens[index + 1] for chunk
// `index`): what an engine with an off-by-one chunk index computes.
inline engine::ModelWeights ChunkIndexOneLate(engine::ModelWeights w, int width_c) {
  std::vector<float>& p = w.compressor.pos_tokens;
  std::rotate(p.begin(), p.begin() + width_c, p.end());
  return w;
}

// An AfterStep for a host pool of any KV dtype: once a sequence's local cache holds exactly S and
// its first token, swaps the values (not the keys) of those two entries in every layer and head, as
// an engine that writes V to the wrong slot would. (Swapping keys and values together would change
// nothing: attention does not depend on the order of its entries.) Later steps read them only at
// chunk sizes above 2.
inline AfterStep SwapFirstTwoLocalSlots() {
  return [](engine::KvPool& pool, const engine::SequenceState& s) {
    const engine::KvEntries e = engine::KvEntriesAfter(s.cached, s.chunk_size);
    if (e.local != 2) return;
    const engine::KvGeometry& g = pool.geometry();
    std::byte* page = pool.page_data(s.pages.local[0]);
    const size_t slot_bytes = static_cast<size_t>(g.head_dim) * g.bytes_per_value();
    for (size_t block = 0; block < static_cast<size_t>(g.layers) * 2 * g.kv_heads; ++block) {
      if ((block / g.kv_heads) % 2 == 0) continue;  // [layer][k|v][kv_head]: keep the keys
      std::byte* slots = page + block * g.page_entries * slot_bytes;
      std::swap_ranges(slots, slots + slot_bytes, slots + slot_bytes);
    }
  };
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_PLANTED_DEFECTS_H_
