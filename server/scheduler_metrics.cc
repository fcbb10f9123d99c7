#include "server/scheduler_metrics.h"

#include <utility>

namespace catserve::server {
namespace {

int CountFor(const std::map<int, int>& by_chunk_size, int chunk_size) {
  auto it = by_chunk_size.find(chunk_size);
  return it == by_chunk_size.end() ? 0 : it->second;
}

}  // namespace

SchedulerMetrics::SchedulerMetrics(metrics::ServingMetrics* metrics, std::vector<int> chunk_sizes)
    : metrics_(metrics), chunk_sizes_(std::move(chunk_sizes)) {
  // Every series exists from the start, so rates begin from a known zero.
  for (int l : chunk_sizes_) metrics_->ForChunkSize(l);
  for (int from : chunk_sizes_) {
    for (int to : chunk_sizes_) {
      if (from < to) metrics_->degrades(from, to);
    }
  }
}

void SchedulerMetrics::OnStep(const scheduler::StepReport& report,
                              const scheduler::SchedulerSnapshot& after) {
  metrics_->step_duration().Observe(absl::ToDoubleSeconds(report.duration));
  metrics_->step_tokens().Observe(report.tokens);
  metrics_->step_batch_size().Observe(report.batch_size);
  metrics_->engine_seconds().Increment(absl::ToDoubleSeconds(report.engine_time));
  metrics_->iteration_seconds().Increment(absl::ToDoubleSeconds(report.iteration));
  for (const scheduler::PressureEvent& e : report.pressure) {
    switch (e.kind) {
      case scheduler::PressureEvent::Kind::kDegrade:
        metrics_->degrades(e.from_chunk_size, e.to_chunk_size).Increment();
        break;
      case scheduler::PressureEvent::Kind::kPreempt:
        metrics_->preemptions().Increment();
        break;
    }
  }
  for (const auto& [chunk_size, chunks] : report.compressed_chunks) {
    if (chunks > 0) metrics_->ForChunkSize(chunk_size).compressor_calls->Increment(chunks);
  }
  Update(after);
}

void SchedulerMetrics::Update(const scheduler::SchedulerSnapshot& snapshot) {
  for (int l : chunk_sizes_) {
    const metrics::ChunkSizeMetrics& series = metrics_->ForChunkSize(l);
    series.requests_running->Set(CountFor(snapshot.running, l));
    series.requests_waiting->Set(CountFor(snapshot.waiting, l));
  }
  int running = 0, waiting = 0;
  for (const auto& [l, n] : snapshot.running) running += n;
  for (const auto& [l, n] : snapshot.waiting) waiting += n;
  metrics_->num_requests_running().Set(running);
  metrics_->num_requests_waiting().Set(waiting);
  metrics_->kv_pages_used().Set(snapshot.kv_pages_used);
  metrics_->kv_pages_total().Set(snapshot.kv_pages_total);
  metrics_->kv_bytes_used().Set(static_cast<double>(snapshot.kv_bytes_used));
  metrics_->kv_bytes_total().Set(static_cast<double>(snapshot.kv_bytes_total));
  metrics_->prefix_cache_pages().Set(snapshot.kv_pages_cached);
  absl::MutexLock lock(&mu_);
  // Snapshots may arrive out of order from two threads: only ever count forward.
  if (snapshot.prefix_query_tokens > prefix_query_tokens_) {
    metrics_->prefix_cache_query_tokens().Increment(
        static_cast<double>(snapshot.prefix_query_tokens - prefix_query_tokens_));
    prefix_query_tokens_ = snapshot.prefix_query_tokens;
  }
  if (snapshot.prefix_hit_tokens > prefix_hit_tokens_) {
    metrics_->prefix_cache_hit_tokens().Increment(
        static_cast<double>(snapshot.prefix_hit_tokens - prefix_hit_tokens_));
    prefix_hit_tokens_ = snapshot.prefix_hit_tokens;
  }
}

}  // namespace catserve::server
