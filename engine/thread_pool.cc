#include "engine/thread_pool.h"

#include <algorithm>

namespace catserve::engine {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
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
  long seen = 0;
  std::pair<ThreadPool*, long*> arg(this, &seen);
  absl::MutexLock lock(&mu_);
  while (true) {
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
  }
}

}  // namespace catserve::engine
