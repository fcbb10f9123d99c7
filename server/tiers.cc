#include "server/tiers.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace catserve::server {
namespace {

bool IsTierName(absl::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::map<std::string, Tier>> ParseTiers(absl::string_view text) {
  std::map<std::string, Tier> tiers;
  if (absl::StripAsciiWhitespace(text).empty()) return tiers;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    std::vector<absl::string_view> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    Tier tier;
    bool ok = kv.size() == 2 && IsTierName(absl::StripAsciiWhitespace(kv[0]));
    if (ok) {
      std::vector<absl::string_view> range = absl::StrSplit(kv[1], absl::MaxSplits(':', 1));
      ok = absl::SimpleAtoi(range[0], &tier.chunk_size) && tier.chunk_size > 0;
      tier.coarsest_chunk_size = tier.chunk_size;
      if (ok && range.size() == 2) {
        ok = absl::SimpleAtoi(range[1], &tier.coarsest_chunk_size) &&
             tier.coarsest_chunk_size >= tier.chunk_size;
      }
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tiers: bad entry '", entry,
          "'; expected name=chunk_size or name=chunk_size:coarsest_chunk_size (coarsest >= "
          "chunk_size), e.g. --tiers=quality=2,balanced=8:16"));
    }
    std::string name(absl::StripAsciiWhitespace(kv[0]));
    if (!tiers.emplace(name, tier).second) {
      return absl::InvalidArgumentError(absl::StrCat("--tiers: tier '", name, "' given twice"));
    }
  }
  return tiers;
}

std::string FormatTier(const Tier& tier) {
  return tier.coarsest_chunk_size == tier.chunk_size
             ? absl::StrCat(tier.chunk_size)
             : absl::StrCat(tier.chunk_size, ":", tier.coarsest_chunk_size);
}

std::string FormatTiers(const std::map<std::string, Tier>& tiers) {
  return absl::StrJoin(tiers, ",", [](std::string* out, const auto& entry) {
    absl::StrAppend(out, entry.first, "=", FormatTier(entry.second));
  });
}

}  // namespace catserve::server
