// RequestMetrics: the per-request latency and token series of one generation.
#ifndef CATSERVE_SERVER_REQUEST_METRICS_H_
#define CATSERVE_SERVER_REQUEST_METRICS_H_

#include "absl/time/time.h"
#include "server/metrics/serving_metrics.h"

namespace catserve::server {

// Records one request's life into its chunk size's series: queue time (arrival to admission),
// time to first token and end-to-end latency (from arrival), time per output token (between the
// first and the last token), generated tokens as they come, prompt tokens and the outcome at the
// end. Not thread-safe: the scheduler's delivery thread drives it through the request's sink.
class RequestMetrics {
 public:
  // `series` must outlive this object.
  RequestMetrics(const metrics::ChunkSizeMetrics* series, absl::Time arrival)
      : series_(series), arrival_(arrival) {}

  void OnAdmitted(absl::Time now);
  void OnToken(absl::Time now);
  // Call once.
  void OnFinish(metrics::RequestOutcome outcome, int prompt_tokens, absl::Time now);

 private:
  const metrics::ChunkSizeMetrics* series_;
  absl::Time arrival_;
  absl::Time first_token_;
  absl::Time last_token_;
  int tokens_ = 0;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_REQUEST_METRICS_H_
