#include "server/utf8.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace catserve::server {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Length of the well-formed sequence at the start of `s`, or -(length of its maximal ill-formed
// prefix) (at least 1).
int SequenceLength(absl::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(0);
  if (b0 < 0x80) return 1;
  int length;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return -1;
  }
  for (int i = 1; i < length; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return -i;
    const unsigned char b = byte(i);
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -i;
  }
  return length;
}

}  // namespace

std::string CoerceToUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const int n = SequenceLength(text);
    if (n > 0) {
      out.append(text.data(), n);
      text.remove_prefix(n);
    } else {
      out.append(kReplacement);
      text.remove_prefix(-n);
    }
  }
  return out;
}

namespace {

// Control characters (C0 and DEL) as \xNN, so a quoted text cannot break a log line or a
// terminal; everything else, UTF-8 included, as it is.
std::string EscapeControls(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", byte);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string Excerpt(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return EscapeControls(CoerceToUtf8(text));
  size_t end = max_bytes;
  // Back off over continuation bytes (10xxxxxx) so that no character is cut.
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return absl::StrCat(EscapeControls(CoerceToUtf8(text.substr(0, end))), "... (", text.size(),
                      " bytes)");
}

}  // namespace catserve::server
