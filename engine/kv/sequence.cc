#include "engine/kv/sequence.h"

#include <algorithm>

namespace catserve::engine {

int PagesToReserve(const KvPool& pool, const SequenceState& seq, int tokens) {
  const KvEntries e = KvEntriesAfter(tokens, seq.chunk_size);
  return std::max(0, pool.PagesFor(e.compressed) - static_cast<int>(seq.pages.compressed.size())) +
         std::max(0, pool.PagesFor(e.local) - static_cast<int>(seq.pages.local.size()));
}

bool ReservePages(KvPool& pool, SequenceState& seq, int tokens) {
  if (PagesToReserve(pool, seq, tokens) > pool.free_pages()) return false;
  const KvEntries e = KvEntriesAfter(tokens, seq.chunk_size);
  return pool.Reserve(seq.pages.compressed, e.compressed) && pool.Reserve(seq.pages.local, e.local);
}

void TrimPages(KvPool& pool, SequenceState& seq) {
  const KvEntries e = KvEntriesAfter(seq.cached, seq.chunk_size);
  pool.Trim(seq.pages.compressed, e.compressed);
  pool.Trim(seq.pages.local, e.local);
}

}  // namespace catserve::engine
