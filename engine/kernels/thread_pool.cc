#include "engine/kernels/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace catserve::engine {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads, std::chrono::microseconds poll_for) : poll_for_(poll_for) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    published_.store(-1, std::memory_order_release);
  }
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    fn(0, n);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    job_ = &fn;
    job_n_ = n;
    next_ = 0;
    // Several ranges per thread balance uneven work (attention rows differ in length).
    chunk_ = std::max(1, n / (size() * 4));
    active_ = 0;
    ++generation_;
    published_.store(generation_, std::memory_order_release);
  }
  while (true) {
    int begin, end;
    {
      absl::MutexLock lock(&mu_);
      if (next_ >= job_n_) break;
      begin = next_;
      end = std::min(job_n_, begin + chunk_);
      next_ = end;
    }
    fn(begin, end);
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](ThreadPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) { return p->active_ == 0; }, this));
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int) {
  long seen = 0;    // the last generation this worker took part in
  long polled = 0;  // the generation published when it last went idle
  std::pair<ThreadPool*, long*> arg(this, &seen);
  while (true) {
    // Poll without the lock for a new loop first; Await below decides whether there is work,
    // so polling only saves the sleep.
    const auto poll_until = std::chrono::steady_clock::now() + poll_for_;
    while (published_.load(std::memory_order_acquire) == polled &&
           std::chrono::steady_clock::now() < poll_until) {
      for (int i = 0; i < 64; ++i) CpuRelax();
    }
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::pair<ThreadPool*, long*>* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          ThreadPool* p = a->first;
          return p->stop_ ||
                 (p->job_ != nullptr && p->generation_ != *a->second && p->next_ < p->job_n_);
        },
        &arg));
    if (stop_) return;
    seen = generation_;
    const std::function<void(int, int)>* job = job_;
    ++active_;
    while (next_ < job_n_) {
      int begin = next_;
      int end = std::min(job_n_, begin + chunk_);
      next_ = end;
      mu_.Unlock();
      (*job)(begin, end);
      mu_.Lock();
    }
    --active_;
    polled = generation_;
  }
}

}  // namespace catserve::engine
