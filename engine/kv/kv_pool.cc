#include "engine/kv/kv_pool.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine {
namespace {

// A page reference bug would corrupt other sequences' KV silently; stop instead.
[[noreturn]] void Die(const char* what, int32_t page) {
  std::fprintf(stderr, "KvPool: %s (page %d)\n", what, page);
  std::abort();
}

// Anonymous memory, zeroed and touched up front (the pool is preallocated), in transparent huge
// pages where the kernel allows them: an attention task reads one page run (a few KiB) per KV
// page, so with 4 KiB pages almost every run would also be a TLB miss.
class HostKvArena : public KvArena {
 public:
  static std::unique_ptr<HostKvArena> Create(size_t bytes) {
    // Room to start the arena on a huge-page boundary.
    const size_t mapped = bytes + kHugePage;
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    const uintptr_t aligned =
        (reinterpret_cast<uintptr_t>(base) + kHugePage - 1) & ~(kHugePage - 1);
    void* data = reinterpret_cast<void*>(aligned);
    madvise(data, bytes, MADV_HUGEPAGE);
    std::memset(data, 0, bytes);
    return std::unique_ptr<HostKvArena>(new HostKvArena(base, mapped, data));
  }
  ~HostKvArena() override { munmap(base_, mapped_); }
  void* data() override { return data_; }
  Location location() const override { return Location::kHost; }

 private:
  static constexpr size_t kHugePage = size_t{2} << 20;
  HostKvArena(void* base, size_t mapped, void* data) : base_(base), mapped_(mapped), data_(data) {}
  void* base_;
  size_t mapped_;
  void* data_;
};

absl::Status CheckPoolShape(const KvGeometry& geometry, int num_pages) {
  if (num_pages <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV pool needs at least one page, got ", num_pages));
  }
  if (geometry.layers <= 0 || geometry.kv_heads <= 0 || geometry.head_dim <= 0 ||
      geometry.page_entries <= 0) {
    return absl::InvalidArgumentError("KV pool geometry has a non-positive dimension");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KvPool> KvPool::Create(const KvGeometry& geometry, int num_pages) {
  if (absl::Status s = CheckPoolShape(geometry, num_pages); !s.ok()) return s;
  std::unique_ptr<HostKvArena> arena =
      HostKvArena::Create(static_cast<size_t>(num_pages) * geometry.page_bytes());
  if (arena == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a KV pool of ", num_pages, " pages (",
                     static_cast<double>(num_pages) * geometry.page_bytes() / (1 << 20), " MiB)"));
  }
  return KvPool(geometry, num_pages, std::move(arena));
}

absl::StatusOr<KvPool> KvPool::Create(const KvGeometry& geometry, int num_pages,
                                      std::unique_ptr<KvArena> arena) {
  if (absl::Status s = CheckPoolShape(geometry, num_pages); !s.ok()) return s;
  if (arena == nullptr || arena->data() == nullptr) {
    return absl::InvalidArgumentError("KV pool arena is missing");
  }
  return KvPool(geometry, num_pages, std::move(arena));
}

KvPool::KvPool(const KvGeometry& geometry, int num_pages, std::unique_ptr<KvArena> arena)
    : geometry_(geometry),
      arena_(std::move(arena)),
      refcount_(num_pages, 0),
      cached_(num_pages, 0) {
  free_list_.reserve(num_pages);
  for (int32_t p = num_pages - 1; p >= 0; --p) free_list_.push_back(p);
}

int32_t KvPool::Allocate() {
  if (free_list_.empty()) return -1;
  int32_t page = free_list_.back();
  free_list_.pop_back();
  refcount_[page] = 1;
  ++used_pages_;
  return page;
}

void KvPool::AddRef(int32_t page) {
  if (refcount_[page] <= 0) Die("AddRef on a free page", page);
  if (cached_[page] && refcount_[page] == 1) --evictable_;
  ++refcount_[page];
}

void KvPool::Release(int32_t page) {
  if (refcount_[page] <= 0) Die("release of a free page", page);
  if (cached_[page] && refcount_[page] == 1) Die("release of a cached page's last reference", page);
  if (--refcount_[page] == 0) {
    free_list_.push_back(page);
    --used_pages_;
  } else if (cached_[page] && refcount_[page] == 1) {
    ++evictable_;
  }
}

void KvPool::MarkCached(int32_t page, bool cached) {
  if (refcount_[page] <= 0) Die("MarkCached on a free page", page);
  if (cached_[page] == static_cast<uint8_t>(cached)) return;
  cached_[page] = cached;
  if (refcount_[page] == 1) evictable_ += cached ? 1 : -1;
}

void KvPool::ReleaseAll(SequencePages& pages) {
  for (int32_t p : pages.compressed) Release(p);
  for (int32_t p : pages.local) Release(p);
  pages.compressed.clear();
  pages.local.clear();
}

bool KvPool::Reserve(std::vector<int32_t>& region, int entries) {
  int need = PagesFor(entries) - static_cast<int>(region.size());
  if (need <= 0) return true;
  if (need > static_cast<int>(free_list_.size())) return false;
  for (int i = 0; i < need; ++i) region.push_back(Allocate());
  return true;
}

void KvPool::Trim(std::vector<int32_t>& region, int entries) {
  size_t keep = PagesFor(entries);
  while (region.size() > keep) {
    Release(region.back());
    region.pop_back();
  }
}

}  // namespace catserve::engine
