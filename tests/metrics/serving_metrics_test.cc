#include "server/metrics/serving_metrics.h"

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace catserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const BuildInfo kBuild{"0.1.0", "cat-small", "cpu"};

std::string Scrape(const ServingMetrics& metrics) {
  return prometheus::TextSerializer().Serialize(metrics.Collect());
}

// prometheus-cpp leaves out a labelled family until it has a series; the daemon creates them for
// every chunk size it serves at start (SchedulerMetrics).
TEST(ServingMetricsTest, ExposesTheWholeContract) {
  ServingMetrics metrics(kBuild);
  metrics.ForChunkSize(2);
  metrics.degrades(2, 8);
  metrics.SetDevice("cpu", "", 0);
  std::set<std::string> names;
  for (const prometheus::MetricFamily& family : metrics.Collect()) {
    EXPECT_TRUE(names.insert(family.name).second) << family.name << " exposed twice";
  }
  EXPECT_EQ(names, (std::set<std::string>{
                       "catserve_build_info",
                       "catserve_device_info",
                       "catserve_weights_bytes",
                       "catserve_requests_running",
                       "catserve_requests_waiting",
                       "catserve_num_requests_running",
                       "catserve_num_requests_waiting",
                       "catserve_requests_finished_total",
                       "catserve_requests_by_transport_total",
                       "catserve_prefix_cache_pages",
                       "catserve_prefix_cache_query_tokens_total",
                       "catserve_prefix_cache_hit_tokens_total",
                       "catserve_prompt_tokens_total",
                       "catserve_generation_tokens_total",
                       "catserve_time_to_first_token_seconds",
                       "catserve_time_per_output_token_seconds",
                       "catserve_e2e_request_latency_seconds",
                       "catserve_request_queue_time_seconds",
                       "catserve_kv_pages_used",
                       "catserve_kv_pages_capacity",
                       "catserve_kv_bytes_used",
                       "catserve_kv_bytes_capacity",
                       "catserve_kv_pool_usage_ratio",
                       "catserve_compressor_calls_total",
                       "catserve_preemptions_total",
                       "catserve_degrades_total",
                       "catserve_step_duration_seconds",
                       "catserve_step_tokens",
                       "catserve_step_batch_size",
                       "catserve_engine_busy_seconds_total",
                       "catserve_scheduler_iteration_seconds_total",
                       "process_cpu_seconds_total",
                       "process_resident_memory_bytes",
                       "process_virtual_memory_bytes",
                       "process_open_fds",
                       "process_max_fds",
                       "process_start_time_seconds",
                   }));
  EXPECT_THAT(Scrape(metrics), HasSubstr("catserve_build_info{backend=\"cpu\",model=\"cat-small\","
                                         "version=\"0.1.0\"} 1\n"));
}

TEST(ServingMetricsTest, DeviceInfoSaysWhereTheEngineRunsAndWhatItHolds) {
  ServingMetrics metrics(kBuild);
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr("catserve_device_info")));
  metrics.SetDevice("cuda", "NVIDIA H100 80GB HBM3", 123456789.0);
  const std::string scrape = Scrape(metrics);
  EXPECT_THAT(scrape,
              HasSubstr("catserve_device_info{device=\"cuda\",gpu=\"NVIDIA H100 80GB HBM3\"} 1\n"));
  EXPECT_THAT(scrape, HasSubstr("catserve_weights_bytes 123456789\n"));
}

TEST(ServingMetricsTest, ChunkSizeSeriesAreCreatedLazilyWithEveryOutcome) {
  ServingMetrics metrics(kBuild);
  EXPECT_THAT(Scrape(metrics), Not(HasSubstr("chunk_size=")));

  const ChunkSizeMetrics& c8 = metrics.ForChunkSize(8);
  c8.finished(RequestOutcome::kDeadlineExceeded).Increment();
  c8.generation_tokens->Increment(42);
  c8.time_to_first_token->Observe(0.03);
  const std::string text = Scrape(metrics);
  EXPECT_THAT(text, HasSubstr("catserve_requests_finished_total{chunk_size=\"8\","
                              "outcome=\"deadline_exceeded\"} 1\n"));
  for (const char* outcome : {"stop", "length", "cancelled", "error", "rejected"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("catserve_requests_finished_total{chunk_size=\"8\","
                                             "outcome=\"",
                                             outcome, "\"} 0\n")));
  }
  EXPECT_THAT(text, HasSubstr("catserve_generation_tokens_total{chunk_size=\"8\"} 42\n"));
  EXPECT_THAT(text, HasSubstr("catserve_time_to_first_token_seconds_bucket{chunk_size=\"8\","
                              "le=\"0.04\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_time_to_first_token_seconds_bucket{chunk_size=\"8\","
                              "le=\"0.02\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("chunk_size=\"16\"")));
}

