#ifndef CATSERVE_SERVER_METRICS_TEXT_FORMAT_H_
#define CATSERVE_SERVER_METRICS_TEXT_FORMAT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/metrics/snapshot.h"

namespace catserve::metrics {

// The Content-Type of WriteTextFormat's output.
inline constexpr char kTextFormatContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Formats a sample value or a bucket bound the way Prometheus reads and writes them: "NaN",
// "+Inf", "-Inf"; integers exactly representable in a double (|v| <= 2^53) without exponent or
// decimal point ("17179869184"); anything else in the shortest form that round-trips ("0.25",
// "1e-05", "1.5e+300").
std::string FormatValue(double value);

// Escapes a HELP text: backslash -> \\, newline -> \n.
std::string EscapeHelp(absl::string_view help);

// Escapes a label value: backslash -> \\, double quote -> \", newline -> \n.
std::string EscapeLabelValue(absl::string_view value);

// Writes `families` in the Prometheus text exposition format 0.0.4, in the given order: for each
// family "# HELP", "# TYPE" and then its samples, one per line, each line ending in "\n". Families
// without samples still get their HELP and TYPE lines.
std::string WriteTextFormat(absl::Span<const MetricFamilySnapshot> families);

}  // namespace catserve::metrics

#endif  // CATSERVE_SERVER_METRICS_TEXT_FORMAT_H_
