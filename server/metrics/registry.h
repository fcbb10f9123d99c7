#ifndef CATSERVE_SERVER_METRICS_REGISTRY_H_
#define CATSERVE_SERVER_METRICS_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics/collector.h"
#include "server/metrics/family.h"
#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// The set of metrics one /metrics endpoint exposes.
//
// Owns every family and collector registered on it; the pointers Add* return stay valid for the
// registry's life. Thread-safe: registration and scraping may happen concurrently from any
// threads. Families are exposed in registration order.
//
// Registration fails with InvalidArgumentError for an invalid metric or label name (or a
// histogram label named "le", or a label name given twice, or bad bucket bounds), and with
// AlreadyExistsError when any name the new family exposes (for a histogram "x": "x", "x_bucket",
// "x_sum", "x_count") is already exposed by a registered one.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  absl::StatusOr<CounterFamily*> AddCounter(absl::string_view name, absl::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(absl::string_view name, absl::string_view help,
                                        std::vector<std::string> label_names = {});
  // `bounds`: finite, strictly increasing upper bounds; +Inf is implicit.
  absl::StatusOr<HistogramFamily*> AddHistogram(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> bounds);

  // An unlabelled gauge computed by `callback` at every scrape (see CallbackGauge).
  absl::Status AddCallbackGauge(absl::string_view name, absl::string_view help,
                                std::function<double()> callback);

  // Registers a custom collector (e.g. a ProcessCollector), checking its names.
  absl::Status AddCollector(std::unique_ptr<Collector> collector);

  // Snapshots every family, in registration order.
  std::vector<MetricFamilySnapshot> Collect() const;

  // Collect() written in the text exposition format 0.0.4: the body of GET /metrics.
  std::string Scrape() const;

 private:
  absl::Status Validate(const Collector& collector, absl::Span<const std::string> label_names,
                        bool is_histogram) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void AddLocked(std::unique_ptr<Collector> collector) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  template <typename Metric>
  absl::StatusOr<Family<Metric>*> AddFamily(absl::string_view name, absl::string_view help,
                                            std::vector<std::string> label_names,
                                            std::function<std::unique_ptr<Metric>()> make_metric);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Collector>> collectors_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_REGISTRY_H_