TEST(ServingMetricsTest, ForChunkSizeIsStable) {
  ServingMetrics metrics(kBuild);
  for (int chunk_size : {1, 2, 8, 32768, 3, 65536, 0, -4}) {
    const ChunkSizeMetrics* first = &metrics.ForChunkSize(chunk_size);
    EXPECT_EQ(&metrics.ForChunkSize(chunk_size), first) << chunk_size;
    first->prompt_tokens->Increment();
  }
  EXPECT_NE(&metrics.ForChunkSize(4), &metrics.ForChunkSize(8));
  EXPECT_EQ(metrics.ForChunkSize(3).prompt_tokens->Value(), 1);
  EXPECT_THAT(Scrape(metrics), HasSubstr("catserve_prompt_tokens_total{chunk_size=\"65536\"} 1\n"));
}

TEST(ServingMetricsTest, PoolUsageRatioFollowsPageGauges) {
  ServingMetrics metrics(kBuild);
  EXPECT_THAT(Scrape(metrics), HasSubstr("catserve_kv_pool_usage_ratio 0\n"));
  metrics.kv_pages_total().Set(1024);
  metrics.kv_pages_used().Set(256);
  metrics.kv_bytes_total().Set(17179869184.0);
  EXPECT_THAT(Scrape(metrics), HasSubstr("catserve_kv_pool_usage_ratio 0.25\n"));
  EXPECT_THAT(Scrape(metrics), HasSubstr("catserve_kv_bytes_capacity 17179869184\n"));
}

TEST(ServingMetricsTest, StepHistogramsUseTheirBuckets) {
  ServingMetrics metrics(kBuild);
  metrics.step_tokens().Observe(300);
  metrics.step_batch_size().Observe(3);
  const std::string text = Scrape(metrics);
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_bucket{le=\"256\"} 0\n"
                              "catserve_step_tokens_bucket{le=\"512\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_bucket{le=\"16384\"} 1\n"
                              "catserve_step_tokens_bucket{le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_sum 300\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_count 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_batch_size_bucket{le=\"4\"} 1\n"));
}

TEST(ServingMetricsTest, PressureDecisionsAreCounted) {
  ServingMetrics metrics(kBuild);
  metrics.preemptions().Increment();
  metrics.degrades(2, 8).Increment();
  metrics.degrades(2, 8).Increment();
  metrics.degrades(8, 16).Increment();
  const std::string text = Scrape(metrics);
  EXPECT_THAT(text, HasSubstr("catserve_preemptions_total 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_degrades_total{from=\"2\",to=\"8\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("catserve_degrades_total{from=\"8\",to=\"16\"} 1\n"));
}

TEST(ServingMetricsTest, OutcomeLabels) {
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kStop), "stop");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kLength), "length");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kCancelled), "cancelled");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kError), "error");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kRejected), "rejected");
}

constexpr int kThreads = 8;
constexpr int kIncrements = 100000;

// Every thread looks its series up itself, so creation races must yield one series per label set.
TEST(ServingMetricsConcurrencyTest, IncrementsAndObservationsAddUpExactly) {
  ServingMetrics metrics(kBuild);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      for (int i = 0; i < kIncrements; ++i) {
        const ChunkSizeMetrics& series = metrics.ForChunkSize(i % 2 == 0 ? 4 : 12);
        series.generation_tokens->Increment();
        series.time_per_output_token->Observe(0.001 * (i % 7));
        series.requests_running->Increment();
        series.requests_running->Decrement();
        if (i % 100 == 0) metrics.degrades(4, 8 + t % 2 * 8).Increment();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double half = kThreads * kIncrements / 2.0;
  EXPECT_EQ(metrics.ForChunkSize(4).generation_tokens->Value(), half);
  EXPECT_EQ(metrics.ForChunkSize(12).generation_tokens->Value(), half);
  EXPECT_EQ(metrics.ForChunkSize(4).requests_running->Value(), 0);
  const std::string text = Scrape(metrics);
  EXPECT_THAT(text,
              HasSubstr(absl::StrCat(
                  "catserve_time_per_output_token_seconds_count{chunk_size=\"12\"} ", half, "\n")));
  const int degrades_per_label = kThreads / 2 * kIncrements / 100;
  EXPECT_THAT(text, HasSubstr(absl::StrCat("catserve_degrades_total{from=\"4\",to=\"8\"} ",
                                           degrades_per_label, "\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("catserve_degrades_total{from=\"4\",to=\"16\"} ",
                                           degrades_per_label, "\n")));
}

}  // namespace
}  // namespace catserve::metrics
