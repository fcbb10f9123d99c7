// PrefixCache: full pages of compressed KV entries, found again by the tokens they depend on.
#ifndef CATSERVE_SCHEDULER_PREFIX_CACHE_H_
#define CATSERVE_SCHEDULER_PREFIX_CACHE_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace catserve::scheduler {

// The index of automatic prefix caching (docs/SCHEDULER.md, "Prefix caching").
//
// A sequence at chunk size l keeps its compressed entries F_0, F_1 = fx_0, F_2 = fx_1, ... in
// pages of E entries; entry c depends on the tokens of chunks 0..c-1 and nothing else. So the
// i-th full page (entries iE .. iE+E-1) is fixed by the tokens [0, ((i+1)E - 1) l) and can serve
// any sequence whose tokens start the same, at the same chunk size. Page i is keyed by a chained
// hash of (the previous page's key, l, the tokens it adds: [(iE - 1) l, ((i+1)E - 1) l), from 0 for
// the first page); a lookup compares the tokens and the parent too, so a hash collision can never
// hand a sequence another prompt's cache. Partial pages and local regions are never cached.
//
// The cache only indexes: pages are the KvPool's, each cached page holding one reference of its
// own (KvCacheManager takes and drops it). Not thread-safe: owned by the scheduler thread.
class PrefixCache {
 public:
  explicit PrefixCache(int page_entries) : page_entries_(page_entries) {}

  // Tokens page `index` of a sequence at `chunk_size` is fixed by (its end) and adds (from
  // TokensBefore(index) to TokensThrough(index)).
  int TokensThrough(int index, int chunk_size) const {
    return ((index + 1) * page_entries_ - 1) * chunk_size;
  }
  int TokensBefore(int index, int chunk_size) const {
    return index == 0 ? 0 : TokensThrough(index - 1, chunk_size);
  }

  // The key of page `index` of `tokens` at `chunk_size`, given the previous page's key (0 for
  // the first page). `tokens` must reach TokensThrough(index).
  uint64_t Key(uint64_t parent, int index, int chunk_size, absl::Span<const int32_t> tokens) const;

  struct Match {
    std::vector<int32_t> pages;  // the cached pages of the longest run, in order
    std::vector<uint64_t> keys;
  };
  // The longest run of cached pages that starts `tokens` at `chunk_size`, at most `max_pages`
  // long. Marks them most recently used.
  Match Lookup(absl::Span<const int32_t> tokens, int chunk_size, int max_pages);

  // Indexes `page` as page `index` of `tokens` (with key `key`, parent `parent`). False when that
  // key is cached already (another sequence computed the same page first): the caller keeps its
  // copy private.
  bool Insert(uint64_t key, uint64_t parent, int index, int chunk_size,
              absl::Span<const int32_t> tokens, int32_t page);

  // Pages from least to most recently used, for eviction; `evictable` says which may go (their
  // only reference is the cache's). Returns the page dropped from the index, or -1.
  template <typename Evictable>
  int32_t EvictLeastRecentlyUsed(Evictable evictable) {
    for (auto it = lru_.begin(); it != lru_.end(); ++it) {
      if (!evictable(entries_.at(*it).page)) continue;
      const int32_t page = entries_.at(*it).page;
      entries_.erase(*it);
      lru_.erase(it);
      return page;
    }
    return -1;
  }

  int size() const { return static_cast<int>(entries_.size()); }

 private:
  struct Entry {
    int32_t page;
    uint64_t parent;
    int chunk_size;
    std::vector<int32_t> tokens;  // the tokens the page adds
    std::list<uint64_t>::iterator lru;
  };

  const int page_entries_;
  absl::flat_hash_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // keys, least recently used first
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_PREFIX_CACHE_H_
