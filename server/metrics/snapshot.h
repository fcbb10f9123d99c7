#ifndef CATSERVE_SERVER_METRICS_SNAPSHOT_H_
#define CATSERVE_SERVER_METRICS_SNAPSHOT_H_

#include <string>
#include <utility>
#include <vector>

namespace catserve::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// Label name/value pairs of one sample, in the order they are exposed.
using LabelPairs = std::vector<std::pair<std::string, std::string>>;

// One line of the exposition: a full sample name (e.g. "x_bucket"), its labels and its value.
struct Sample {
  std::string name;
  LabelPairs labels;
  double value = 0;
};

// A point-in-time copy of one metric family, ready to be written in the text format. Samples are
// already in exposition order.
struct MetricFamilySnapshot {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;
  std::vector<Sample> samples;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_SNAPSHOT_H_
