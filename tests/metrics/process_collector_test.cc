#include "server/metrics/process_collector.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace catserve::metrics {
namespace {

std::map<std::string, double> Values(const ProcessCollector& collector) {
  std::map<std::string, double> values;
  for (const prometheus::MetricFamily& family : collector.Collect()) {
    for (const prometheus::ClientMetric& sample : family.metric) {
      values[family.name] = family.type == prometheus::MetricType::Counter ? sample.counter.value
                                                                           : sample.gauge.value;
    }
  }
  return values;
}

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(ProcessCollectorTest, ReadsAFakeProcTree) {
  const std::filesystem::path root = std::filesystem::path(::testing::TempDir()) / "fake_proc";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "self" / "fd");
  for (const char* fd : {"0", "1", "2"}) WriteFile(root / "self" / "fd" / fd, "");
  // The command name holds ") " to check parsing resumes after the last parenthesis.
  WriteFile(root / "self" / "stat",
            "1234 (cat) serve) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 150 0 0 20 0 4 0 500 "
            "104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n");
  WriteFile(root / "stat", "cpu  1 2 3\nbtime 1700000000\nprocesses 42\n");
  WriteFile(root / "self" / "limits",
            "Limit                     Soft Limit           Hard Limit           Units\n"
            "Max open files            1024                 524288               files\n");

  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const std::map<std::string, double> values = Values(ProcessCollector(root.string()));
  EXPECT_DOUBLE_EQ(values.at("process_cpu_seconds_total"), 400 / ticks);
  EXPECT_DOUBLE_EQ(values.at("process_start_time_seconds"), 1700000000 + 500 / ticks);
  EXPECT_EQ(values.at("process_virtual_memory_bytes"), 104857600);
  EXPECT_EQ(values.at("process_resident_memory_bytes"), 2560 * page);
  EXPECT_EQ(values.at("process_open_fds"), 3);
  EXPECT_EQ(values.at("process_max_fds"), 1024);
}

TEST(ProcessCollectorTest, MissingProcGivesFamiliesWithoutSamples) {
  ProcessCollector collector("/nonexistent/proc");
  const std::vector<prometheus::MetricFamily> families = collector.Collect();
  ASSERT_EQ(families.size(), 6u);
  for (const prometheus::MetricFamily& family : families) EXPECT_TRUE(family.metric.empty());
}

TEST(ProcessCollectorTest, RealProcessLooksSane) {
  const std::map<std::string, double> values = Values(ProcessCollector());
  EXPECT_GT(values.at("process_resident_memory_bytes"), 0);
  EXPECT_GE(values.at("process_virtual_memory_bytes"), values.at("process_resident_memory_bytes"));
  EXPECT_GE(values.at("process_open_fds"), 3);
  EXPECT_GE(values.at("process_max_fds"), values.at("process_open_fds"));
  EXPECT_GE(values.at("process_cpu_seconds_total"), 0);
  const double now = static_cast<double>(time(nullptr));
  EXPECT_LE(values.at("process_start_time_seconds"), now + 1);
  EXPECT_GT(values.at("process_start_time_seconds"), now - 24 * 3600);
}

TEST(ProcessCollectorTest, SerializesWithStandardNamesAndTypes) {
  const std::string text = prometheus::TextSerializer().Serialize(ProcessCollector().Collect());
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE process_max_fds gauge\n"), std::string::npos);
}

}  // namespace
}  // namespace catserve::metrics
