#ifndef CATSERVE_SERVER_METRICS_SERVING_METRICS_H_
#define CATSERVE_SERVER_METRICS_SERVING_METRICS_H_

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "server/metrics/process_collector.h"

namespace catserve::metrics {

// The metric types are prometheus-cpp's; every update is lock-free or takes a short lock inside
// the metric (histograms), and is safe from any thread.
using Counter = prometheus::Counter;
using Gauge = prometheus::Gauge;
using Histogram = prometheus::Histogram;

// How a request ended; the "outcome" label of catserve_requests_finished_total.
enum class RequestOutcome {
  kStop,              // "stop": a stop string, stop id or end-of-sequence token
  kLength,            // "length": max_tokens or the context limit reached
  kCancelled,         // "cancelled": the client went away or cancelled
  kDeadlineExceeded,  // "deadline_exceeded": the gRPC deadline passed
  kError,             // "error": an internal error ended it
  kRejected,          // "rejected": refused at admission (invalid, pool exhausted, draining)
};
inline constexpr int kNumRequestOutcomes = 6;

// The label value of `outcome`, e.g. "deadline_exceeded".
absl::string_view RequestOutcomeLabel(RequestOutcome outcome);

// Which API a request came by; the "transport" label of catserve_requests_by_transport_total.
enum class Transport {
  kGrpc,    // "grpc": catserve.v1.Generation
  kOpenAi,  // "openai": the OpenAI-compatible HTTP API
};
inline constexpr int kNumTransports = 2;
absl::string_view TransportLabel(Transport transport);

// One transport's finished requests, by outcome (rejections included). Non-null pointers owned by
// ServingMetrics' registry.
struct TransportMetrics {
  std::array<Counter*, kNumRequestOutcomes> requests_finished;  // indexed by RequestOutcome
  Counter& finished(RequestOutcome outcome) const {
    return *requests_finished[static_cast<int>(outcome)];
  }
};

// Labels of catserve_build_info.
struct BuildInfo {
  std::string version;
  std::string model;
  std::string backend;
};

// The series of every per-chunk-size metric for one chunk size. All pointers are non-null and
// owned by ServingMetrics' registry.
struct ChunkSizeMetrics {
  Gauge* requests_running;
  Gauge* requests_waiting;
  std::array<Counter*, kNumRequestOutcomes> requests_finished;  // indexed by RequestOutcome
  Counter* prompt_tokens;
  Counter* generation_tokens;
  Counter* compressor_calls;
  Histogram* time_to_first_token;    // seconds
  Histogram* time_per_output_token;  // seconds
  Histogram* e2e_request_latency;    // seconds
  Histogram* request_queue_time;     // seconds

  Counter& finished(RequestOutcome outcome) const {
    return *requests_finished[static_cast<int>(outcome)];
  }
};

// catserve's whole metric set (see docs/METRICS.md) on its own prometheus::Registry, with typed
// handles for the scheduler and the server to update. As a prometheus::Collectable it yields every
// family /metrics exposes: the registry's, catserve_kv_pool_usage_ratio (computed at collection
// from the two page gauges) and the process_* metrics (ProcessCollector).
//
// Thread-safe. Per-chunk-size series are created on the first ForChunkSize() of each size, all at
// zero (every outcome included), so rates start from a known point. After that, for chunk sizes
// that are powers of two below 2^16, ForChunkSize() is one atomic load from a fixed array: no
// lock, no allocation. Other sizes are looked up under a mutex (they are legal but unusual).
class ServingMetrics final : public prometheus::Collectable {
 public:
  // Registers every catserve_* family and sets catserve_build_info to 1 with `build`'s labels.
  explicit ServingMetrics(const BuildInfo& build);

  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // The series labelled chunk_size="<chunk_size>". The reference stays valid for the life of
  // this object.
  const ChunkSizeMetrics& ForChunkSize(int chunk_size);

  // catserve_requests_by_transport_total{transport="<label>", outcome}.
  const TransportMetrics& ForTransport(Transport transport) const {
    return by_transport_[static_cast<int>(transport)];
  }

  // Counts a request that ended before it had a stream (refused by validation or admission, or
  // ended by gRPC before the handler ran) in both its chunk size's and its transport's series.
  void CountEndedUnstreamed(Transport transport, int chunk_size, RequestOutcome outcome) {
    ForChunkSize(chunk_size).finished(outcome).Increment();
    ForTransport(transport).finished(outcome).Increment();
  }

