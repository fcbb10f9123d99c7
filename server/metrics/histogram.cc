#include "server/metrics/histogram.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/metrics/text_format.h"

namespace catserve::metrics {

absl::Status ValidateBucketBounds(absl::Span<const double> bounds) {
  if (bounds.empty()) {
    return absl::InvalidArgumentError("histogram needs at least one bucket bound");
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram bucket bound ", FormatValue(bounds[i]),
                       " is not finite (the +Inf bucket is implicit)"));
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram bucket bounds must increase strictly: ", FormatValue(bounds[i - 1]),
          " is followed by ", FormatValue(bounds[i])));
    }
  }
  return absl::OkStatus();
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  bounds.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::Observe(double value) {
  // NaN compares false with every bound, so lower_bound would put it in the first bucket.
  const size_t bucket =
      std::isnan(value) ? bounds_.size()
                        : std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> cumulative(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i < cumulative.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    cumulative[i] = running;
  }
  return cumulative;
}

void Histogram::AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                              std::vector<Sample>* out) const {
  const std::vector<uint64_t> cumulative = CumulativeCounts();
  const std::string bucket_name = absl::StrCat(family_name, "_bucket");
  for (size_t i = 0; i < cumulative.size(); ++i) {
    LabelPairs bucket_labels = labels;
    bucket_labels.emplace_back("le", i < bounds_.size() ? FormatValue(bounds_[i]) : "+Inf");
    out->push_back(
        Sample{bucket_name, std::move(bucket_labels), static_cast<double>(cumulative[i])});
  }
  out->push_back(Sample{absl::StrCat(family_name, "_sum"), labels, Sum()});
  out->push_back(
      Sample{absl::StrCat(family_name, "_count"), labels, static_cast<double>(cumulative.back())});
}

}  // namespace catserve::metrics
