#ifndef CATSERVE_SERVER_METRICS_PROCESS_COLLECTOR_H_
#define CATSERVE_SERVER_METRICS_PROCESS_COLLECTOR_H_

#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace catserve::metrics {

// The standard Prometheus process metrics of the calling process, read from procfs at scrape:
//   process_cpu_seconds_total      counter  user + system CPU time (/proc/self/stat)
//   process_resident_memory_bytes  gauge    resident set size
//   process_virtual_memory_bytes   gauge    virtual memory size
//   process_open_fds               gauge    entries in /proc/self/fd
//   process_max_fds                gauge    soft limit "Max open files" (/proc/self/limits)
//   process_start_time_seconds     gauge    start time since the Unix epoch (with /proc/stat btime)
// A family whose source cannot be read is exposed with no sample rather than a made-up value.
class ProcessCollector final : public prometheus::Collectable {
 public:
  // `proc_root` is where procfs is mounted; tests point it at a fake tree.
  explicit ProcessCollector(std::string proc_root = "/proc");

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string proc_root_;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_PROCESS_COLLECTOR_H_
