#ifndef CATSERVE_ENGINE_KV_SEQUENCE_H_
#define CATSERVE_ENGINE_KV_SEQUENCE_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/kv/kv_pool.h"

namespace catserve::engine {

// KV entries a sequence holds once `tokens` tokens are in its cache, at chunk size `chunk_size`:
// compressed F_0, fx_0..fx_{c-1} (c = completed chunks) and local S + the current chunk's tokens.
struct KvEntries {
  int compressed = 0;
  int local = 0;
};
inline KvEntries KvEntriesAfter(int tokens, int chunk_size) {
  if (tokens <= 0) return {};
  return {1 + tokens / chunk_size, 1 + tokens % chunk_size};
}
// The most entries each region holds at any point while a sequence's cache grows from empty to
// `tokens` tokens at chunk size `chunk_size` (>= 1): the compressed region only grows, the local
// one peaks at min(chunk_size, 1 + tokens). Everything that sizes KV memory ahead derives from
// this one statement.
inline KvEntries PeakKvEntries(int tokens, int chunk_size) {
  if (tokens <= 0) return {};
  return {1 + tokens / chunk_size, std::min(chunk_size, 1 + tokens)};
}
// Pages of `page_entries` entries a sequence peaks at: each region's peak, in whole pages.
inline int PeakPages(int tokens, int chunk_size, int page_entries) {
  const KvEntries peak = PeakKvEntries(tokens, chunk_size);
  return (peak.compressed + page_entries - 1) / page_entries +
         (peak.local + page_entries - 1) / page_entries;
}

// The decode state of one sequence. `tokens` holds every token known (prompt, then generated);
// the first `cached` of them are in the KV cache. The owner appends tokens, makes sure `pages`
// covers KvEntriesAfter(new cached count) (see ReservePages), and asks the engine to advance.
//
// A sequence may also start from compressed pages another sequence computed (a cached prefix,
// scheduler/prefix_cache.h): then `cached` is a chunk boundary, the compressed region holds F_0..
// F_{cached / chunk_size} and the local region is empty, with `separator_pending` set: the next
// step feeds the chunk's S before any token (StepPlan::Build), and the engine clears the flag.
struct SequenceState {
  int chunk_size = 0;
  std::vector<int32_t> tokens;
  int cached = 0;
  SequencePages pages;
  bool separator_pending = false;
};

// Grows the sequence's pages to what `tokens` cached tokens need. Allocates nothing and returns
// false if the pool cannot supply them.
bool ReservePages(KvPool& pool, SequenceState& seq, int tokens);
// Pages that `tokens` cached tokens need beyond what the sequence holds now.
int PagesToReserve(const KvPool& pool, const SequenceState& seq, int tokens);
// Releases pages beyond what the sequence's cached tokens need (the local region shrinks at a
// chunk boundary).
void TrimPages(KvPool& pool, SequenceState& seq);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KV_SEQUENCE_H_
