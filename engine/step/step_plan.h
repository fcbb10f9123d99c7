#ifndef CATSERVE_ENGINE_STEP_STEP_PLAN_H_
#define CATSERVE_ENGINE_STEP_STEP_PLAN_H_

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/kv/kv_pool.h"
#include "engine/model/config.h"
#include "engine/step/engine.h"

namespace catserve::engine {

// The engine's own preconditions, checked before anything changes so that a caller's mistake
// fails the step instead of reading outside the model or the pool (what a request may ask is
// scheduler::ValidateRequest's rule, checked before a request reaches a step): non-empty
// items, each sequence once, a served chunk size, tokens in the vocabulary and within
// max_position_embeddings, pages reserved for KvEntriesAfter(cached + num_tokens).
// INVALID_ARGUMENT or FAILED_PRECONDITION (too few pages), naming the item.
absl::Status ValidateStep(const ModelConfig& config, absl::Span<const StepItem> items,
                          const KvPool& pool);

// Checks what Engine::Step draws with, before anything changes: every item with want_logits
// has sampling settings in range (ValidateSamplingParams) and logprobs in [-1, kMaxTopLogprobs].
// INVALID_ARGUMENT naming the item.
absl::Status ValidateStepSampling(absl::Span<const StepItem> items);

// What one step computes, backend-independent (ENGINE.md, "One step"): the decoder positions of
// every item in item order, and the chunks to compress. Both backends build it the same way, so
// they run the same positions with the same visibility.
struct StepPlan {
  // One decoder position.
  struct Row {
    int item;
    bool compressed;         // an F entry (RoPE position 0) rather than S or a token
    int entry;               // compressed index or local slot
    int pos;                 // RoPE position
    int visible_compressed;  // compressed entries 0..visible_compressed-1 are visible
    int token;               // the token fed at a token row; -1 for F and S rows
  };
  // One chunk to compress, whose fx is the input of decoder row `decoder_row`.
  struct Chunk {
    int item;
    int index;      // chunk index in its sequence
    int first_row;  // its first compressor row (it has chunk_size + 2 of them)
    int decoder_row;
  };

  std::vector<Row> rows;
  std::vector<int> row_positions;  // rows[r].pos
  std::vector<Chunk> chunks;
  std::vector<int> chunk_positions;  // RoPE position of every compressor row (0..l+1 per chunk)
  std::vector<int> logit_row;        // per item: its last decoder row
  std::vector<std::pair<int, int>> item_rows;  // per item: its decoder rows [first, end)

  // Plans a validated step. Reuses the vectors' storage across steps.
  void Build(absl::Span<const StepItem> items);
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_STEP_STEP_PLAN_H_
