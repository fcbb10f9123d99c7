#ifndef CATSERVE_SERVER_METRICS_METRIC_NAME_H_
#define CATSERVE_SERVER_METRICS_METRIC_NAME_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace catserve::metrics {

// Returns OK iff `name` is a valid Prometheus metric name: [a-zA-Z_:][a-zA-Z0-9_:]*.
absl::Status ValidateMetricName(absl::string_view name);

// Returns OK iff `name` is a valid Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]* and does not
// start with "__" (reserved for Prometheus' internal use).
absl::Status ValidateLabelName(absl::string_view name);

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_METRIC_NAME_H_
