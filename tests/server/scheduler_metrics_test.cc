// SchedulerMetrics: the scheduler's pressure decisions reach catserve_degrades_total{from,to} and
// catserve_preemptions_total one for one, and every degrade series reads 0 from the start.
#include "server/scheduler_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace catserve::server {
namespace {

using scheduler::PressureEvent;

std::string Scrape(const metrics::ServingMetrics& serving) {
  return prometheus::TextSerializer().Serialize(serving.Collect());
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST(SchedulerMetricsTest, PressureEventsCountExactly) {
  metrics::ServingMetrics serving({"0", "m", "cpu"});
  SchedulerMetrics bridge(&serving, {2, 8, 16});
  std::string text = Scrape(serving);
  for (const char* series :
       {"{from=\"2\",to=\"8\"}", "{from=\"2\",to=\"16\"}", "{from=\"8\",to=\"16\"}"}) {
    EXPECT_TRUE(Has(text, absl::StrCat("catserve_degrades_total", series, " 0"))) << series;
  }
  EXPECT_EQ(text.find("catserve_degrades_total{from=\"16\""), std::string::npos);
  EXPECT_TRUE(Has(text, "catserve_preemptions_total 0"));

  scheduler::StepReport report;
  report.pressure = {{PressureEvent::Kind::kDegrade, 1, 8, 16},
                     {PressureEvent::Kind::kPreempt, 2, 2, 2},
                     {PressureEvent::Kind::kDegrade, 3, 8, 16},
                     {PressureEvent::Kind::kDegrade, 4, 2, 8}};
  bridge.OnStep(report, {});
  report.pressure = {{PressureEvent::Kind::kPreempt, 1, 16, 16}};
  bridge.OnStep(report, {});
  report.pressure.clear();
  bridge.OnStep(report, {});
  text = Scrape(serving);
  EXPECT_TRUE(Has(text, "catserve_degrades_total{from=\"8\",to=\"16\"} 2")) << text;
  EXPECT_TRUE(Has(text, "catserve_degrades_total{from=\"2\",to=\"8\"} 1"));
  EXPECT_TRUE(Has(text, "catserve_degrades_total{from=\"2\",to=\"16\"} 0"));
  EXPECT_TRUE(Has(text, "catserve_preemptions_total 2"));
}

// Gateways read one series per name: the unlabelled totals equal the per-chunk-size series summed.
TEST(SchedulerMetricsTest, UnlabelledTotalsSumEveryChunkSize) {
  metrics::ServingMetrics serving({"0", "m", "cpu"});
  SchedulerMetrics bridge(&serving, {2, 8, 16});
  scheduler::SchedulerSnapshot snapshot;
  snapshot.running = {{2, 3}, {8, 5}, {16, 1}};
  snapshot.waiting = {{8, 4}, {16, 2}};
  bridge.Update(snapshot);
  const std::string text = Scrape(serving);
  EXPECT_TRUE(Has(text, "catserve_num_requests_running 9")) << text;
  EXPECT_TRUE(Has(text, "catserve_num_requests_waiting 6")) << text;
  EXPECT_TRUE(Has(text, "catserve_requests_running{chunk_size=\"8\"} 5")) << text;
  bridge.Update({});
  EXPECT_TRUE(Has(Scrape(serving), "catserve_num_requests_running 0"));
}

}  // namespace
}  // namespace catserve::server
