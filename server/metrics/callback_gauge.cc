#include "server/metrics/callback_gauge.h"

#include <utility>

namespace catserve::metrics {

CallbackGauge::CallbackGauge(std::string name, std::string help, std::function<double()> callback)
    : name_(std::move(name)), help_(std::move(help)), callback_(std::move(callback)) {}

void CallbackGauge::Collect(std::vector<MetricFamilySnapshot>* out) const {
  out->push_back(
      MetricFamilySnapshot{name_, help_, MetricType::kGauge, {Sample{name_, {}, callback_()}}});
}

}  // namespace catserve::metrics
