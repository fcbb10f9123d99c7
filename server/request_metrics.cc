#include "server/request_metrics.h"

namespace catserve::server {

void RequestMetrics::OnAdmitted(absl::Time now) {
  series_->request_queue_time->Observe(absl::ToDoubleSeconds(now - arrival_));
}

void RequestMetrics::OnToken(absl::Time now) {
  if (tokens_ == 0) {
    first_token_ = now;
    series_->time_to_first_token->Observe(absl::ToDoubleSeconds(now - arrival_));
  }
  last_token_ = now;
  ++tokens_;
  series_->generation_tokens->Increment();
}

void RequestMetrics::OnFinish(metrics::RequestOutcome outcome, int prompt_tokens, absl::Time now) {
  if (tokens_ >= 2) {
    series_->time_per_output_token->Observe(absl::ToDoubleSeconds(last_token_ - first_token_) /
                                            (tokens_ - 1));
  }
  if (prompt_tokens > 0) series_->prompt_tokens->Increment(prompt_tokens);
  series_->e2e_request_latency->Observe(absl::ToDoubleSeconds(now - arrival_));
  series_->finished(outcome).Increment();
}

}  // namespace catserve::server
