#include "server/metrics/counter.h"

#include <string>

namespace catserve::metrics {

void Counter::Add(double amount) {
  if (!(amount > 0)) return;
  fractional_.fetch_add(amount, std::memory_order_relaxed);
}

double Counter::Value() const {
  return static_cast<double>(integral_.load(std::memory_order_relaxed)) +
         fractional_.load(std::memory_order_relaxed);
}

void Counter::AppendSamples(absl::string_view family_name, const LabelPairs& labels,
                            std::vector<Sample>* out) const {
  out->push_back(Sample{std::string(family_name), labels, Value()});
}

}  // namespace catserve::metrics
