#ifndef CATSERVE_SERVER_METRICS_HISTOGRAM_H_
#define CATSERVE_SERVER_METRICS_HISTOGRAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// Returns OK iff `bounds` is a non-empty, strictly increasing list of finite upper bounds. The
// implicit +Inf bucket is always added and must not be listed.
absl::Status ValidateBucketBounds(absl::Span<const double> bounds);

// `count` bounds: start, start*factor, start*factor^2, ... (start > 0, factor > 1, count >= 1).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Counts observations in fixed buckets: one series of a histogram family.
//
// Thread-safe and lock-free: Observe() is a binary search over the bounds, one relaxed atomic add
// on the bucket and one on the sum. Bucket i counts observations v <= bounds[i] (and above the
// previous bound); the last bucket is +Inf and also takes NaN. A scrape that races with Observe()
// may see the sum and the counts of slightly different moments, as in every Prometheus client.
class Histogram {
 public:
  static constexpr MetricType kType = MetricType::kHistogram;

  // Requires ValidateBucketBounds(bounds).ok().
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }

  // Cumulative counts, one per bound plus the +Inf bucket (whose count is the total count).
  std::vector<uint64_t> CumulativeCounts() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

  // Appends `family_name`_bucket (one per bound and +Inf, cumulative, with an extra "le" label),
  // `family_name`_sum and `family_name`_count to `out`.
  void AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                     std::vector<Sample>* out) const;

 private:
  const std::vector<double> bounds_;
  // bounds_.size() + 1 non-cumulative counts; the last one is the +Inf bucket.
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_HISTOGRAM_H_
