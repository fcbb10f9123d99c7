#include "server/kv_pool_sizing.h"

#include <cstddef>
#include <string>

#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(KvPoolSizingTest, KvPoolMbGivesWholePages) {
  EXPECT_EQ(*KvPoolPages({.kv_pool_mb = 1, .page_bytes = 4096}), 256);
  EXPECT_EQ(*KvPoolPages({.kv_pool_mb = 3, .page_bytes = 1000}), 3 * 1048576 / 1000);
  // free_bytes does not matter without a fraction.
  EXPECT_EQ(*KvPoolPages({.kv_pool_mb = 2, .free_bytes = 1, .page_bytes = 1 << 20}), 2);
}

TEST(KvPoolSizingTest, FractionOfFreeMemoryAfterWeights) {
  const size_t free = size_t{80} << 30;  // 80 GiB free once the weights are in
  const size_t page = 262144;            // e.g. 16 entries x 2 layers' bf16 K/V of 4096 values
  EXPECT_EQ(
      *KvPoolPages(
          {.kv_pool_mb = 512, .gpu_memory_fraction = 0.9, .free_bytes = free, .page_bytes = page}),
      static_cast<int>(static_cast<size_t>(0.9 * static_cast<double>(free)) / page));
  EXPECT_EQ(
      *KvPoolPages({.gpu_memory_fraction = 1, .free_bytes = 10 * page + 7, .page_bytes = page}),
      10);
  EXPECT_EQ(*KvPoolPages({.gpu_memory_fraction = 0.5, .free_bytes = 3 * page, .page_bytes = page}),
            1);
}

TEST(KvPoolSizingTest, RefusesBudgetsWithoutAPageOrBeyondAnInt) {
  absl::StatusOr<int> p = KvPoolPages({.kv_pool_mb = 1, .page_bytes = (1 << 20) + 1});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("--kv_pool_mb=1 does not hold a usable page count"),
            std::string::npos)
      << p.status();
  p = KvPoolPages({.gpu_memory_fraction = 0.5, .free_bytes = 1000, .page_bytes = 4096});
  ASSERT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("--gpu_memory_fraction=0.5 of 1000 free bytes"),
            std::string::npos)
      << p.status();
  p = KvPoolPages({.gpu_memory_fraction = 1, .free_bytes = size_t{1} << 50, .page_bytes = 64});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvPoolPages({.kv_pool_mb = 1, .page_bytes = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace catserve::server
