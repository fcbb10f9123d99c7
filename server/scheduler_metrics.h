// SchedulerMetrics: the scheduler's step-level and pool-level series.
#ifndef CATSERVE_SERVER_SCHEDULER_METRICS_H_
#define CATSERVE_SERVER_SCHEDULER_METRICS_H_

#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/scheduler.h"
#include "server/metrics/serving_metrics.h"

namespace catserve::server {

// Feeds ServingMetrics from the scheduler: step duration, tokens and batch size, compressor
// calls, degrades (by chunk size before and after) and preemptions per step (OnStep), and the
// gauges that mirror a SchedulerSnapshot (requests running and
// waiting by chunk size, KV pages and bytes). The gauges are also refreshed from outside the
// steps by Update(), since an idle scheduler reports no steps. Thread-safe.
class SchedulerMetrics : public scheduler::SchedulerObserver {
 public:
  // `metrics` must outlive this object; `chunk_sizes` are every chunk size served, so that a
  // size with no requests reads 0 rather than its last value, and every degrade series (from a
  // size to a larger one) reads 0 before its first degrade.
  SchedulerMetrics(metrics::ServingMetrics* metrics, std::vector<int> chunk_sizes);

  void OnStep(const scheduler::StepReport& report,
              const scheduler::SchedulerSnapshot& after) override;
  void Update(const scheduler::SchedulerSnapshot& snapshot);

 private:
  metrics::ServingMetrics* metrics_;
  const std::vector<int> chunk_sizes_;
  // The snapshot's prefix-cache totals already added to the counters.
  absl::Mutex mu_;
  int64_t prefix_query_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t prefix_hit_tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_SCHEDULER_METRICS_H_
