#include "scheduler/kv_cache_manager.h"

#include <algorithm>
#include <utility>

namespace catserve::scheduler {

absl::StatusOr<KvCacheManager> KvCacheManager::Create(const engine::Engine& engine, int num_pages,
                                                      int page_entries) {
  absl::StatusOr<engine::KvPool> pool = engine.CreateKvPool(num_pages, page_entries);
  if (!pool.ok()) return pool.status();
  return KvCacheManager(*std::move(pool));
}

int KvCacheManager::PeakPages(int tokens, int chunk_size) const {
  return engine::PeakPages(tokens, chunk_size, pool_.geometry().page_entries);
}

int KvCacheManager::HeldPages(const engine::SequenceState& seq) const {
  return static_cast<int>(seq.pages.compressed.size() + seq.pages.local.size());
}

int KvCacheManager::PagesToGrow(const engine::SequenceState& seq, int tokens) const {
  return engine::PagesToReserve(pool_, seq, tokens);
}

void KvCacheManager::Promise(uint64_t id, const engine::SequenceState* seq, int peak_pages) {
  promises_[id] = {seq, peak_pages};
}

void KvCacheManager::Unpromise(uint64_t id) { promises_.erase(id); }

int KvCacheManager::Headroom() const {
  int promised = 0;
  for (const auto& [id, p] : promises_) promised += std::max(0, p.peak_pages - HeldPages(*p.seq));
  return pool_.free_pages() - promised;
}

bool KvCacheManager::Reserve(engine::SequenceState& seq, int tokens) {
  return engine::ReservePages(pool_, seq, tokens);
}

void KvCacheManager::Trim(engine::SequenceState& seq) { engine::TrimPages(pool_, seq); }

int KvCacheManager::Release(engine::SequenceState& seq) {
  const int held = HeldPages(seq);
  pool_.ReleaseAll(seq.pages);
  seq.cached = 0;
  return held;
}

KvCacheSnapshot KvCacheManager::Snapshot() const {
  KvCacheSnapshot s;
  s.pages_used = pool_.used_pages();
  s.pages_total = pool_.total_pages();
  s.pages_promised = pool_.free_pages() - Headroom();
  s.bytes_used = pool_.used_bytes();
  s.bytes_total = pool_.total_bytes();
  return s;
}

}  // namespace catserve::scheduler
