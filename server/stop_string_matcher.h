// StopStringMatcher: finds the first stop string in a stream of generated text pieces.
#ifndef CATSERVE_SERVER_STOP_STRING_MATCHER_H_
#define CATSERVE_SERVER_STOP_STRING_MATCHER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace catserve::server {

// Text is fed piece by piece; the matcher returns what may be shown now. A tail of the text that
// could still grow into a stop string is held back until it either completes one (generation
// stops and the stop string is never shown) or can no longer do so. With no stop strings every
// piece passes through unchanged. Given pieces of whole UTF-8 characters and valid UTF-8 stop
// strings, every returned text is whole UTF-8 characters.
//
// Not thread-safe; one matcher per stream.
class StopStringMatcher {
 public:
  // `stops` must not contain the empty string.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // text to show now
    bool stopped = false;  // a stop string completed; `text` ends right before it
  };
  // Adds the next piece. After a result with `stopped`, the matcher must not be used again.
  Result Add(absl::string_view piece);
  // Returns the held-back text at the end of the stream (no stop string can complete any more).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_STOP_STRING_MATCHER_H_
