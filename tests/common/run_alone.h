#ifndef CATSERVE_TESTS_COMMON_RUN_ALONE_H_
#define CATSERVE_TESTS_COMMON_RUN_ALONE_H_

// One sequence through any engine, a step at a time, collecting the logits of every step: the
// per-row input of the oracle (tests/common/logits_oracle.h).

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/types/span.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"

namespace catserve::testing {

// Called after every step with the pool and the sequence (a negative control plants a defect in
// the cached KV here).
using AfterStep = std::function<void(engine::KvPool&, const engine::SequenceState&)>;

// Runs `tokens` through `engine` as one sequence: a first piece of `first_piece` tokens, then
// one token a step; returns the logits of every step (row s.cached after each).
inline std::vector<std::vector<float>> RunAlone(engine::Engine& engine,
                                                const std::vector<int32_t>& tokens, int chunk_size,
                                                int first_piece,
                                                const AfterStep& after_step = nullptr) {
  using namespace ::catserve::engine;
  const int V = engine.config().vocab_size;
  absl::StatusOr<KvPool> pool = engine.CreateKvPool(64, 16);
  EXPECT_TRUE(pool.ok()) << pool.status();
  if (!pool.ok()) return {};
  SequenceState s;
  s.chunk_size = chunk_size;
  s.tokens = tokens;
  std::vector<std::vector<float>> rows;
  int n = first_piece;
  while (s.cached < static_cast<int>(tokens.size())) {
    EXPECT_TRUE(ReservePages(*pool, s, s.cached + n));
    std::vector<float> logits(V);
    StepItem item{&s, n, true};
    absl::Status st = engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) break;
    TrimPages(*pool, s);
    if (after_step) after_step(*pool, s);
    rows.push_back(std::move(logits));
    n = 1;
  }
  pool->ReleaseAll(s.pages);
  EXPECT_EQ(pool->used_pages(), 0);
  return rows;
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_RUN_ALONE_H_
