#ifndef CATSERVE_TESTS_COMMON_INTERLEAVED_RUN_H_
#define CATSERVE_TESTS_COMMON_INTERLEAVED_RUN_H_

// One harness for the incremental-decoding parity tests of every backend: ragged batches of
// sequences of different chunk sizes, prompts fed in pieces, sequences joining at later steps,
// all sharing Engine::Step calls on one KV pool. It checks exact page accounting after every
// step and returns every logits row the engine produced, tagged with its sequence and position,
// for the caller to compare with its oracle.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"

namespace catserve::testing {

struct InterleavedCase {
  int chunk_size;
  int prompt;     // tokens prefilled before the first logits row
  int total;      // tokens in the end
  int join_step;  // the step at which the sequence enters the batch
  int piece;      // longest prefill piece per step
};

struct LogitsRow {
  int case_index;  // into the cases passed to RunInterleaved
  int position;    // the row of the reference forward it equals: prediction of token `position`
  std::vector<float> logits;
};

// Twelve sequences covering every chunk size, single-token and whole-prompt pieces, prompts
// shorter and longer than a chunk, late joiners and the model's full context (128 tokens).
inline std::vector<InterleavedCase> MixedCases() {
  return {
      {1, 7, 40, 0, 3},     {2, 13, 60, 1, 64}, {4, 1, 33, 0, 1},       {8, 37, 90, 3, 8},
      {16, 48, 127, 2, 16}, {16, 5, 64, 5, 2},  {8, 16, 41, 0, 64},     {4, 64, 100, 7, 20},
      {2, 2, 19, 9, 1},     {1, 30, 55, 4, 7},  {16, 127, 128, 0, 128}, {8, 100, 128, 1, 33},
  };
}

// Rows a complete run returns: one per generated position plus the prompt's last.
inline int ExpectedRows(const std::vector<InterleavedCase>& cases) {
  int rows = 0;
  for (const InterleavedCase& k : cases) rows += k.total - k.prompt + 1;
  return rows;
}

// Each sequence's tokens, drawn from `seed` in case order (ids 3..V-1).
inline std::vector<std::vector<int32_t>> InterleavedTokens(
    const std::vector<InterleavedCase>& cases, int vocab_size, uint64_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tok(3, vocab_size - 1);
  std::vector<std::vector<int32_t>> tokens(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    for (int t = 0; t < cases[i].total; ++t) tokens[i].push_back(tok(rng));
  }
  return tokens;
}

inline std::vector<LogitsRow> RunInterleaved(engine::Engine& engine,
                                             const std::vector<InterleavedCase>& cases,
                                             uint64_t seed) {
  using namespace ::catserve::engine;
  const int V = engine.config().vocab_size;
  std::vector<LogitsRow> rows;
  absl::StatusOr<KvPool> pool = engine.CreateKvPool(4096, 4);
  EXPECT_TRUE(pool.ok()) << pool.status();
  if (!pool.ok()) return rows;
  const std::vector<std::vector<int32_t>> tokens = InterleavedTokens(cases, V, seed);
  std::vector<SequenceState> seqs(cases.size());
  std::vector<bool> done(cases.size(), false);
  for (size_t i = 0; i < cases.size(); ++i) seqs[i].chunk_size = cases[i].chunk_size;
  std::vector<float> logits;
  for (int step = 0;; ++step) {
    std::vector<StepItem> items;
    std::vector<int> owners;
    bool any_left = false;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (done[i]) continue;
      any_left = true;
      const InterleavedCase& spec = cases[i];
      if (step < spec.join_step) continue;
      SequenceState& seq = seqs[i];
      const int cached = seq.cached;
      const int n = cached < spec.prompt ? std::min(spec.piece, spec.prompt - cached) : 1;
      for (int k = 0; k < n; ++k) seq.tokens.push_back(tokens[i][cached + k]);
      EXPECT_TRUE(ReservePages(*pool, seq, cached + n));
      items.push_back({&seq, n, cached + n >= spec.prompt});
      owners.push_back(static_cast<int>(i));
    }
    if (!any_left) break;
    if (items.empty()) continue;
    logits.assign(items.size() * V, NAN);
    const absl::Status st = engine.StepLogits(items, *pool, absl::MakeSpan(logits));
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return rows;
    for (size_t i = 0; i < items.size(); ++i) {
      const int owner = owners[i];
      SequenceState& seq = seqs[owner];
      TrimPages(*pool, seq);
      if (items[i].want_logits) {
        rows.push_back({owner, seq.cached,
                        std::vector<float>(logits.begin() + i * V, logits.begin() + (i + 1) * V)});
      }
      if (seq.cached == cases[owner].total) {
        pool->ReleaseAll(seq.pages);
        done[owner] = true;
      }
    }
    int expected_pages = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (done[i] || seqs[i].cached == 0) continue;
      const KvEntries e = KvEntriesAfter(seqs[i].cached, seqs[i].chunk_size);
      expected_pages += pool->PagesFor(e.compressed) + pool->PagesFor(e.local);
    }
    EXPECT_EQ(pool->used_pages(), expected_pages) << "step " << step;
  }
  EXPECT_EQ(pool->used_pages(), 0);
  return rows;
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_INTERLEAVED_RUN_H_
