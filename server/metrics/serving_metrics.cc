#include "server/metrics/serving_metrics.h"

#include <bit>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

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

// `count` bounds start, start * factor, start * factor^2, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  for (double bound = start; static_cast<int>(bounds.size()) < count; bound *= factor) {
    bounds.push_back(bound);
  }
  return bounds;
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

absl::string_view TransportLabel(Transport transport) {
  switch (transport) {
    case Transport::kGrpc:
      return "grpc";
    case Transport::kOpenAi:
      return "openai";
  }
  return "grpc";
}

ServingMetrics::ServingMetrics(const BuildInfo& build) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  ChunkSizeFamilies& f = families_;
  BuildGauge()
      .Name("catserve_build_info")
      .Help("Build information; the value is always 1.")
      .Register(registry_)
      .Add({{"version", build.version}, {"model", build.model}, {"backend", build.backend}})
      .Set(1);
  f.requests_running = &BuildGauge()
                            .Name("catserve_requests_running")
                            .Help("Requests currently in the running batch.")
                            .Register(registry_);
  f.requests_waiting = &BuildGauge()
                            .Name("catserve_requests_waiting")
                            .Help("Requests queued, waiting for admission.")
                            .Register(registry_);
  f.requests_finished = &BuildCounter()
                             .Name("catserve_requests_finished_total")
                             .Help("Requests finished, by outcome.")
                             .Register(registry_);
  f.prompt_tokens = &BuildCounter()
                         .Name("catserve_prompt_tokens_total")
                         .Help("Prompt tokens processed (prefill).")
                         .Register(registry_);
  f.generation_tokens = &BuildCounter()
                             .Name("catserve_generation_tokens_total")
                             .Help("Tokens generated.")
                             .Register(registry_);
  f.time_to_first_token = &BuildHistogram()
                               .Name("catserve_time_to_first_token_seconds")
                               .Help("Time from arrival to the first generated token.")
                               .Register(registry_);
  f.time_per_output_token = &BuildHistogram()
                                 .Name("catserve_time_per_output_token_seconds")
                                 .Help("Time between consecutive generated tokens of one request.")
                                 .Register(registry_);
  f.e2e_request_latency = &BuildHistogram()
                               .Name("catserve_e2e_request_latency_seconds")
                               .Help("Time from arrival to the end of the request.")
                               .Register(registry_);
  f.request_queue_time = &BuildHistogram()
                              .Name("catserve_request_queue_time_seconds")
                              .Help("Time a request waited in the queue before admission.")
                              .Register(registry_);
  CounterFamily& by_transport =
      BuildCounter()
          .Name("catserve_requests_by_transport_total")
          .Help(
              "Requests finished, by the API they came by (grpc, openai) and outcome; "
              "rejections before the scheduler included.")
          .Register(registry_);
  for (int t = 0; t < kNumTransports; ++t) {
    for (int o = 0; o < kNumRequestOutcomes; ++o) {
      by_transport_[t].requests_finished[o] = &by_transport.Add(
          {{"transport", std::string(TransportLabel(static_cast<Transport>(t)))},
           {"outcome", std::string(RequestOutcomeLabel(static_cast<RequestOutcome>(o)))}});
    }
  }
  num_requests_running_ = &BuildGauge()
                               .Name("catserve_num_requests_running")
                               .Help("Requests in the running batch, every chunk size together.")
                               .Register(registry_)
                               .Add({});
  num_requests_waiting_ = &BuildGauge()
                               .Name("catserve_num_requests_waiting")
                               .Help("Requests waiting for admission, every chunk size together.")
                               .Register(registry_)
                               .Add({});
  kv_pages_used_ = &BuildGauge()
                        .Name("catserve_kv_pages_used")
                        .Help(
                            "Compressed-KV pool pages held by live sequences (a shared page "
                            "counts once).")
                        .Register(registry_)
                        .Add({});
  prefix_cache_pages_ = &BuildGauge()
                             .Name("catserve_prefix_cache_pages")
                             .Help(
                                 "Compressed-KV pages the prefix cache holds (those no sequence "
                                 "holds are free for the taking).")
                             .Register(registry_)
                             .Add({});
  prefix_cache_query_tokens_ =
      &BuildCounter()
           .Name("catserve_prefix_cache_query_tokens_total")
           .Help("Tokens looked up in the prefix cache (a sequence's tokens when it starts).")
           .Register(registry_)
           .Add({});
  prefix_cache_hit_tokens_ = &BuildCounter()
                                  .Name("catserve_prefix_cache_hit_tokens_total")
                                  .Help("Tokens whose compressed pages came from the prefix cache.")
                                  .Register(registry_)
                                  .Add({});
  kv_pages_total_ = &BuildGauge()
                         .Name("catserve_kv_pages_capacity")
                         .Help("Compressed-KV pool pages in the arena.")
                         .Register(registry_)
                         .Add({});
  kv_bytes_used_ = &BuildGauge()
                        .Name("catserve_kv_bytes_used")
                        .Help("Bytes of the compressed-KV pool in use.")
                        .Register(registry_)
                        .Add({});
  kv_bytes_total_ = &BuildGauge()
                         .Name("catserve_kv_bytes_capacity")
                         .Help("Bytes of the compressed-KV pool arena.")
                         .Register(registry_)
                         .Add({});
  f.compressor_calls = &BuildCounter()
                            .Name("catserve_compressor_calls_total")
                            .Help("Chunks compressed by the compressor.")
                            .Register(registry_);
  preemptions_ = &BuildCounter()
                      .Name("catserve_preemptions_total")
                      .Help("Running sequences evicted under memory pressure, to be recomputed.")
                      .Register(registry_)
                      .Add({});
  degrades_ = &BuildCounter()
                   .Name("catserve_degrades_total")
                   .Help(
                       "Requests admitted or continued at a larger chunk size under memory "
                       "pressure, by chunk size asked (from) and served (to).")
                   .Register(registry_);
  step_duration_ = &BuildHistogram()
                        .Name("catserve_step_duration_seconds")
                        .Help("Wall time of one engine step.")
                        .Register(registry_)
                        .Add({}, StepDurationBuckets());
  step_tokens_ = &BuildHistogram()
                      .Name("catserve_step_tokens")
                      .Help("Token positions processed in one engine step.")
                      .Register(registry_)
                      .Add({}, ExponentialBuckets(1, 2, 15));
  step_batch_size_ = &BuildHistogram()
                          .Name("catserve_step_batch_size")
                          .Help("Sequences in one engine step.")
                          .Register(registry_)
                          .Add({}, ExponentialBuckets(1, 2, 11));
  engine_seconds_ = &BuildCounter()
                         .Name("catserve_engine_busy_seconds_total")
                         .Help("Seconds spent inside engine steps.")
                         .Register(registry_)
                         .Add({});
  iteration_seconds_ = &BuildCounter()
                            .Name("catserve_scheduler_iteration_seconds_total")
                            .Help(
                                "Seconds of scheduler iterations that ran a step: queue "
                                "updates, the step, and handing results to the streams.")
                            .Register(registry_)
                            .Add({});
}

