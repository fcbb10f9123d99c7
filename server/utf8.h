// UTF-8 validity at the API boundary: proto3 `string` fields must hold well-formed UTF-8, or
// clients fail to parse the message.
#ifndef CATSERVE_SERVER_UTF8_H_
#define CATSERVE_SERVER_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace catserve::server {

// Returns `text` with each maximal ill-formed subsequence replaced by U+FFFD (the Unicode
// "substitution of maximal subparts" practice); well-formed text comes back unchanged.
// Well-formed means Unicode's table 3-7: no overlong forms, no surrogates, nothing past
// U+10FFFF.
std::string CoerceToUtf8(absl::string_view text);

// `text` itself when it has at most `max_bytes` bytes, else its first whole characters within
// `max_bytes` followed by "... (N bytes)", as valid UTF-8 with control characters written as
// \xNN: how an error message quotes what a client sent.
std::string Excerpt(absl::string_view text, size_t max_bytes = 64);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_UTF8_H_
