#ifndef CATSERVE_SERVER_METRICS_GAUGE_H_
#define CATSERVE_SERVER_METRICS_GAUGE_H_

#include <atomic>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// A value that goes up and down: one series of a gauge family.
//
// Thread-safe and lock-free (relaxed atomics). Instances are owned by their Family and live as
// long as the Registry; callers cache the pointer. For a value computed at scrape time, see
// CallbackGauge.
class Gauge {
 public:
  static constexpr MetricType kType = MetricType::kGauge;

  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Increment() { Add(1); }
  void Decrement() { Add(-1); }

  double Value() const { return value_.load(std::memory_order_relaxed); }

  // Appends this series' sample, named `family_name`, to `out`.
  void AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                     std::vector<Sample>* out) const;

 private:
  std::atomic<double> value_{0};
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_GAUGE_H_
