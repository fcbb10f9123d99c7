#ifndef CATSERVE_ENGINE_KV_KV_POOL_H_
#define CATSERVE_ENGINE_KV_KV_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/kv_dtype.h"
#include "engine/kv/kv_geometry.h"

namespace catserve::engine {

// The memory behind a KvPool's pages: `bytes` bytes at data(), page p at data() + p * page_bytes.
// Host memory for the CPU backend; device memory (cudaMalloc) for the CUDA backend, which the host
// must never dereference.
class KvArena {
 public:
  enum class Location { kHost, kCuda };
  virtual ~KvArena() = default;
  virtual void* data() = 0;
  virtual Location location() const = 0;
};

// The pages of one sequence: compressed entries (F_0, fx_0, fx_1, ...) live in `compressed`
// pages, the current chunk's S and fed tokens in `local` pages. Entry i of a region is in page
// pages[i / page_entries], slot i % page_entries.
struct SequencePages {
  std::vector<int32_t> compressed;
  std::vector<int32_t> local;
};

// One preallocated arena of KV pages with exact accounting. Not thread-safe: it is owned by the
// single thread that plans and runs engine steps.
class KvPool {
 public:
  // Allocates `num_pages` pages up front in host memory; fails if that is zero or the arena
  // cannot be allocated.
  static absl::StatusOr<KvPool> Create(const KvGeometry& geometry, int num_pages);
  // A pool over a caller's arena of at least num_pages * geometry.page_bytes() bytes (how an engine
  // puts its pool in device memory: Engine::CreateKvPool).
  static absl::StatusOr<KvPool> Create(const KvGeometry& geometry, int num_pages,
                                       std::unique_ptr<KvArena> arena);

  KvPool(KvPool&&) = default;
  KvPool& operator=(KvPool&&) = default;

  const KvGeometry& geometry() const { return geometry_; }
  int total_pages() const { return static_cast<int>(refcount_.size()); }
  int used_pages() const { return used_pages_; }
  int free_pages() const { return total_pages() - used_pages_; }
  size_t used_bytes() const { return static_cast<size_t>(used_pages_) * geometry_.page_bytes(); }
  size_t total_bytes() const { return static_cast<size_t>(total_pages()) * geometry_.page_bytes(); }

  // Takes one free page (refcount 1), or returns -1 when none is free.
  int32_t Allocate();
  // Adds a reference to a page in use (a sequence sharing a cached prefix page).
  void AddRef(int32_t page);
  // Drops one reference; the page is free again when the last one goes.
  void Release(int32_t page);
  // Marks (or unmarks) one of the references of a page in use as the prefix cache's own
  // (scheduler/prefix_cache.h). A marked page held by nothing but that reference is evictable:
  // the cache may release it whenever the pool needs room.
  void MarkCached(int32_t page, bool cached);
  bool cached(int32_t page) const { return cached_[page] != 0; }
  int refcount(int32_t page) const { return refcount_[page]; }
  // Pages marked cached whose only reference is the cache's.
  int evictable_pages() const { return evictable_; }
  // Releases every page of `pages` and clears both lists.
  void ReleaseAll(SequencePages& pages);

  // Grows `region` to cover `entries` entries, allocating pages as needed. On failure (pool
  // exhausted) allocates nothing and returns false.
  bool Reserve(std::vector<int32_t>& region, int entries);
  // Shrinks `region` to the pages that `entries` entries need, releasing the rest.
  void Trim(std::vector<int32_t>& region, int entries);
  // Pages that `entries` entries occupy.
  int PagesFor(int entries) const {
    return (entries + geometry_.page_entries - 1) / geometry_.page_entries;
  }

  KvArena::Location arena_location() const { return arena_->location(); }
  // The start of the arena (a device pointer for a kCuda arena).
  void* arena_data() { return arena_->data(); }
  // The first byte of page `page` of a host arena (values of geometry().dtype); meaningless for a
  // device arena.
  std::byte* page_data(int32_t page) {
    return static_cast<std::byte*>(arena_->data()) + page * geometry_.page_bytes();
  }

 private:
  KvPool(const KvGeometry& geometry, int num_pages, std::unique_ptr<KvArena> arena);

  KvGeometry geometry_;
  std::unique_ptr<KvArena> arena_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_list_;
  std::vector<uint8_t> cached_;
  int used_pages_ = 0;
  int evictable_ = 0;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KV_KV_POOL_H_