Counter& ServingMetrics::degrades(int from_chunk_size, int to_chunk_size) {
  return degrades_->Add(
      {{"from", absl::StrCat(from_chunk_size)}, {"to", absl::StrCat(to_chunk_size)}});
}

void ServingMetrics::SetDevice(const std::string& device, const std::string& gpu_name,
                               double weights_bytes) {
  prometheus::BuildGauge()
      .Name("catserve_device_info")
      .Help("The device the engine runs on (gpu: its name, empty on the CPU); the value is 1.")
      .Register(registry_)
      .Add({{"device", device}, {"gpu", gpu_name}})
      .Set(1);
  prometheus::BuildGauge()
      .Name("catserve_weights_bytes")
      .Help("Device memory the model's weights take (0 on the CPU, where it is not tracked).")
      .Register(registry_)
      .Add({})
      .Set(weights_bytes);
}

std::vector<prometheus::MetricFamily> ServingMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> families = registry_.Collect();
  prometheus::MetricFamily usage{
      "catserve_kv_pool_usage_ratio",
      "Fraction of compressed-KV pool pages in use (pages used / pages total).",
      prometheus::MetricType::Gauge,
      {prometheus::ClientMetric{}}};
  const double pages = kv_pages_total_->Value();
  usage.metric[0].gauge.value = pages > 0 ? kv_pages_used_->Value() / pages : 0.0;
  families.push_back(std::move(usage));
  for (prometheus::MetricFamily& family : process_.Collect()) {
    families.push_back(std::move(family));
  }
  return families;
}

std::unique_ptr<ChunkSizeMetrics> ServingMetrics::MakeChunkSizeMetrics(int chunk_size) const {
  const std::string label = absl::StrCat(chunk_size);
  const prometheus::Labels labels = {{kChunkSize, label}};
  auto m = std::make_unique<ChunkSizeMetrics>();
  m->requests_running = &families_.requests_running->Add(labels);
  m->requests_waiting = &families_.requests_waiting->Add(labels);
  for (int i = 0; i < kNumRequestOutcomes; ++i) {
    m->requests_finished[i] = &families_.requests_finished->Add(
        {{"outcome", std::string(RequestOutcomeLabel(static_cast<RequestOutcome>(i)))},
         {kChunkSize, label}});
  }
  m->prompt_tokens = &families_.prompt_tokens->Add(labels);
  m->generation_tokens = &families_.generation_tokens->Add(labels);
  m->compressor_calls = &families_.compressor_calls->Add(labels);
  m->time_to_first_token = &families_.time_to_first_token->Add(labels, TimeToFirstTokenBuckets());
  m->time_per_output_token =
      &families_.time_per_output_token->Add(labels, TimePerOutputTokenBuckets());
  m->e2e_request_latency = &families_.e2e_request_latency->Add(labels, RequestLatencyBuckets());
  m->request_queue_time = &families_.request_queue_time->Add(labels, QueueTimeBuckets());
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
