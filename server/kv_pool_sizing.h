// How many KV pages the daemon's pool gets: from --kv_pool_mb, or from --gpu_memory_fraction of
// the device memory left free once the engine holds its weights.
#ifndef CATSERVE_SERVER_KV_POOL_SIZING_H_
#define CATSERVE_SERVER_KV_POOL_SIZING_H_

#include <cstddef>

#include "absl/status/statusor.h"

namespace catserve::server {

struct KvPoolSizing {
  int kv_pool_mb = 0;              // used when gpu_memory_fraction is 0
  double gpu_memory_fraction = 0;  // in (0, 1]: that share of free_bytes, rounded down
  size_t free_bytes = 0;           // device memory free after the weights were loaded
  size_t page_bytes = 0;           // one page of the engine's KV geometry
};

// Whole pages that fit the budget. INVALID_ARGUMENT naming the flag when that is no page or more
// pages than an int counts, or when page_bytes is 0.
absl::StatusOr<int> KvPoolPages(const KvPoolSizing& sizing);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_KV_POOL_SIZING_H_
