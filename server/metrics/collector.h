#ifndef CATSERVE_SERVER_METRICS_COLLECTOR_H_
#define CATSERVE_SERVER_METRICS_COLLECTOR_H_

#include <string>
#include <vector>

#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// Something a Registry asks for metric families at every scrape.
//
// SampleNames() is fixed for the life of the collector: the registry uses it at registration to
// refuse collisions (a histogram "x" claims "x_bucket", "x_sum" and "x_count" as well as "x").
// Collect() must be safe to call from any thread, concurrently with the collector's own updates,
// and must not call back into the registry.
class Collector {
 public:
  virtual ~Collector() = default;

  // Names of the families this collector emits, in the order Collect() emits them.
  virtual std::vector<std::string> FamilyNames() const = 0;

  // Every sample name this collector can emit (family names plus any suffixed names).
  virtual std::vector<std::string> SampleNames() const { return FamilyNames(); }

  // Appends one snapshot per family to `out`.
  virtual void Collect(std::vector<MetricFamilySnapshot>* out) const = 0;
};

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_COLLECTOR_H_
