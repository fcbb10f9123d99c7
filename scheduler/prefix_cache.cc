#include "scheduler/prefix_cache.h"

#include <algorithm>

#include "absl/hash/hash.h"

namespace catserve::scheduler {

uint64_t PrefixCache::Key(uint64_t parent, int index, int chunk_size,
                          absl::Span<const int32_t> tokens) const {
  const absl::Span<const int32_t> added =
      tokens.subspan(TokensBefore(index, chunk_size),
                     TokensThrough(index, chunk_size) - TokensBefore(index, chunk_size));
  // 0 stands for "no parent": a key is never 0.
  const uint64_t key = absl::HashOf(parent, index, chunk_size, added);
  return key == 0 ? 1 : key;
}

PrefixCache::Match PrefixCache::Lookup(absl::Span<const int32_t> tokens, int chunk_size,
                                       int max_pages) {
  Match match;
  uint64_t parent = 0;
  for (int index = 0; index < max_pages; ++index) {
    if (static_cast<int>(tokens.size()) < TokensThrough(index, chunk_size)) break;
    const uint64_t key = Key(parent, index, chunk_size, tokens);
    auto it = entries_.find(key);
    if (it == entries_.end()) break;
    const Entry& e = it->second;
    const int begin = TokensBefore(index, chunk_size);
    const absl::Span<const int32_t> added =
        tokens.subspan(begin, TokensThrough(index, chunk_size) - begin);
    if (e.parent != parent || e.chunk_size != chunk_size ||
        !std::equal(added.begin(), added.end(), e.tokens.begin(), e.tokens.end())) {
      break;  // a hash collision: not this prefix
    }
    lru_.splice(lru_.end(), lru_, e.lru);
    match.pages.push_back(e.page);
    match.keys.push_back(key);
    parent = key;
  }
  return match;
}

bool PrefixCache::Insert(uint64_t key, uint64_t parent, int index, int chunk_size,
                         absl::Span<const int32_t> tokens, int32_t page) {
  if (entries_.contains(key)) return false;
  const int begin = TokensBefore(index, chunk_size);
  const int end = TokensThrough(index, chunk_size);
  lru_.push_back(key);
  entries_.emplace(key, Entry{page, parent, chunk_size,
                              std::vector<int32_t>(tokens.begin() + begin, tokens.begin() + end),
                              std::prev(lru_.end())});
  return true;
}

}  // namespace catserve::scheduler
