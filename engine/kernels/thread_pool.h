#ifndef CATSERVE_ENGINE_KERNELS_THREAD_POOL_H_
#define CATSERVE_ENGINE_KERNELS_THREAD_POOL_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace catserve::engine {

// A fixed set of compute threads that run one data-parallel loop at a time. The calling thread
// takes part, so a pool of size 1 runs everything inline. A worker that finishes a loop polls for
// the next one for a while (`poll_for`, 100 us by default) before it sleeps. ParallelFor is not
// reentrant and must be called from one thread at a time (the engine's step thread, or the
// scheduler's for its sampling pool).
class ThreadPool {
 public:
  // The engine issues its loops back to back (a layer is a dozen of them), and waking a sleeping
  // thread costs tens of microseconds, as much as a small model's whole loop.
  static constexpr std::chrono::microseconds kEnginePoll{100};

  // `threads` <= 0 means one per hardware thread. A pool whose loops come seldom (once per step)
  // polls for 0 us, so that its idle workers leave the cores to the engine's.
  explicit ThreadPool(int threads, std::chrono::microseconds poll_for = kEnginePoll);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint ranges covering [0, n) and returns when all are done.
  void ParallelFor(int n, const std::function<void(int begin, int end)>& fn);

 private:
  void WorkerLoop(int index);

  const std::chrono::microseconds poll_for_;
  std::vector<std::thread> workers_;
  absl::Mutex mu_;
  const std::function<void(int, int)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  int job_n_ ABSL_GUARDED_BY(mu_) = 0;
  int next_ ABSL_GUARDED_BY(mu_) = 0;
  int chunk_ ABSL_GUARDED_BY(mu_) = 1;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  long generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // generation_ (or -1 once stopping), readable without mu_: what an idle worker polls for a
  // while before it sleeps on mu_.
  std::atomic<long> published_{0};
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KERNELS_THREAD_POOL_H_
