// ThreadPool: every index of every loop runs exactly once, whether the workers are polling for
// the next loop (loops back to back) or asleep (loops far apart), and the pool stops in either
// state.
#include "engine/kernels/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

// Runs ParallelFor over n and checks each index ran once.
void ExpectEachIndexOnce(ThreadPool& pool, int n) {
  std::vector<std::atomic<int>> hits(n);
  pool.ParallelFor(n, [&](int begin, int end) {
    ASSERT_LE(0, begin);
    ASSERT_LT(begin, end);
    ASSERT_LE(end, n);
    for (int i = begin; i < end; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
  });
  for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
}

TEST(ThreadPoolTest, BackToBackLoopsRunEveryIndexOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int round = 0; round < 2000; ++round) {
      ASSERT_NO_FATAL_FAILURE(ExpectEachIndexOnce(pool, 1 + round % 97)) << threads << " threads";
    }
  }
}

TEST(ThreadPoolTest, LoopsAfterTheWorkersSleptRunEveryIndexOnce) {
  ThreadPool pool(3);
  for (int round = 0; round < 20; ++round) {
    // Longer than a worker polls before it sleeps.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_NO_FATAL_FAILURE(ExpectEachIndexOnce(pool, 64));
  }
}

TEST(ThreadPoolTest, WorkersTakePartInLongLoops) {
  ThreadPool pool(2);
  std::atomic<int> callers{0};
  const std::thread::id caller = std::this_thread::get_id();
  // Each range sleeps, so the calling thread cannot finish the loop alone before a worker joins.
  pool.ParallelFor(16, [&](int begin, int end) {
    if (std::this_thread::get_id() != caller) callers.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2) * (end - begin));
  });
  EXPECT_GT(callers.load(), 0);
}

TEST(ThreadPoolTest, StopsWhilePollingAndWhileAsleep) {
  {
    ThreadPool pool(4);
    ExpectEachIndexOnce(pool, 100);
  }  // destroyed within the poll window
  {
    ThreadPool pool(4);
    ExpectEachIndexOnce(pool, 100);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }                        // destroyed asleep
  { ThreadPool pool(4); }  // never used
}

}  // namespace
}  // namespace catserve::engine
