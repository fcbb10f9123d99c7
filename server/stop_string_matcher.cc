#include "server/stop_string_matcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"

namespace catserve::server {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

StopStringMatcher::Result StopStringMatcher::Add(absl::string_view piece) {
  if (stops_.empty()) return {std::string(piece), false};
  held_.append(piece.data(), piece.size());
  const absl::string_view text = held_;
  size_t first = absl::string_view::npos;
  for (const std::string& stop : stops_) first = std::min(first, text.find(stop));
  if (first != absl::string_view::npos) {
    Result result{std::string(text.substr(0, first)), true};
    held_.clear();
    return result;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, text.size()); k > hold; --k) {
      if (absl::EndsWith(text, absl::string_view(stop).substr(0, k))) {
        hold = k;
        break;
      }
    }
  }
  Result result{std::string(text.substr(0, text.size() - hold)), false};
  held_.erase(0, held_.size() - hold);
  return result;
}

std::string StopStringMatcher::Flush() { return std::exchange(held_, std::string()); }

}  // namespace catserve::server
