#ifndef CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_
#define CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/status/statusor.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/engine.h"

namespace catserve::scheduler {

// The pool's accounting at one moment.
struct KvCacheSnapshot {
  int pages_used = 0;
  int pages_total = 0;
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
  // A pool of `num_pages` pages of `page_entries` entries in the memory `engine` steps on.
  static absl::StatusOr<KvCacheManager> Create(const engine::Engine& engine, int num_pages,
                                               int page_entries);

  KvCacheManager(KvCacheManager&&) = default;
  KvCacheManager& operator=(KvCacheManager&&) = default;

  // Pages a sequence peaks at while its cache grows to `tokens` tokens at `chunk_size`
  // (engine::PeakKvEntries in this pool's pages).
  int PeakPages(int tokens, int chunk_size) const;
  // Pages `seq` holds now.
  int HeldPages(const engine::SequenceState& seq) const;
  // Pages `seq` needs beyond those it holds to have `tokens` tokens cached.
  int PagesToGrow(const engine::SequenceState& seq, int tokens) const;

  // Promises sequence `id` (whose state `seq` outlives the promise) that it may grow to
  // `peak_pages` pages without waiting: Headroom() keeps them back. Replaces an earlier promise.
  void Promise(uint64_t id, const engine::SequenceState* seq, int peak_pages);
  // Withdraws the promise of `id` (no-op without one).
  void Unpromise(uint64_t id);
  // Free pages that no promise holds back: what admission may hand out.
  int Headroom() const;
  int free_pages() const { return pool_.free_pages(); }
  int total_pages() const { return pool_.total_pages(); }

  // Grows `seq`'s pages to cover `tokens` cached tokens. Allocates nothing and returns false if
  // the pool cannot supply them.
  bool Reserve(engine::SequenceState& seq, int tokens);
  // Releases the pages `seq`'s cached tokens no longer need.
  void Trim(engine::SequenceState& seq);
  // Releases every page of `seq` and empties its cache (cached = 0: the tokens stay, to be
  // prefilled again); returns the pages released.
  int Release(engine::SequenceState& seq);
  // Bytes of `pages` pages.
  size_t BytesOf(int pages) const {
    return static_cast<size_t>(pages) * pool_.geometry().page_bytes();
  }

  KvCacheSnapshot Snapshot() const;
  // The pool, for Engine::Step.
  engine::KvPool& pool() { return pool_; }

 private:
  explicit KvCacheManager(engine::KvPool pool) : pool_(std::move(pool)) {}

  struct Promised {
    const engine::SequenceState* seq;
    int peak_pages;
  };

  engine::KvPool pool_;
  std::map<uint64_t, Promised> promises_;
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_KV_CACHE_MANAGER_H_
