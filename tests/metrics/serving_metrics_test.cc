#include "server/metrics/serving_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace catserve::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const BuildInfo kBuild{"0.1.0", "cat-small", "cpu"};

TEST(ServingMetricsTest, RegistersTheWholeContract) {
  Registry registry;
  ASSERT_TRUE(ServingMetrics::Create(&registry, kBuild).ok());
  std::vector<std::string> names;
  for (const MetricFamilySnapshot& family : registry.Collect()) names.push_back(family.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "catserve_build_info",
                       "catserve_requests_running",
                       "catserve_requests_waiting",
                       "catserve_requests_finished_total",
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
  EXPECT_THAT(registry.Scrape(),
              HasSubstr("catserve_build_info{version=\"0.1.0\",model=\"cat-small\","
                        "backend=\"cpu\"} 1\n"));
}

TEST(ServingMetricsTest, SecondCreateOnOneRegistryFails) {
  Registry registry;
  ASSERT_TRUE(ServingMetrics::Create(&registry, kBuild).ok());
  EXPECT_EQ(ServingMetrics::Create(&registry, kBuild).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(registry.Scrape().empty());  // still scrapes after the failed Create
}

TEST(ServingMetricsTest, ChunkSizeSeriesAreCreatedLazilyWithEveryOutcome) {
  Registry registry;
  std::unique_ptr<ServingMetrics> metrics = *ServingMetrics::Create(&registry, kBuild);
  EXPECT_THAT(registry.Scrape(), Not(HasSubstr("chunk_size=")));

  const ChunkSizeMetrics& c8 = metrics->ForChunkSize(8);
  c8.finished(RequestOutcome::kDeadlineExceeded).Increment();
  c8.generation_tokens->Increment(42);
  c8.time_to_first_token->Observe(0.03);
  const std::string text = registry.Scrape();
  EXPECT_THAT(text, HasSubstr("catserve_requests_finished_total{outcome=\"deadline_exceeded\","
                              "chunk_size=\"8\"} 1\n"));
  for (const char* outcome : {"stop", "length", "cancelled", "error", "rejected"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("catserve_requests_finished_total{outcome=\"", outcome,
                                             "\",chunk_size=\"8\"} 0\n")));
  }
  EXPECT_THAT(text, HasSubstr("catserve_generation_tokens_total{chunk_size=\"8\"} 42\n"));
  EXPECT_THAT(text, HasSubstr("catserve_time_to_first_token_seconds_bucket{chunk_size=\"8\","
                              "le=\"0.04\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_time_to_first_token_seconds_bucket{chunk_size=\"8\","
                              "le=\"0.02\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("chunk_size=\"16\"")));
}

TEST(ServingMetricsTest, ForChunkSizeIsStable) {
  Registry registry;
  std::unique_ptr<ServingMetrics> metrics = *ServingMetrics::Create(&registry, kBuild);
  for (int chunk_size : {1, 2, 8, 32768, 3, 65536, 0, -4}) {
    const ChunkSizeMetrics* first = &metrics->ForChunkSize(chunk_size);
    EXPECT_EQ(&metrics->ForChunkSize(chunk_size), first) << chunk_size;
    first->prompt_tokens->Increment();
  }
  EXPECT_NE(&metrics->ForChunkSize(4), &metrics->ForChunkSize(8));
  EXPECT_EQ(metrics->ForChunkSize(3).prompt_tokens->Value(), 1);
  EXPECT_THAT(registry.Scrape(),
              HasSubstr("catserve_prompt_tokens_total{chunk_size=\"65536\"} 1\n"));
}

TEST(ServingMetricsTest, PoolUsageRatioFollowsPageGauges) {
  Registry registry;
  std::unique_ptr<ServingMetrics> metrics = *ServingMetrics::Create(&registry, kBuild);
  EXPECT_THAT(registry.Scrape(), HasSubstr("catserve_kv_pool_usage_ratio 0\n"));
  metrics->kv_pages_total().Set(1024);
  metrics->kv_pages_used().Set(256);
  metrics->kv_bytes_total().Set(17179869184.0);
  EXPECT_THAT(registry.Scrape(), HasSubstr("catserve_kv_pool_usage_ratio 0.25\n"));
  EXPECT_THAT(registry.Scrape(), HasSubstr("catserve_kv_bytes_capacity 17179869184\n"));
}

TEST(ServingMetricsTest, StepHistogramsUseTheirBuckets) {
  Registry registry;
  std::unique_ptr<ServingMetrics> metrics = *ServingMetrics::Create(&registry, kBuild);
  metrics->step_tokens().Observe(300);
  metrics->step_batch_size().Observe(3);
  metrics->preemptions().Increment();
  const std::string text = registry.Scrape();
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_bucket{le=\"256\"} 0\n"
                              "catserve_step_tokens_bucket{le=\"512\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_tokens_bucket{le=\"16384\"} 1\n"
                              "catserve_step_tokens_bucket{le=\"+Inf\"} 1\n"
                              "catserve_step_tokens_sum 300\n"
                              "catserve_step_tokens_count 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_step_batch_size_bucket{le=\"4\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("catserve_preemptions_total 1\n"));
}

TEST(ServingMetricsTest, OutcomeLabels) {
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kStop), "stop");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kLength), "length");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kCancelled), "cancelled");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kDeadlineExceeded), "deadline_exceeded");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kError), "error");
  EXPECT_EQ(RequestOutcomeLabel(RequestOutcome::kRejected), "rejected");
}

}  // namespace
}  // namespace catserve::metrics
