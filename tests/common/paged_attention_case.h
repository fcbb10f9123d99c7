#ifndef CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_
#define CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_

// The step the decode-attention tests run (the CPU's against a direct softmax, the GPU's against
// the CPU's): four sequences in a host KvPool of one dtype, every value of every page random —
// decode at chunk 4; a chunk completing at chunk 2 ([fx, S]); a fresh prefill of 23 tokens at
// chunk 4 (23 rows of one item); decode at chunk 1 over 50 compressed entries (51 keys, the
// longest item) — with 4 entries a page, so most splits end mid-page. The heads' shape varies
// (Shapes()): the first, six query heads over two kv heads of 48, is groups of 3, which the AVX2
// kernel runs as tiles of 2 and 1 heads; the others reach every GQA tile of the AVX2 kernel, the
// composed path, and every lane split and group size of the GPU's attention kernels.

#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/engine.h"
#include "engine/step/step_plan.h"
#include "gtest/gtest.h"

namespace catserve::testing {

// The heads of a PagedAttentionCase: query heads, kv heads, head size.
struct PagedAttentionShape {
  int heads = 6, kv_heads = 2, head_dim = 48;
};
inline void PrintTo(const PagedAttentionShape& s, std::ostream* os) {
  *os << s.heads << " heads over " << s.kv_heads << " kv heads of " << s.head_dim;
}

struct PagedAttentionCase {
  static constexpr int kLayers = 2, kLayer = 1, kPageEntries = 4, kPages = 256;

  using Shape = PagedAttentionShape;
  // Groups of 1, 2, 3, 5 and 8; head sizes that are multiples of 16 (the AVX2 kernel's), of 8
  // only (24: the CPU's composed path, the GPU's 16-byte loads with idle lanes) and of neither
  // (20: the GPU's scalar kernel).
  static std::vector<Shape> Shapes() {
    return {{6, 2, 48}, {4, 4, 64}, {4, 2, 128}, {8, 1, 32}, {2, 2, 16}, {5, 1, 24}, {2, 1, 20}};
  }
  static std::string Name(const Shape& s) {
    return std::to_string(s.heads) + "q" + std::to_string(s.kv_heads) + "kv" +
           std::to_string(s.head_dim);
  }

  Shape shape;

  std::optional<engine::KvPool> pool;
  std::vector<engine::SequenceState> seqs;
  std::vector<engine::StepItem> items;  // point into seqs
  engine::StepPlan plan;
  std::vector<float> qkv;  // plan.rows x (heads + 2 kv heads) x head_dim

  // Fills every member; ASSERTs inside (call through ASSERT_NO_FATAL_FAILURE). `longest` is the
  // cached length of the chunk-1 decode (kLongest at most, so that its keys fit the pool).
  static constexpr int kLongest = 700;
  void Build(engine::KvDtype dtype, uint32_t seed, Shape heads_shape = {}, int longest = 49) {
    shape = heads_shape;
    const engine::KvGeometry g{.layers = kLayers,
                               .kv_heads = shape.kv_heads,
                               .head_dim = shape.head_dim,
                               .page_entries = kPageEntries,
                               .dtype = dtype};
    absl::StatusOr<engine::KvPool> created = engine::KvPool::Create(g, kPages);
    ASSERT_TRUE(created.ok()) << created.status();
    pool.emplace(*std::move(created));
    ASSERT_LE(longest, kLongest);
    const int chunk[] = {4, 2, 4, 1}, cached[] = {37, 41, 0, longest}, fed[] = {1, 1, 23, 1};
    seqs.resize(4);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    for (int i = 0; i < 4; ++i) {
      engine::SequenceState& s = seqs[i];
      s.chunk_size = chunk[i];
      s.cached = cached[i];
      s.tokens.assign(cached[i] + fed[i], 5);
      ASSERT_TRUE(engine::ReservePages(*pool, s, cached[i] + fed[i]));
      items.push_back({&s, fed[i], true});
      for (std::vector<int32_t>* region : {&s.pages.compressed, &s.pages.local}) {
        for (int32_t page : *region) {
          std::vector<float> values(g.values_per_page());
          for (float& v : values) v = normal(rng);
          engine::StoreKvValues(g.dtype, values.data(), static_cast<int>(values.size()),
                                pool->page_data(page));
        }
      }
    }
    plan.Build(items);
    qkv.resize(plan.rows.size() * (shape.heads + 2 * shape.kv_heads) * shape.head_dim);
    for (float& v : qkv) v = normal(rng);
  }
};

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_
