#include "server/metrics/gauge.h"

#include <string>

namespace catserve::metrics {

void Gauge::AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                          std::vector<Sample>* out) const {
  out->push_back(Sample{std::string(family_name), labels, Value()});
}

}  // namespace catserve::metrics
