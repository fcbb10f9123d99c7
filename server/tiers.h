// Named chunk sizes (--tiers): what a request's `tier` means.
#ifndef CATSERVE_SERVER_TIERS_H_
#define CATSERVE_SERVER_TIERS_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace catserve::server {

// A named chunk size, and the coarsest chunk size its requests accept under memory pressure.
struct Tier {
  int chunk_size = 0;
  int coarsest_chunk_size = 0;  // >= chunk_size; equal: never coarser
  bool operator==(const Tier&) const = default;
};

// Parses --tiers: "name=size,name=size:coarsest,..." (an empty string is no tiers): requests of a
// tier run at `size` and, under memory pressure, may be switched up to `coarsest` (none coarser
// when absent). Names are [A-Za-z0-9_-]+ and unique; sizes are positive integers, coarsest >=
// size. INVALID_ARGUMENT otherwise, naming the bad entry.
absl::StatusOr<std::map<std::string, Tier>> ParseTiers(absl::string_view text);
// The inverse of ParseTiers: "balanced=8:16,quality=2,throughput=16".
std::string FormatTiers(const std::map<std::string, Tier>& tiers);
// One tier's sizes: "8", or "8:16" when it accepts a coarser one.
std::string FormatTier(const Tier& tier);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_TIERS_H_
