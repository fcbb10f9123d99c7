#include "scheduler/kv_cache_manager.h"

#include <algorithm>
#include <utility>

namespace catserve::scheduler {

absl::StatusOr<KvCacheManager> KvCacheManager::Create(const engine::Engine& engine, int num_pages,
                                                      int page_entries, bool prefix_cache) {
  absl::StatusOr<engine::KvPool> pool = engine.CreateKvPool(num_pages, page_entries);
  if (!pool.ok()) return pool.status();
  return KvCacheManager(*std::move(pool), prefix_cache);
}

KvCacheManager::KvCacheManager(engine::KvPool pool, bool prefix_cache)
    : pool_(std::move(pool)),
      prefix_(prefix_cache ? std::make_unique<PrefixCache>(pool_.geometry().page_entries)
                           : nullptr) {}

int KvCacheManager::PeakPages(int tokens, int chunk_size) const {
  return engine::PeakPages(tokens, chunk_size, pool_.geometry().page_entries);
}

int KvCacheManager::HeldPages(const KvSequence& handle) const {
  const engine::SequenceState& seq = handle.state_;
  return static_cast<int>(seq.pages.compressed.size() + seq.pages.local.size());
}

int KvCacheManager::PagesToGrow(const KvSequence& handle, int tokens) const {
  const engine::SequenceState& seq = handle.state_;
  return engine::PagesToReserve(pool_, seq, tokens);
}

void KvCacheManager::Promise(uint64_t id, const KvSequence* seq, int peak_pages) {
  promises_[id] = {seq, peak_pages};
}

void KvCacheManager::Unpromise(uint64_t id) { promises_.erase(id); }

int KvCacheManager::Headroom() const {
  int promised = 0;
  for (const auto& [id, p] : promises_) promised += std::max(0, p.peak_pages - HeldPages(*p.seq));
  return free_pages() - promised;
}

void KvCacheManager::MakeRoom(int pages) {
  while (prefix_ != nullptr && pool_.free_pages() < pages) {
    const int32_t page =
        prefix_->EvictLeastRecentlyUsed([&](int32_t p) { return pool_.refcount(p) == 1; });
    if (page < 0) return;
    pool_.MarkCached(page, false);
    pool_.Release(page);
  }
}

bool KvCacheManager::Reserve(KvSequence& handle, int tokens) {
  engine::SequenceState& seq = handle.state_;
  MakeRoom(PagesToGrow(handle, tokens));
  return engine::ReservePages(pool_, seq, tokens);
}

void KvCacheManager::Rechunk(KvSequence& handle, int chunk_size) {
  Release(handle);
  handle.state_.chunk_size = chunk_size;
}

int KvCacheManager::AttachPrefix(KvSequence& handle) {
  engine::SequenceState& seq = handle.state_;
  if (prefix_ == nullptr || seq.cached != 0 || !seq.pages.compressed.empty() ||
      !seq.pages.local.empty() || seq.tokens.empty()) {
    return 0;
  }
  const int l = seq.chunk_size;
  const int n = static_cast<int>(seq.tokens.size());
  prefix_query_tokens_ += n;
  // At least one token is left to compute: the step that feeds it draws the next token.
  int max_pages = 0;
  while (prefix_->TokensThrough(max_pages, l) <= n - 1) ++max_pages;
  PrefixCache::Match match = prefix_->Lookup(seq.tokens, l, max_pages);
  if (match.pages.empty()) return 0;
  for (int32_t page : match.pages) pool_.AddRef(page);
  seq.pages.compressed = std::move(match.pages);
  const int pages = static_cast<int>(seq.pages.compressed.size());
  seq.cached = prefix_->TokensThrough(pages - 1, l);
  seq.separator_pending = true;
  chains_[&handle] = Chain{pages, match.keys.back()};
  prefix_hit_tokens_ += seq.cached;
  return seq.cached;
}

void KvCacheManager::Publish(KvSequence& handle) {
  engine::SequenceState& seq = handle.state_;
  if (prefix_ == nullptr) return;
  const int l = seq.chunk_size;
  const int full = (1 + seq.cached / l) / pool_.geometry().page_entries;
  Chain& chain = chains_[&handle];
  for (int i = chain.published; i < full && i < static_cast<int>(seq.pages.compressed.size());
       ++i) {
    const uint64_t key = prefix_->Key(chain.last_key, i, l, seq.tokens);
    const int32_t page = seq.pages.compressed[i];
    if (!pool_.cached(page) && prefix_->Insert(key, chain.last_key, i, l, seq.tokens, page)) {
      pool_.AddRef(page);  // the cache's own reference
      pool_.MarkCached(page, true);
    }
    chain.last_key = key;
    chain.published = i + 1;
  }
}

void KvCacheManager::Trim(KvSequence& handle) { engine::TrimPages(pool_, handle.state_); }

int KvCacheManager::Release(KvSequence& handle) {
  engine::SequenceState& seq = handle.state_;
  const int held = HeldPages(handle);
  pool_.ReleaseAll(seq.pages);
  chains_.erase(&handle);
  seq.cached = 0;
  seq.separator_pending = false;
  return held;
}

KvCacheSnapshot KvCacheManager::Snapshot() const {
  KvCacheSnapshot s;
  s.pages_used = pool_.used_pages() - pool_.evictable_pages();
  s.pages_total = pool_.total_pages();
  s.pages_cached = prefix_ != nullptr ? prefix_->size() : 0;
  s.pages_evictable = pool_.evictable_pages();
  s.pages_free = pool_.free_pages();
  s.prefix_query_tokens = prefix_query_tokens_;
  s.prefix_hit_tokens = prefix_hit_tokens_;
  s.pages_promised = free_pages() - Headroom();
  s.bytes_used = BytesOf(s.pages_used);
  s.bytes_total = pool_.total_bytes();
  return s;
}

}  // namespace catserve::scheduler
