#include "server/metrics/registry.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/metrics/callback_gauge.h"
#include "server/metrics/histogram.h"
#include "server/metrics/metric_name.h"
#include "server/metrics/text_format.h"

namespace catserve::metrics {

absl::Status Registry::Validate(const Collector& collector,
                                absl::Span<const std::string> label_names,
                                bool is_histogram) const {
  for (const std::string& name : collector.FamilyNames()) {
    if (absl::Status status = ValidateMetricName(name); !status.ok()) return status;
  }
  absl::flat_hash_set<absl::string_view> seen_labels;
  for (const std::string& label : label_names) {
    if (absl::Status status = ValidateLabelName(label); !status.ok()) return status;
    if (is_histogram && label == "le") {
      return absl::InvalidArgumentError("label name \"le\" is reserved in histograms");
    }
    if (!seen_labels.insert(label).second) {
      return absl::InvalidArgumentError(absl::StrCat("label name \"", label, "\" given twice"));
    }
  }
  for (const std::string& name : collector.SampleNames()) {
    if (sample_names_.contains(name)) {
      return absl::AlreadyExistsError(absl::StrCat("metric name \"", name,
                                                   "\" is already registered (or exposed by a "
                                                   "registered histogram)"));
    }
  }
  return absl::OkStatus();
}

void Registry::AddLocked(std::unique_ptr<Collector> collector) {
  for (std::string& name : collector->SampleNames()) sample_names_.insert(std::move(name));
  collectors_.push_back(std::move(collector));
}

template <typename Metric>
absl::StatusOr<Family<Metric>*> Registry::AddFamily(
    absl::string_view name, absl::string_view help, std::vector<std::string> label_names,
    std::function<std::unique_ptr<Metric>()> make_metric) {
  auto family = std::make_unique<Family<Metric>>(std::string(name), std::string(help),
                                                 std::move(label_names), std::move(make_metric));
  absl::MutexLock lock(&mu_);
  if (absl::Status status =
          Validate(*family, family->label_names(), Metric::kType == MetricType::kHistogram);
      !status.ok()) {
    return status;
  }
  Family<Metric>* result = family.get();
  AddLocked(std::move(family));
  return result;
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(absl::string_view name, absl::string_view help,
                                                    std::vector<std::string> label_names) {
  return AddFamily<Counter>(name, help, std::move(label_names),
                            [] { return std::make_unique<Counter>(); });
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names) {
  return AddFamily<Gauge>(name, help, std::move(label_names),
                          [] { return std::make_unique<Gauge>(); });
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(absl::string_view name,
                                                        absl::string_view help,
                                                        std::vector<std::string> label_names,
                                                        std::vector<double> bounds) {
  if (absl::Status status = ValidateBucketBounds(bounds); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": ", status.message()));
  }
  return AddFamily<Histogram>(name, help, std::move(label_names), [bounds = std::move(bounds)] {
    return std::make_unique<Histogram>(bounds);
  });
}

absl::Status Registry::AddCallbackGauge(absl::string_view name, absl::string_view help,
                                        std::function<double()> callback) {
  return AddCollector(
      std::make_unique<CallbackGauge>(std::string(name), std::string(help), std::move(callback)));
}

absl::Status Registry::AddCollector(std::unique_ptr<Collector> collector) {
  absl::MutexLock lock(&mu_);
  if (absl::Status status = Validate(*collector, {}, /*is_histogram=*/false); !status.ok()) {
    return status;
  }
  AddLocked(std::move(collector));
  return absl::OkStatus();
}

std::vector<MetricFamilySnapshot> Registry::Collect() const {
  std::vector<MetricFamilySnapshot> families;
  absl::ReaderMutexLock lock(&mu_);
  for (const std::unique_ptr<Collector>& collector : collectors_) collector->Collect(&families);
  return families;
}

std::string Registry::Scrape() const { return WriteTextFormat(Collect()); }

}  // namespace catserve::metrics