  // KV pool accounting. catserve_kv_pool_usage_ratio is computed from the two page gauges at
  // scrape (0 while the total is 0).
  // The per-chunk-size catserve_requests_running and _waiting summed, unlabelled: one series per
  // name, as inference gateways (the Gateway API Inference Extension's endpoint picker, llm-d)
  // read a pod's queue and batch.
  Gauge& num_requests_running() { return *num_requests_running_; }
  Gauge& num_requests_waiting() { return *num_requests_waiting_; }
  Gauge& kv_pages_used() { return *kv_pages_used_; }
  Gauge& kv_pages_total() { return *kv_pages_total_; }
  Gauge& kv_bytes_used() { return *kv_bytes_used_; }
  Gauge& kv_bytes_total() { return *kv_bytes_total_; }
  // Prefix caching: pages the cache holds, and tokens looked up and found in it.
  Gauge& prefix_cache_pages() { return *prefix_cache_pages_; }
  Counter& prefix_cache_query_tokens() { return *prefix_cache_query_tokens_; }
  Counter& prefix_cache_hit_tokens() { return *prefix_cache_hit_tokens_; }

  // Memory-pressure decisions: sequences preempted (to be recomputed), and sequences admitted or
  // continued at a coarser chunk size, labelled from="<asked>", to="<served>".
  Counter& preemptions() { return *preemptions_; }
  Counter& degrades(int from_chunk_size, int to_chunk_size);

  // One observation per engine step.
  Histogram& step_duration() { return *step_duration_; }      // seconds
  Histogram& step_tokens() { return *step_tokens_; }          // positions processed
  Histogram& step_batch_size() { return *step_batch_size_; }  // sequences in the batch
  // Seconds inside the engine, and seconds of whole scheduler iterations around those steps;
  // 1 - rate(engine) / rate(iteration) is the serving layer's own share of the loop.
  Counter& engine_seconds() { return *engine_seconds_; }
  Counter& iteration_seconds() { return *iteration_seconds_; }

  // Sets catserve_device_info{device, gpu} to 1 and catserve_weights_bytes (device memory the
  // weights take; 0 on the CPU). Called once at startup.
  void SetDevice(const std::string& device, const std::string& gpu_name, double weights_bytes);

  // prometheus::Collectable: every family, for the /metrics endpoint.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  using CounterFamily = prometheus::Family<Counter>;
  using GaugeFamily = prometheus::Family<Gauge>;
  using HistogramFamily = prometheus::Family<Histogram>;
  struct ChunkSizeFamilies {
    GaugeFamily* requests_running;
    GaugeFamily* requests_waiting;
    CounterFamily* requests_finished;
    CounterFamily* prompt_tokens;
    CounterFamily* generation_tokens;
    CounterFamily* compressor_calls;
    HistogramFamily* time_to_first_token;
    HistogramFamily* time_per_output_token;
    HistogramFamily* e2e_request_latency;
    HistogramFamily* request_queue_time;
  };
  // Power-of-two chunk sizes 1 .. 2^(kFastChunkSizes-1) take the lock-free path.
  static constexpr int kFastChunkSizes = 16;

  std::unique_ptr<ChunkSizeMetrics> MakeChunkSizeMetrics(int chunk_size) const;

  prometheus::Registry registry_;
  ProcessCollector process_;
  ChunkSizeFamilies families_{};
  CounterFamily* degrades_ = nullptr;
  Gauge* num_requests_running_ = nullptr;
  Gauge* num_requests_waiting_ = nullptr;
  Gauge* kv_pages_used_ = nullptr;
  Gauge* kv_pages_total_ = nullptr;
  Gauge* kv_bytes_used_ = nullptr;
  Gauge* kv_bytes_total_ = nullptr;
  Gauge* prefix_cache_pages_ = nullptr;
  Counter* prefix_cache_query_tokens_ = nullptr;
  Counter* prefix_cache_hit_tokens_ = nullptr;
  Counter* preemptions_ = nullptr;
  Histogram* step_duration_ = nullptr;
  Histogram* step_tokens_ = nullptr;
  Histogram* step_batch_size_ = nullptr;
  Counter* engine_seconds_ = nullptr;
  Counter* iteration_seconds_ = nullptr;

  std::array<TransportMetrics, kNumTransports> by_transport_{};
  // by_log2_[k] caches chunk size 2^k once created; written once under mu_, read without it.
  std::array<std::atomic<const ChunkSizeMetrics*>, kFastChunkSizes> by_log2_{};
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::unique_ptr<ChunkSizeMetrics>> by_chunk_size_ ABSL_GUARDED_BY(mu_);
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_SERVING_METRICS_H_
