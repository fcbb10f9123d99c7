#include "server/metrics/text_format.h"

#include <charconv>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace catserve::metrics {
namespace {

constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::trunc(value) && std::fabs(value) <= kMaxExactInteger) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buffer[32];
  const std::to_chars_result result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

namespace {

// Backslash and newline are escaped in HELP text and label values; double quotes only in label
// values (text format 0.0.4).
std::string Escape(absl::string_view text, bool quotes) {
  std::string escaped;
  escaped.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      escaped += "\\\\";
    } else if (c == '\n') {
      escaped += "\\n";
    } else if (c == '"' && quotes) {
      escaped += "\\\"";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

}  // namespace

std::string EscapeHelp(absl::string_view help) { return Escape(help, /*quotes=*/false); }

std::string EscapeLabelValue(absl::string_view value) { return Escape(value, /*quotes=*/true); }

std::string WriteTextFormat(absl::Span<const MetricFamilySnapshot> families) {
  std::string text;
  for (const MetricFamilySnapshot& family : families) {
    absl::StrAppend(&text, "# HELP ", family.name, " ", EscapeHelp(family.help), "\n");
    absl::StrAppend(&text, "# TYPE ", family.name, " ", TypeName(family.type), "\n");
    for (const Sample& sample : family.samples) {
      text += sample.name;
      if (!sample.labels.empty()) {
        text += '{';
        for (size_t i = 0; i < sample.labels.size(); ++i) {
          if (i > 0) text += ',';
          absl::StrAppend(&text, sample.labels[i].first, "=\"",
                          EscapeLabelValue(sample.labels[i].second), "\"");
        }
        text += '}';
      }
      absl::StrAppend(&text, " ", FormatValue(sample.value), "\n");
    }
  }
  return text;
}

}  // namespace catserve::metrics
