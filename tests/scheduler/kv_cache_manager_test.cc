// KvCacheManager: the peak it states is the true peak of a growing sequence, pages are exact at
// every length, promises hold pages back from admission, release empties the cache.
#include "scheduler/kv_cache_manager.h"

#include <algorithm>

#include "engine/cpu/cpu_engine.h"
#include "gtest/gtest.h"
#include "tests/common/test_models.h"
#include "tests/support/random_model.h"

namespace catserve::scheduler {
namespace {

class KvCacheManagerTest : public ::testing::Test {
 protected:
  KvCacheManagerTest()
      : config_(testing::TinyConfig(true)),
        engine_(config_, engine::RandomModelWeights(config_, 3), {.threads = 1}) {}

  KvCacheManager Make(int pages, int page_entries) {
    absl::StatusOr<KvCacheManager> kv = KvCacheManager::Create(engine_, pages, page_entries);
    EXPECT_TRUE(kv.ok()) << kv.status();
    return *std::move(kv);
  }

  engine::ModelConfig config_;
  engine::CpuEngine engine_;
};

// Pages `tokens` cached tokens occupy, counted entry by entry.
int PagesAt(int tokens, int chunk_size, int page_entries) {
  const engine::KvEntries e = engine::KvEntriesAfter(tokens, chunk_size);
  return (e.compressed + page_entries - 1) / page_entries +
         (e.local + page_entries - 1) / page_entries;
}

TEST_F(KvCacheManagerTest, PeakPagesIsTheHighestHoldingOfAGrowingSequence) {
  for (int page_entries : {1, 4, 16}) {
    KvCacheManager kv = Make(4096, page_entries);
    for (int l : {1, 2, 4, 8, 16}) {
      KvSequence seq(std::vector<int32_t>(100, 5), l);
      const engine::SequenceState& state = *kv.StepState(seq);
      int highest = 0;                                // the most pages held at once
      int highest_compressed = 0, highest_local = 0;  // each region's most pages
      for (int t = 1; t <= 100; ++t) {
        // One token at a time, as decoding does: reserve, cache, trim.
        // Each region grows on its own (the local one may hold a page the next trim frees).
        const engine::KvEntries need = engine::KvEntriesAfter(t, l);
        const int grow_compressed =
            std::max(0, (need.compressed + page_entries - 1) / page_entries -
                            static_cast<int>(state.pages.compressed.size()));
        const int grow_local = std::max(0, (need.local + page_entries - 1) / page_entries -
                                               static_cast<int>(state.pages.local.size()));
        ASSERT_EQ(kv.PagesToGrow(seq, t), grow_compressed + grow_local);
        ASSERT_TRUE(kv.Reserve(seq, t));
        highest = std::max(highest, kv.HeldPages(seq));
        highest_compressed =
            std::max(highest_compressed, static_cast<int>(state.pages.compressed.size()));
        highest_local = std::max(highest_local, static_cast<int>(state.pages.local.size()));
        kv.StepState(seq)->cached = t;  // what the engine's step does
        kv.Trim(seq);
        ASSERT_EQ(kv.HeldPages(seq), PagesAt(t, l, page_entries)) << "t=" << t << " l=" << l;
        ASSERT_EQ(kv.Snapshot().pages_used, kv.HeldPages(seq));
        // The peak is each region's peak, so it bounds what the sequence ever holds at once.
        ASSERT_EQ(kv.PeakPages(t, l), highest_compressed + highest_local)
            << "t=" << t << " l=" << l;
        ASSERT_GE(kv.PeakPages(t, l), highest);
      }
      EXPECT_EQ(kv.Release(seq), PagesAt(100, l, page_entries));
      EXPECT_EQ(seq.cached(), 0);
      EXPECT_EQ(kv.Snapshot().pages_used, 0);
    }
  }
  // The formula itself, at the numbers docs/SCHEDULER.md works through.
  KvCacheManager kv = Make(64, 4);
  EXPECT_EQ(kv.PeakPages(39, 2), 6);   // compressed 1 + 19 = 20 entries (5 pages) + local 2 (1)
  EXPECT_EQ(kv.PeakPages(39, 8), 4);   // compressed 1 + 4 = 5 (2 pages) + local 8 (2)
  EXPECT_EQ(kv.PeakPages(39, 16), 5);  // compressed 1 + 2 = 3 (1 page) + local 16 (4)
  EXPECT_EQ(kv.PeakPages(0, 2), 0);
}

TEST_F(KvCacheManagerTest, PromisesHoldPagesBackFromHeadroom) {
  KvCacheManager kv = Make(20, 4);
  KvSequence a({5}, 2), b({5}, 8);
  EXPECT_EQ(kv.Headroom(), 20);
  kv.Promise(1, &a, 6);
  kv.Promise(2, &b, 4);
  EXPECT_EQ(kv.Headroom(), 10);
  EXPECT_EQ(kv.Snapshot().pages_promised, 10);
  // Pages a sequence takes come out of its own promise, not out of the headroom.
  ASSERT_TRUE(kv.Reserve(a, 20));  // compressed 11 entries (3 pages) + local 1 (1)
  EXPECT_EQ(kv.HeldPages(a), 4);
  EXPECT_EQ(kv.free_pages(), 16);
  EXPECT_EQ(kv.Headroom(), 10);
  EXPECT_EQ(kv.Snapshot().pages_promised, 6);
  // A smaller promise (a degrade) gives the difference back.
  kv.Release(a);
  kv.Promise(1, &a, 4);
  EXPECT_EQ(kv.Headroom(), 12);
  kv.Unpromise(1);
  kv.Unpromise(2);
  EXPECT_EQ(kv.Headroom(), 20);
}

TEST_F(KvCacheManagerTest, ReserveTakesNothingWhenThePoolIsShort) {
  KvCacheManager kv = Make(3, 4);
  KvSequence seq({5}, 1);
  EXPECT_FALSE(kv.Reserve(seq, 20));  // 21 compressed entries: 6 pages
  EXPECT_EQ(kv.HeldPages(seq), 0);
  EXPECT_EQ(kv.Snapshot().pages_used, 0);
  EXPECT_TRUE(kv.Reserve(seq, 7));  // 8 + 1 entries: 2 + 1 pages
  EXPECT_EQ(kv.free_pages(), 0);
}

TEST_F(KvCacheManagerTest, CreateRefusesAnEmptyPool) {
  EXPECT_EQ(KvCacheManager::Create(engine_, 0, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace catserve::scheduler
