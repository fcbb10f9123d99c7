#ifndef CATSERVE_SERVER_METRICS_CALLBACK_GAUGE_H_
#define CATSERVE_SERVER_METRICS_CALLBACK_GAUGE_H_

#include <functional>
#include <string>
#include <vector>

#include "server/metrics/collector.h"

namespace catserve::metrics {

// An unlabelled gauge whose value is computed by a callback at every scrape, for values that
// live elsewhere (a ratio of two gauges, a queue length owned by another object).
//
// Created by Registry::AddCallbackGauge. The callback runs on the scraping thread while the
// registry is being collected: it must be thread-safe, quick, and must not touch the registry.
class CallbackGauge final : public Collector {
 public:
  CallbackGauge(std::string name, std::string help, std::function<double()> callback);

  std::vector<std::string> FamilyNames() const override { return {name_}; }
  void Collect(std::vector<MetricFamilySnapshot>* out) const override;

 private:
  const std::string name_;
  const std::string help_;
  const std::function<double()> callback_;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_CALLBACK_GAUGE_H_
