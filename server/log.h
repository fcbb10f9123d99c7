// Startup, shutdown and error lines of the daemon on stderr. Debian 12's Abseil (20220623) has
// no absl/log, so this is the one place that formats them.
#ifndef CATSERVE_SERVER_LOG_H_
#define CATSERVE_SERVER_LOG_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace catserve::server {

// Writes "catserve: <message>\n" to stderr in one call, so lines from different threads do not
// interleave. Tests and scripts parse some of these lines (see server/serving_daemon.h).
template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::string line = absl::StrCat("catserve: ", absl::StrFormat(format, args...), "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_LOG_H_
