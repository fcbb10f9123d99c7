#ifndef CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_
#define CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_

// The step the decode-attention tests run (the CPU's against a direct softmax, the GPU's against
// the CPU's): four sequences in a host KvPool of one dtype, every value of every page random —
// decode at chunk 4; a chunk completing at chunk 2 ([fx, S]); a fresh prefill of 23 tokens at
// chunk 4 (23 rows of one item); decode at chunk 1 over 50 compressed entries (51 keys, the
// longest item) — with 4 entries a page, so most splits end mid-page. Six query heads over two kv
// heads of 48: groups of 3, which the AVX2 kernel runs as tiles of 2 and 1 heads.

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "engine/engine.h"
#include "engine/kv_pool.h"
#include "engine/sequence.h"
#include "engine/step_plan.h"
#include "gtest/gtest.h"

namespace catserve::testing {

struct PagedAttentionCase {
  static constexpr int kLayers = 2, kLayer = 1, kHeads = 6, kKvHeads = 2, kHeadDim = 48,
                       kPageEntries = 4, kPages = 256;

  std::optional<engine::KvPool> pool;
  std::vector<engine::SequenceState> seqs;
  std::vector<engine::StepItem> items;  // point into seqs
  engine::StepPlan plan;
  std::vector<float> qkv;  // plan.rows x (heads + 2 kv heads) x head_dim

  // Fills every member; ASSERTs inside (call through ASSERT_NO_FATAL_FAILURE).
  void Build(engine::KvDtype dtype, uint32_t seed) {
    const engine::KvGeometry g{.layers = kLayers,
                               .kv_heads = kKvHeads,
                               .head_dim = kHeadDim,
                               .page_entries = kPageEntries,
                               .dtype = dtype};
    absl::StatusOr<engine::KvPool> created = engine::KvPool::Create(g, kPages);
    ASSERT_TRUE(created.ok()) << created.status();
    pool.emplace(*std::move(created));
    const int chunk[] = {4, 2, 4, 1}, cached[] = {37, 41, 0, 49}, fed[] = {1, 1, 23, 1};
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
    qkv.resize(plan.rows.size() * (kHeads + 2 * kKvHeads) * kHeadDim);
    for (float& v : qkv) v = normal(rng);
  }
};

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_PAGED_ATTENTION_CASE_H_
