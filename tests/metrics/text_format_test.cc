#include "server/metrics/text_format.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "server/metrics/registry.h"

namespace catserve::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(FormatValueTest, SpecialValues) {
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(kInf), "+Inf");
  EXPECT_EQ(FormatValue(-kInf), "-Inf");
}

TEST(FormatValueTest, IntegersHaveNoExponentOrPoint) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(1), "1");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(1000000), "1000000");
  EXPECT_EQ(FormatValue(17179869184.0), "17179869184");
  EXPECT_EQ(FormatValue(9007199254740992.0), "9007199254740992");
}

TEST(FormatValueTest, OtherValuesUseShortestRoundTrip) {
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(-2.5), "-2.5");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.5e-5), "1.5e-05");
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(std::stod(FormatValue(0.1 + 0.2)), 0.1 + 0.2);
}

TEST(EscapeTest, HelpEscapesBackslashAndNewlineOnly) {
  EXPECT_EQ(EscapeHelp("a\\b\nc\"d"), "a\\\\b\\nc\"d");
}

TEST(EscapeTest, LabelValueEscapesBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
}

TEST(TextFormatTest, CounterWithEscapedHelpAndLabels) {
  Registry registry;
  CounterFamily* family = *registry.AddCounter(
      "test_requests_total", "Requests \\ handled.\nSecond line.", {"method", "path"});
  family->WithLabels({"GET", "/a\"b\\c\nd"}).Increment(3);
  family->WithLabels({"", "x"}).Add(0.5);
  EXPECT_EQ(registry.Scrape(),
            "# HELP test_requests_total Requests \\\\ handled.\\nSecond line.\n"
            "# TYPE test_requests_total counter\n"
            "test_requests_total{method=\"\",path=\"x\"} 0.5\n"
            "test_requests_total{method=\"GET\",path=\"/a\\\"b\\\\c\\nd\"} 3\n");
}

TEST(TextFormatTest, GaugeSpecialFloatsAndUnlabelled) {
  Registry registry;
  GaugeFamily* values = *registry.AddGauge("test_value", "Values.", {"kind"});
  values->WithLabels({"nan"}).Set(std::nan(""));
  values->WithLabels({"pos_inf"}).Set(kInf);
  values->WithLabels({"neg_inf"}).Set(-kInf);
  values->WithLabels({"bytes"}).Set(17179869184.0);
  values->WithLabels({"big"}).Set(1e21);
  values->WithLabels({"small"}).Set(1.5e-5);
  values->WithLabels({"neg"}).Set(-2.5);
  GaugeFamily* plain = *registry.AddGauge("test_plain", "Unlabelled.");
  plain->WithLabels({}).Increment();
  plain->WithLabels({}).Increment();
  plain->WithLabels({}).Decrement();
  EXPECT_EQ(registry.Scrape(),
            "# HELP test_value Values.\n"
            "# TYPE test_value gauge\n"
            "test_value{kind=\"big\"} 1e+21\n"
            "test_value{kind=\"bytes\"} 17179869184\n"
            "test_value{kind=\"nan\"} NaN\n"
            "test_value{kind=\"neg\"} -2.5\n"
            "test_value{kind=\"neg_inf\"} -Inf\n"
            "test_value{kind=\"pos_inf\"} +Inf\n"
            "test_value{kind=\"small\"} 1.5e-05\n"
            "# HELP test_plain Unlabelled.\n"
            "# TYPE test_plain gauge\n"
            "test_plain 1\n");
}

TEST(TextFormatTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry registry;
  HistogramFamily* family =
      *registry.AddHistogram("test_latency_seconds", "Latency.", {"chunk_size"}, {0.125, 0.5, 1});
  Histogram& h = family->WithLabels({"8"});
  h.Observe(0.0625);
  h.Observe(0.125);  // a bound belongs to its own bucket (le = less or equal)
  h.Observe(0.25);
  h.Observe(2);
  family->WithLabels({"16"});
  EXPECT_EQ(registry.Scrape(),
            "# HELP test_latency_seconds Latency.\n"
            "# TYPE test_latency_seconds histogram\n"
            "test_latency_seconds_bucket{chunk_size=\"16\",le=\"0.125\"} 0\n"
            "test_latency_seconds_bucket{chunk_size=\"16\",le=\"0.5\"} 0\n"
            "test_latency_seconds_bucket{chunk_size=\"16\",le=\"1\"} 0\n"
            "test_latency_seconds_bucket{chunk_size=\"16\",le=\"+Inf\"} 0\n"
            "test_latency_seconds_sum{chunk_size=\"16\"} 0\n"
            "test_latency_seconds_count{chunk_size=\"16\"} 0\n"
            "test_latency_seconds_bucket{chunk_size=\"8\",le=\"0.125\"} 2\n"
            "test_latency_seconds_bucket{chunk_size=\"8\",le=\"0.5\"} 3\n"
            "test_latency_seconds_bucket{chunk_size=\"8\",le=\"1\"} 3\n"
            "test_latency_seconds_bucket{chunk_size=\"8\",le=\"+Inf\"} 4\n"
            "test_latency_seconds_sum{chunk_size=\"8\"} 2.4375\n"
            "test_latency_seconds_count{chunk_size=\"8\"} 4\n");
}

TEST(TextFormatTest, NanObservationGoesToInfBucket) {
  Registry registry;
  HistogramFamily* family = *registry.AddHistogram("test_h", "H.", {}, {1});
  family->WithLabels({}).Observe(std::nan(""));
  EXPECT_EQ(registry.Scrape(),
            "# HELP test_h H.\n"
            "# TYPE test_h histogram\n"
            "test_h_bucket{le=\"1\"} 0\n"
            "test_h_bucket{le=\"+Inf\"} 1\n"
            "test_h_sum NaN\n"
            "test_h_count 1\n");
}

TEST(TextFormatTest, FamiliesInRegistrationOrderEvenWithoutSeries) {
  Registry registry;
  ASSERT_TRUE(registry.AddGauge("zzz_first", "First.", {"a"}).ok());
  ASSERT_TRUE(registry.AddCounter("aaa_second_total", "Second.").ok());
  ASSERT_TRUE(registry.AddCallbackGauge("mmm_third", "Third.", [] { return 0.5; }).ok());
  EXPECT_EQ(registry.Scrape(),
            "# HELP zzz_first First.\n"
            "# TYPE zzz_first gauge\n"
            "# HELP aaa_second_total Second.\n"
            "# TYPE aaa_second_total counter\n"
            "# HELP mmm_third Third.\n"
            "# TYPE mmm_third gauge\n"
            "mmm_third 0.5\n");
}

}  // namespace
}  // namespace catserve::metrics
