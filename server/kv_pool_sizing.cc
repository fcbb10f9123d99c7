#include "server/kv_pool_sizing.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace catserve::server {

absl::StatusOr<int> KvPoolPages(const KvPoolSizing& s) {
  if (s.page_bytes == 0) return absl::InvalidArgumentError("the KV page size is 0 bytes");
  const bool by_fraction = s.gpu_memory_fraction > 0;
  const double bytes = by_fraction
                           ? std::floor(s.gpu_memory_fraction * static_cast<double>(s.free_bytes))
                           : static_cast<double>(s.kv_pool_mb) * (1 << 20);
  const double pages = std::floor(bytes / static_cast<double>(s.page_bytes));
  if (pages >= 1 && pages <= std::numeric_limits<int>::max()) return static_cast<int>(pages);
  const std::string flag = by_fraction
                               ? absl::StrCat("--gpu_memory_fraction=", s.gpu_memory_fraction,
                                              " of ", s.free_bytes, " free bytes")
                               : absl::StrCat("--kv_pool_mb=", s.kv_pool_mb);
  return absl::InvalidArgumentError(absl::StrCat(flag, " does not hold a usable page count (",
                                                 pages, " pages of ", s.page_bytes,
                                                 " bytes); raise or lower it"));
}

}  // namespace catserve::server
