#ifndef CATSERVE_SERVER_METRICS_FAMILY_H_
#define CATSERVE_SERVER_METRICS_FAMILY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "server/metrics/collector.h"
#include "server/metrics/counter.h"
#include "server/metrics/gauge.h"
#include "server/metrics/histogram.h"

namespace catserve::metrics {

// A named metric with fixed label names, holding one series (a `Metric`: Counter, Gauge or
// Histogram) per distinct tuple of label values.
//
// Families are created and owned by a Registry (see Registry::AddCounter and friends). Series are
// created on first use by WithLabels() and never removed, so the returned reference is stable for
// the life of the Registry: callers look a series up once and cache it, and the hot path is then
// the metric's own lock-free update. WithLabels() itself takes a mutex and may allocate.
//
// Collect() exposes series sorted by their label values (byte-wise, value by value).
template <typename Metric>
class Family final : public Collector {
 public:
  // Use Registry::Add*; `label_names` are assumed valid.
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::function<std::unique_ptr<Metric>()> make_metric)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        make_metric_(std::move(make_metric)) {}

  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Returns the series for `label_values`, creating it (at zero) on first use. Any string is a
  // valid label value. Requires label_values.size() == label_names().size(): a mismatch is a
  // programming error and aborts.
  Metric& WithLabels(absl::Span<const absl::string_view> label_values) {
    ABSL_RAW_CHECK(label_values.size() == label_names_.size(),
                   "Family::WithLabels: wrong number of label values");
    std::vector<std::string> key(label_values.begin(), label_values.end());
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Metric>& metric = series_[std::move(key)];
    if (metric == nullptr) metric = make_metric_();
    return *metric;
  }

  std::vector<std::string> FamilyNames() const override { return {name_}; }

  std::vector<std::string> SampleNames() const override {
    if (Metric::kType != MetricType::kHistogram) return {name_};
    return {name_, absl::StrCat(name_, "_bucket"), absl::StrCat(name_, "_sum"),
            absl::StrCat(name_, "_count")};
  }

  void Collect(std::vector<MetricFamilySnapshot>* out) const override {
    MetricFamilySnapshot snapshot{name_, help_, Metric::kType, {}};
    absl::MutexLock lock(&mu_);
    for (const auto& [label_values, metric] : series_) {
      LabelPairs labels;
      labels.reserve(label_names_.size());
      for (size_t i = 0; i < label_names_.size(); ++i) {
        labels.emplace_back(label_names_[i], label_values[i]);
      }
      metric->AppendSamples(name_, labels, &snapshot.samples);
    }
    out->push_back(std::move(snapshot));
  }

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Metric>()> make_metric_;

  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> series_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_FAMILY_H_
