// KvSequence: one sequence's KV as the scheduler holds it, a handle it cannot see into.
#ifndef CATSERVE_SCHEDULER_KV_SEQUENCE_H_
#define CATSERVE_SCHEDULER_KV_SEQUENCE_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/kv/sequence.h"

namespace catserve::scheduler {

// The scheduler reads a sequence's tokens, chunk size and cached count and appends the tokens the
// engine draws; everything else is one owner's: the page table, the chunk size (a switch releases
// the pages), the reset of `cached` and a cached prefix's pending S are KvCacheManager's; the
// engine's steps advance `cached` (through KvCacheManager::StepState). As vLLM's KVCacheBlocks,
// the page vectors never reach the scheduler.
class KvSequence {
 public:
  KvSequence(std::vector<int32_t> tokens, int chunk_size) {
    state_.tokens = std::move(tokens);
    state_.chunk_size = chunk_size;
  }

  const std::vector<int32_t>& tokens() const { return state_.tokens; }
  int size() const { return static_cast<int>(state_.tokens.size()); }
  int chunk_size() const { return state_.chunk_size; }
  // Tokens whose KV is in the cache (computed, or taken from the prefix cache).
  int cached() const { return state_.cached; }
  // Tokens known but not yet in the cache.
  int pending() const { return size() - state_.cached; }

  // Appends the token the engine drew for it.
  void Append(int32_t token) { state_.tokens.push_back(token); }

 private:
  friend class KvCacheManager;
  engine::SequenceState state_;
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_KV_SEQUENCE_H_
