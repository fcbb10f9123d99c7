#ifndef CATSERVE_SERVER_METRICS_COUNTER_H_
#define CATSERVE_SERVER_METRICS_COUNTER_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// A monotonically increasing value: one series of a counter family.
//
// Thread-safe and lock-free. Integer increments are a single relaxed atomic add and stay exact;
// fractional amounts go to a separate double accumulator. Instances are owned by their Family and
// live as long as the Registry; callers cache the pointer.
class Counter {
 public:
  static constexpr MetricType kType = MetricType::kCounter;

  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `n` (default 1).
  void Increment(uint64_t n = 1) { integral_.fetch_add(n, std::memory_order_relaxed); }

  // Adds `amount`. A counter never decreases: negative amounts and NaN are ignored.
  void Add(double amount);

  // The current total.
  double Value() const;

  // Appends this series' sample, named `family_name`, to `out`.
  void AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                     std::vector<Sample>* out) const;

 private:
  std::atomic<uint64_t> integral_{0};
  std::atomic<double> fractional_{0};
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_COUNTER_H_
