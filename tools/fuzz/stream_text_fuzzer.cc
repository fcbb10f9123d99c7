// Fuzzes the streaming text path of a Generate call (server/generate_stream.cc): every decoded
// piece goes through CoerceToUtf8 (server/utf8.cc) and then the StopStringMatcher
// (server/stop_string_matcher.cc). Properties:
//   - CoerceToUtf8 returns well-formed UTF-8 (checked by an independent validator here), leaves
//     well-formed text unchanged, and is idempotent;
//   - the matcher shows exactly the text fed, cut before the earliest stop string occurrence
//     (all of it when none occurs), and every text it returns is well-formed UTF-8.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "server/stop_string_matcher.h"
#include "server/utf8.h"
#include "tools/fuzz/fuzz_check.h"

namespace {

// Unicode's table 3-7 of well-formed UTF-8 byte sequences, written out independently of utf8.cc.
bool WellFormed(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = s[i];
    auto cont = [&](size_t k, unsigned char lo, unsigned char hi) {
      if (i + k >= s.size()) return false;
      const unsigned char c = s[i + k];
      return c >= lo && c <= hi;
    };
    size_t n;
    if (b <= 0x7F) {
      n = 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      if (!cont(1, 0x80, 0xBF)) return false;
      n = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      const unsigned char lo = b == 0xE0 ? 0xA0 : 0x80;
      const unsigned char hi = b == 0xED ? 0x9F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF)) return false;
      n = 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
      const unsigned char lo = b == 0xF0 ? 0x90 : 0x80;
      const unsigned char hi = b == 0xF4 ? 0x8F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF) || !cont(3, 0x80, 0xBF)) return false;
      n = 4;
    } else {
      return false;
    }
    i += n;
  }
  return true;
}

std::string Coerced(const std::string& raw) {
  const std::string out = catserve::server::CoerceToUtf8(raw);
  FUZZ_CHECK(WellFormed(out));
  FUZZ_CHECK(!WellFormed(raw) || out == raw);
  FUZZ_CHECK(catserve::server::CoerceToUtf8(out) == out);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  // Stop strings as the request parser passes them: non-empty, and well-formed (proto3 strings).
  std::vector<std::string> stops;
  for (int n = input.ConsumeIntegralInRange(0, 4); n > 0; --n) {
    std::string stop = Coerced(input.ConsumeRandomLengthString(24));
    if (!stop.empty()) stops.push_back(stop);
  }
  catserve::server::StopStringMatcher matcher(stops);
  std::string fed, shown;
  bool stopped = false;
  while (input.remaining_bytes() > 0 && !stopped) {
    const std::string piece = Coerced(input.ConsumeRandomLengthString(16));
    fed += piece;
    catserve::server::StopStringMatcher::Result result = matcher.Add(piece);
    FUZZ_CHECK(WellFormed(result.text));
    shown += result.text;
    stopped = result.stopped;
  }
  if (!stopped) {
    const std::string tail = matcher.Flush();
    FUZZ_CHECK(WellFormed(tail));
    shown += tail;
  }
  size_t first = std::string::npos;
  for (const std::string& stop : stops) first = std::min(first, fed.find(stop));
  FUZZ_CHECK(stopped == (first != std::string::npos));
  FUZZ_CHECK(shown == fed.substr(0, first));
  return 0;
}
