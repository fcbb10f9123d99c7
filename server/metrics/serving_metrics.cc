#include "server/metrics/serving_metrics.h"

#include <bit>
#include <functional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/metrics/process_collector.h"

namespace catserve::metrics {
namespace {

// Latencies of an LLM server run from milliseconds (a cached short prompt) to minutes (a long
// generation under load); the bounds are dense where SLOs usually sit (50 ms - 2 s).
const std::vector<double>& TimeToFirstTokenBuckets() {
  static const auto* const kBounds = new std::vector<double>{
      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
      1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0};
  return *kBounds;
}

// Time per output token is one decode step plus scheduling: sub-millisecond to a few seconds.
const std::vector<double>& TimePerOutputTokenBuckets() {
  static const auto* const kBounds = new std::vector<double>{
      0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
      0.075,  0.1,   0.15,   0.2,   0.3,    0.4,  0.5,   0.75, 1.0,   2.5,  5.0};
  return *kBounds;
}

const std::vector<double>& RequestLatencyBuckets() {
  static const auto* const kBounds = new std::vector<double>{
      0.01, 0.025, 0.05, 0.1,  0.25, 0.5,   1.0,   2.5,   5.0,   10.0,  15.0,
      20.0, 30.0,  40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0};
  return *kBounds;
}

const std::vector<double>& QueueTimeBuckets() {
  static const auto* const kBounds =
      new std::vector<double>{0.001, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,   1.0,  2.5,
                              5.0,   10.0,  20.0, 30.0,  60.0, 120.0, 240.0, 480.0, 960.0};
  return *kBounds;
}

const std::vector<double>& StepDurationBuckets() {
  static const auto* const kBounds = new std::vector<double>{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};
  return *kBounds;
}

constexpr char kChunkSize[] = "chunk_size";

// Unwraps a StatusOr into `*out`, returning its status.
template <typename T>
absl::Status Assign(absl::StatusOr<T> result, T* out) {
  if (!result.ok()) return result.status();
  *out = *result;
  return absl::OkStatus();
}

}  // namespace

absl::string_view RequestOutcomeLabel(RequestOutcome outcome) {
  switch (outcome) {
    case RequestOutcome::kStop:
      return "stop";
    case RequestOutcome::kLength:
      return "length";
    case RequestOutcome::kCancelled:
      return "cancelled";
    case RequestOutcome::kDeadlineExceeded:
      return "deadline_exceeded";
    case RequestOutcome::kError:
      return "error";
    case RequestOutcome::kRejected:
      return "rejected";
  }
  return "error";
}

absl::StatusOr<std::unique_ptr<ServingMetrics>> ServingMetrics::Create(Registry* registry,
                                                                       const BuildInfo& build) {
  std::unique_ptr<ServingMetrics> metrics(new ServingMetrics());
  if (absl::Status status = metrics->Register(registry, build); !status.ok()) return status;
  return metrics;
}

absl::Status ServingMetrics::Register(Registry* registry, const BuildInfo& build) {
  ChunkSizeFamilies& f = families_;
  GaugeFamily* build_info = nullptr;
  GaugeFamily* kv_pages_used = nullptr;
  GaugeFamily* kv_pages_total = nullptr;
  GaugeFamily* kv_bytes_used = nullptr;
  GaugeFamily* kv_bytes_total = nullptr;
  CounterFamily* preemptions = nullptr;
  CounterFamily* degrades = nullptr;
  HistogramFamily* step_duration = nullptr;
  HistogramFamily* step_tokens = nullptr;
  HistogramFamily* step_batch_size = nullptr;
  CounterFamily* engine_seconds = nullptr;
  CounterFamily* iteration_seconds = nullptr;

  // One step per family, in exposition order; registration stops at the first failure.
  const std::function<absl::Status()> steps[] = {
      [&] {
        return Assign(
            registry->AddGauge("catserve_build_info", "Build information; the value is always 1.",
                               {"version", "model", "backend"}),
            &build_info);
      },
      [&] {
        return Assign(registry->AddGauge("catserve_requests_running",
                                         "Requests currently in the running batch.", {kChunkSize}),
                      &f.requests_running);
      },
      [&] {
        return Assign(registry->AddGauge("catserve_requests_waiting",
                                         "Requests queued, waiting for admission.", {kChunkSize}),
                      &f.requests_waiting);
      },
      [&] {
        return Assign(
            registry->AddCounter("catserve_requests_finished_total",
                                 "Requests finished, by outcome.", {"outcome", kChunkSize}),
            &f.requests_finished);
      },
      [&] {
        return Assign(registry->AddCounter("catserve_prompt_tokens_total",
                                           "Prompt tokens processed (prefill).", {kChunkSize}),
                      &f.prompt_tokens);
      },
      [&] {
        return Assign(registry->AddCounter("catserve_generation_tokens_total", "Tokens generated.",
                                           {kChunkSize}),
                      &f.generation_tokens);
      },
      [&] {
        return Assign(registry->AddHistogram("catserve_time_to_first_token_seconds",
                                             "Time from arrival to the first generated token.",
                                             {kChunkSize}, TimeToFirstTokenBuckets()),
                      &f.time_to_first_token);
      },
      [&] {
        return Assign(
            registry->AddHistogram("catserve_time_per_output_token_seconds",
                                   "Time between consecutive generated tokens of one request.",
                                   {kChunkSize}, TimePerOutputTokenBuckets()),
            &f.time_per_output_token);
      },
      [&] {
        return Assign(registry->AddHistogram("catserve_e2e_request_latency_seconds",
                                             "Time from arrival to the end of the request.",
                                             {kChunkSize}, RequestLatencyBuckets()),
                      &f.e2e_request_latency);
      },
      [&] {
        return Assign(registry->AddHistogram("catserve_request_queue_time_seconds",
                                             "Time a request waited in the queue before admission.",
                                             {kChunkSize}, QueueTimeBuckets()),
                      &f.request_queue_time);
      },
      [&] {
        return Assign(registry->AddGauge("catserve_kv_pages_used",
                                         "Compressed-KV pool pages owned by live sequences."),
                      &kv_pages_used);
      },
      [&] {
        return Assign(registry->AddGauge("catserve_kv_pages_capacity",
                                         "Compressed-KV pool pages in the arena."),
                      &kv_pages_total);
      },
      [&] {
        return Assign(
            registry->AddGauge("catserve_kv_bytes_used", "Bytes of the compressed-KV pool in use."),
            &kv_bytes_used);
      },
      [&] {
        return Assign(registry->AddGauge("catserve_kv_bytes_capacity",
                                         "Bytes of the compressed-KV pool arena."),
                      &kv_bytes_total);
      },
      [&] {
        // Captures registry-owned series, not `this`: the callback outlives a failed Create.
        const Gauge* used = &kv_pages_used->WithLabels({});
        const Gauge* total = &kv_pages_total->WithLabels({});
        return registry->AddCallbackGauge(
            "catserve_kv_pool_usage_ratio",
            "Fraction of compressed-KV pool pages in use (pages used / pages total).",
            [used, total] {
              const double pages = total->Value();
              return pages > 0 ? used->Value() / pages : 0.0;
            });
      },
      [&] {
        return Assign(registry->AddCounter("catserve_compressor_calls_total",
                                           "Chunks compressed by the compressor.", {kChunkSize}),
                      &f.compressor_calls);
      },
      [&] {
        return Assign(registry->AddCounter(
                          "catserve_preemptions_total",
                          "Running sequences evicted under memory pressure, to be recomputed."),
                      &preemptions);
      },
      [&] {
        return Assign(registry->AddCounter(
                          "catserve_degrades_total",
                          "Requests admitted or continued at a larger chunk size under memory "
                          "pressure, by chunk size before and after.",
                          {"from", "to"}),
                      &degrades);
      },
      [&] {
        return Assign(
            registry->AddHistogram("catserve_step_duration_seconds",
                                   "Wall time of one engine step.", {}, StepDurationBuckets()),
            &step_duration);
      },
      [&] {
        return Assign(registry->AddHistogram("catserve_step_tokens",
                                             "Token positions processed in one engine step.", {},
                                             ExponentialBuckets(1, 2, 15)),
                      &step_tokens);
      },
      [&] {
        return Assign(
            registry->AddHistogram("catserve_step_batch_size", "Sequences in one engine step.", {},
                                   ExponentialBuckets(1, 2, 11)),
            &step_batch_size);
      },
      [&] {
        return Assign(registry->AddCounter("catserve_engine_busy_seconds_total",
                                           "Seconds spent inside engine steps."),
                      &engine_seconds);
      },
      [&] {
        return Assign(registry->AddCounter(
                          "catserve_scheduler_iteration_seconds_total",
                          "Seconds of scheduler iterations that ran a step: queue updates, the "
                          "step, and handing results to the streams."),
                      &iteration_seconds);
      },
      [&] { return registry->AddCollector(std::make_unique<ProcessCollector>()); },
  };
  for (const std::function<absl::Status()>& step : steps) {
    if (absl::Status status = step(); !status.ok()) return status;
  }

  build_info->WithLabels({build.version, build.model, build.backend}).Set(1);
  kv_pages_used_ = &kv_pages_used->WithLabels({});
  kv_pages_total_ = &kv_pages_total->WithLabels({});
  kv_bytes_used_ = &kv_bytes_used->WithLabels({});
  kv_bytes_total_ = &kv_bytes_total->WithLabels({});
  preemptions_ = &preemptions->WithLabels({});
  degrades_ = degrades;
  step_duration_ = &step_duration->WithLabels({});
  step_tokens_ = &step_tokens->WithLabels({});
  step_batch_size_ = &step_batch_size->WithLabels({});
  engine_seconds_ = &engine_seconds->WithLabels({});
  iteration_seconds_ = &iteration_seconds->WithLabels({});
  return absl::OkStatus();
}

Counter& ServingMetrics::degrades(int from_chunk_size, int to_chunk_size) {
  return degrades_->WithLabels({absl::StrCat(from_chunk_size), absl::StrCat(to_chunk_size)});
}

std::unique_ptr<ChunkSizeMetrics> ServingMetrics::MakeChunkSizeMetrics(int chunk_size) const {
  const std::string label = absl::StrCat(chunk_size);
  auto m = std::make_unique<ChunkSizeMetrics>();
  m->requests_running = &families_.requests_running->WithLabels({label});
  m->requests_waiting = &families_.requests_waiting->WithLabels({label});
  for (int i = 0; i < kNumRequestOutcomes; ++i) {
    m->requests_finished[i] = &families_.requests_finished->WithLabels(
        {RequestOutcomeLabel(static_cast<RequestOutcome>(i)), label});
  }
  m->prompt_tokens = &families_.prompt_tokens->WithLabels({label});
  m->generation_tokens = &families_.generation_tokens->WithLabels({label});
  m->compressor_calls = &families_.compressor_calls->WithLabels({label});
  m->time_to_first_token = &families_.time_to_first_token->WithLabels({label});
  m->time_per_output_token = &families_.time_per_output_token->WithLabels({label});
  m->e2e_request_latency = &families_.e2e_request_latency->WithLabels({label});
  m->request_queue_time = &families_.request_queue_time->WithLabels({label});
  return m;
}

const ChunkSizeMetrics& ServingMetrics::ForChunkSize(int chunk_size) {
  const bool fast = chunk_size > 0 && std::has_single_bit(static_cast<unsigned>(chunk_size)) &&
                    std::countr_zero(static_cast<unsigned>(chunk_size)) < kFastChunkSizes;
  const int slot = fast ? std::countr_zero(static_cast<unsigned>(chunk_size)) : 0;
  if (fast) {
    if (const ChunkSizeMetrics* cached = by_log2_[slot].load(std::memory_order_acquire)) {
      return *cached;
    }
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<ChunkSizeMetrics>& metrics = by_chunk_size_[chunk_size];
  if (metrics == nullptr) metrics = MakeChunkSizeMetrics(chunk_size);
  if (fast) by_log2_[slot].store(metrics.get(), std::memory_order_release);
  return *metrics;
}

}  // namespace catserve::metrics
