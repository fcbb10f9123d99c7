#ifndef CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_
#define CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/engine.h"
#include "scheduler/kv_sequence.h"
#include "scheduler/prefix_cache.h"

namespace catserve::scheduler {

// The pool's accounting at one moment.
struct KvCacheSnapshot {
  int pages_used = 0;  // pages live sequences hold (a page they share counts once)
  int pages_total = 0;
  int pages_cached = 0;     // pages the prefix cache holds (some also held by sequences)
  int pages_evictable = 0;  // cached pages no sequence holds: free for the taking
  int pages_free = 0;       // on the pool's free list (neither held nor cached)
  // Prefix cache lookups since start, in tokens: looked up (a sequence's tokens when it starts
  // from an empty cache) and found (tokens whose compressed pages it took from the cache).
  int64_t prefix_query_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  int pages_promised = 0;  // pages running sequences may still claim (see Promise)
  size_t bytes_used = 0;
  size_t bytes_total = 0;
};

// The one home of the scheduler's compressed-KV memory: owns the KvPool and makes every page
// decision (what a sequence peaks at, what it holds, what growing it costs, what is promised to
// running sequences, reserve, trim, release). The scheduler and its policies ask it; none of
// them counts pages. Not thread-safe: owned by the scheduler thread.
class KvCacheManager {
 public:
  // A pool of `num_pages` pages of `page_entries` entries in the memory `engine` steps on, with
  // automatic prefix caching (PrefixCache) when `prefix_cache`.
  static absl::StatusOr<KvCacheManager> Create(const engine::Engine& engine, int num_pages,
                                               int page_entries, bool prefix_cache = true);

  KvCacheManager(KvCacheManager&&) = default;
  KvCacheManager& operator=(KvCacheManager&&) = default;

  bool prefix_caching() const { return prefix_ != nullptr; }

  // Pages a sequence peaks at while its cache grows to `tokens` tokens at `chunk_size`
  // (engine::PeakKvEntries in this pool's pages).
  int PeakPages(int tokens, int chunk_size) const;
  // Pages `seq` holds now.
  int HeldPages(const KvSequence& seq) const;
  // Pages `seq` needs beyond those it holds to have `tokens` tokens cached.
  int PagesToGrow(const KvSequence& seq, int tokens) const;

  // Promises sequence `id` (whose state `seq` outlives the promise) that it may grow to
  // `peak_pages` pages without waiting: Headroom() keeps them back. Replaces an earlier promise.
  void Promise(uint64_t id, const KvSequence* seq, int peak_pages);
  // Withdraws the promise of `id` (no-op without one).
  void Unpromise(uint64_t id);
  // Free pages that no promise holds back: what admission may hand out.
  int Headroom() const;
  // Pages free to allocate: the pool's free pages and the cached pages no sequence holds (evicted,
  // least recently used first, when a Reserve needs them). The cache never takes room a sequence
  // could have had.
  int free_pages() const { return pool_.free_pages() + pool_.evictable_pages(); }
  int total_pages() const { return pool_.total_pages(); }

  // Switches `seq` to `chunk_size`, releasing its pages first (its tokens are prefilled again at
  // the new size).
  void Rechunk(KvSequence& seq, int chunk_size);
  // The engine's view of `seq`, for an Engine::Step item (the step advances its cached count).
  engine::SequenceState* StepState(KvSequence& seq) { return &seq.state_; }
  const engine::SequenceState& StepState(const KvSequence& seq) const { return seq.state_; }

  // Prefix caching. A sequence about to be prefilled from nothing (cached == 0, no pages) takes
  // the longest run of cached compressed pages that starts its tokens at its chunk size (one
  // reference each, read-only), leaving at least one token to compute; it starts at that chunk
  // boundary with its S pending (KvSequence). Returns the tokens it skips (0: none).
  int AttachPrefix(KvSequence& seq);
  // Indexes the compressed pages of `seq` that filled up since its last call (a page it took from
  // the cache, or one another sequence published first, stays as it is).
  void Publish(KvSequence& seq);

  // Grows `seq`'s pages to cover `tokens` cached tokens, evicting unheld cached pages as needed.
  // Allocates nothing and returns false if the pool cannot supply them.
  bool Reserve(KvSequence& seq, int tokens);
  // Releases the pages `seq`'s cached tokens no longer need.
  void Trim(KvSequence& seq);
  // Releases every page of `seq` (a shared one loses one reference; a cached one stays cached)
  // and empties its cache (cached = 0: the tokens stay, to be prefilled again); returns the pages
  // released. Call it for every sequence that ends.
  int Release(KvSequence& seq);
  // Bytes of `pages` pages.
  size_t BytesOf(int pages) const {
    return static_cast<size_t>(pages) * pool_.geometry().page_bytes();
  }

  KvCacheSnapshot Snapshot() const;
  // The pool, for Engine::Step.
  engine::KvPool& pool() { return pool_; }

 private:
  KvCacheManager(engine::KvPool pool, bool prefix_cache);

  struct Promised {
    const KvSequence* seq;
    int peak_pages;
  };
  // How far a sequence's compressed pages are published.
  struct Chain {
    int published = 0;      // its first `published` compressed pages are keyed
    uint64_t last_key = 0;  // the key of the last of them
  };

  // Evicts unheld cached pages until `pages` pages are free in the pool (or none is left).
  void MakeRoom(int pages);

  engine::KvPool pool_;
  std::map<uint64_t, Promised> promises_;
  std::unique_ptr<PrefixCache> prefix_;  // null with prefix caching off
  absl::flat_hash_map<const KvSequence*, Chain> chains_;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_
