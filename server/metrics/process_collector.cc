#include "server/metrics/process_collector.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace catserve::metrics {
namespace {

constexpr char kCpuSeconds[] = "process_cpu_seconds_total";
constexpr char kResidentMemory[] = "process_resident_memory_bytes";
constexpr char kVirtualMemory[] = "process_virtual_memory_bytes";
constexpr char kOpenFds[] = "process_open_fds";
constexpr char kMaxFds[] = "process_max_fds";
constexpr char kStartTime[] = "process_start_time_seconds";

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return std::nullopt;
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// The fields of /proc/[pid]/stat we use, already in seconds and bytes.
struct ProcStat {
  double cpu_seconds = 0;
  double start_ticks = 0;
  double virtual_bytes = 0;
  double resident_bytes = 0;
};

std::optional<ProcStat> ParseProcStat(absl::string_view text) {
  // Field 2 (comm) is parenthesised and may hold spaces or ')': fields resume after the last ')'.
  const size_t close = text.rfind(')');
  if (close == absl::string_view::npos) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(text.substr(close + 1), ' ', absl::SkipWhitespace());
  // fields[0] is field 3 (state); field N is fields[N - 3].
  auto field = [&](int n, double* value) {
    const size_t index = n - 3;
    return index < fields.size() && absl::SimpleAtod(fields[index], value);
  };
  double utime = 0, stime = 0, pages = 0;
  ProcStat stat;
  if (!field(14, &utime) || !field(15, &stime) || !field(22, &stat.start_ticks) ||
      !field(23, &stat.virtual_bytes) || !field(24, &pages)) {
    return std::nullopt;
  }
  const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
  stat.cpu_seconds = (utime + stime) / ticks_per_second;
  stat.start_ticks /= ticks_per_second;  // now seconds after boot
  stat.resident_bytes = pages * static_cast<double>(sysconf(_SC_PAGESIZE));
  return stat;
}

std::optional<double> ParseBootTime(absl::string_view proc_stat) {
  for (absl::string_view line : absl::StrSplit(proc_stat, '\n')) {
    if (absl::ConsumePrefix(&line, "btime ")) {
      double seconds = 0;
      if (absl::SimpleAtod(absl::StripAsciiWhitespace(line), &seconds)) return seconds;
    }
  }
  return std::nullopt;
}

std::optional<double> ParseMaxOpenFiles(absl::string_view limits) {
  for (absl::string_view line : absl::StrSplit(limits, '\n')) {
    if (absl::ConsumePrefix(&line, "Max open files")) {
      std::vector<absl::string_view> values = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (values.empty()) return std::nullopt;
      if (values[0] == "unlimited") return std::numeric_limits<double>::infinity();
      double soft_limit = 0;
      if (absl::SimpleAtod(values[0], &soft_limit)) return soft_limit;
    }
  }
  return std::nullopt;
}

std::optional<double> CountOpenFds(const std::string& fd_dir) {
  std::error_code error;
  std::filesystem::directory_iterator it(fd_dir, error);
  if (error) return std::nullopt;
  double count = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
    if (error) return std::nullopt;
    ++count;
  }
  return count;
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                std::optional<double> value) {
  prometheus::MetricFamily family{name, help, type, {}};
  if (value.has_value()) {
    prometheus::ClientMetric sample;
    if (type == prometheus::MetricType::Counter) {
      sample.counter.value = *value;
    } else {
      sample.gauge.value = *value;
    }
    family.metric.push_back(std::move(sample));
  }
  return family;
}

}  // namespace

ProcessCollector::ProcessCollector(std::string proc_root) : proc_root_(std::move(proc_root)) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::optional<ProcStat> stat;
  if (std::optional<std::string> text = ReadFile(proc_root_ + "/self/stat")) {
    stat = ParseProcStat(*text);
  }
  std::optional<double> boot_time;
  if (std::optional<std::string> text = ReadFile(proc_root_ + "/stat")) {
    boot_time = ParseBootTime(*text);
  }
  std::optional<double> max_fds;
  if (std::optional<std::string> text = ReadFile(proc_root_ + "/self/limits")) {
    max_fds = ParseMaxOpenFiles(*text);
  }
  std::optional<double> start_time;
  if (stat.has_value() && boot_time.has_value()) start_time = *boot_time + stat->start_ticks;

  auto from_stat = [&](double ProcStat::*field) -> std::optional<double> {
    if (!stat.has_value()) return std::nullopt;
    return (*stat).*field;
  };
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  out.push_back(Family(kCpuSeconds, "Total user and system CPU time spent in seconds.",
                       MetricType::Counter, from_stat(&ProcStat::cpu_seconds)));
  out.push_back(Family(kResidentMemory, "Resident memory size in bytes.", MetricType::Gauge,
                       from_stat(&ProcStat::resident_bytes)));
  out.push_back(Family(kVirtualMemory, "Virtual memory size in bytes.", MetricType::Gauge,
                       from_stat(&ProcStat::virtual_bytes)));
  out.push_back(Family(kOpenFds, "Number of open file descriptors.", MetricType::Gauge,
                       CountOpenFds(proc_root_ + "/self/fd")));
  out.push_back(
      Family(kMaxFds, "Maximum number of open file descriptors.", MetricType::Gauge, max_fds));
  out.push_back(Family(kStartTime, "Start time of the process since unix epoch in seconds.",
                       MetricType::Gauge, start_time));
  return out;
}

}  // namespace catserve::metrics
