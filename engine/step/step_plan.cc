#include "engine/step/step_plan.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/kv/sequence.h"

namespace catserve::engine {

absl::Status ValidateStepSampling(absl::Span<const StepItem> items) {
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    if (!it.want_logits) continue;
    if (it.sampling == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("step item ", i, " wants a token but has no sampling settings"));
    }
    if (absl::Status s = ValidateSamplingParams(*it.sampling); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("step item ", i, ": ", s.message()));
    }
    if (it.logprobs < -1 || it.logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat("step item ", i, " asks for ", it.logprobs,
                                                     " top logprobs; at most ", kMaxTopLogprobs));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStep(const ModelConfig& config, absl::Span<const StepItem> items,
                          const KvPool& pool) {
  absl::flat_hash_set<const SequenceState*> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    if (it.seq == nullptr || it.num_tokens <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("step item ", i, " has no tokens to process"));
    }
    const SequenceState& s = *it.seq;
    if (!seen.insert(&s).second) {
      return absl::InvalidArgumentError("a sequence appears twice in one step");
    }
    if (!config.serves_chunk_size(s.chunk_size)) {
      return absl::InvalidArgumentError(absl::StrCat("step item ", i, " has chunk size ",
                                                     s.chunk_size,
                                                     ", which this model does not serve (requests "
                                                     "are checked by scheduler::ValidateRequest)"));
    }
    const int end = s.cached + it.num_tokens;
    if (s.cached < 0 || end > static_cast<int>(s.tokens.size())) {
      return absl::InvalidArgumentError(absl::StrCat("step item ", i, " asks for tokens up to ",
                                                     end, " but the sequence has ",
                                                     s.tokens.size()));
    }
    if (end > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence length ", end,
                                                     " exceeds max_position_embeddings ",
                                                     config.max_position_embeddings));
    }
    for (int t = s.cached; t < end; ++t) {
      if (s.tokens[t] < 0 || s.tokens[t] >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token id ", s.tokens[t], " is outside the vocabulary [0, ", config.vocab_size, ")"));
      }
    }
    const KvEntries need = KvEntriesAfter(end, s.chunk_size);
    if (pool.PagesFor(need.compressed) > static_cast<int>(s.pages.compressed.size()) ||
        pool.PagesFor(need.local) > static_cast<int>(s.pages.local.size())) {
      return absl::FailedPreconditionError(
          absl::StrCat("step item ", i, " has too few KV pages reserved"));
    }
  }
  return absl::OkStatus();
}

void StepPlan::Build(absl::Span<const StepItem> items) {
  rows.clear();
  chunks.clear();
  chunk_positions.clear();
  logit_row.assign(items.size(), -1);
  item_rows.assign(items.size(), {0, 0});
  int compressor_rows = 0;
  for (int i = 0; i < static_cast<int>(items.size()); ++i) {
    const SequenceState& s = *items[i].seq;
    const int l = s.chunk_size;
    const int n0 = s.cached, n1 = s.cached + items[i].num_tokens;
    const bool fresh = n0 == 0;
    const int c0 = n0 / l, c1 = n1 / l;
    const int all_compressed = 1 + c1;
    const int first_row = static_cast<int>(rows.size());
    if (fresh) rows.push_back({i, true, 0, 0, 1, -1});
    for (int j = c0; j < c1; ++j) {
      chunks.push_back({i, j, compressor_rows, static_cast<int>(rows.size())});
      for (int p = 0; p < l + 2; ++p) chunk_positions.push_back(p);
      compressor_rows += l + 2;
      rows.push_back({i, true, j + 1, 0, j + 2, -1});
    }
    // A new chunk's S: at the start, after a chunk completes, or resuming from a cached prefix.
    const bool new_local = fresh || c1 > c0 || s.separator_pending;
    if (new_local) rows.push_back({i, false, 0, 1, all_compressed, -1});
    // Tokens of the current (incomplete) chunk that are not yet in the local cache. The token
    // that completes a chunk is never fed: it reaches the decoder only through fx.
    for (int r = new_local ? 0 : n0 % l; r < n1 % l; ++r) {
      rows.push_back({i, false, r + 1, r + 2, all_compressed, s.tokens[c1 * l + r]});
    }
    logit_row[i] = static_cast<int>(rows.size()) - 1;
    item_rows[i] = {first_row, static_cast<int>(rows.size())};
  }
  row_positions.resize(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) row_positions[r] = rows[r].pos;
}

}  // namespace catserve::engine
