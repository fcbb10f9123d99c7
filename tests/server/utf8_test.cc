#include "server/utf8.h"

#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(Utf8Test, WellFormedTextIsUnchanged) {
  for (const char* s :
       {"", "plain", "caf\xC3\xA9", "\xE2\x82\xAC 5", "\xF0\x9F\x98\x80!", "\xEF\xBF\xBD"}) {
    EXPECT_EQ(CoerceToUtf8(s), s);
  }
}

TEST(Utf8Test, IllFormedPartsBecomeReplacementCharacters) {
  // A split U+FFFD: two stray continuation bytes, then a whole one.
  EXPECT_EQ(CoerceToUtf8("\xBF\xBD\xEF\xBF\xBD;"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD;");
  // A truncated 3-byte sequence is one maximal subpart.
  EXPECT_EQ(CoerceToUtf8("a\xE2\x82"), "a\xEF\xBF\xBD");
  // Overlong, surrogate and past-U+10FFFF forms.
  EXPECT_EQ(CoerceToUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(CoerceToUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(CoerceToUtf8("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(ExcerptTest, ShortTextIsKept) {
  EXPECT_EQ(Excerpt("quality"), "quality");
  EXPECT_EQ(Excerpt(std::string(64, 'a')), std::string(64, 'a'));
}

TEST(ExcerptTest, ControlCharactersAreEscaped) {
  EXPECT_EQ(Excerpt(std::string("q\x01u\nal\x7f\x1b[31m")), "q\\x01u\\x0aal\\x7f\\x1b[31m");
  EXPECT_EQ(Excerpt("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 stays as it is
}

TEST(ExcerptTest, LongTextIsCutOnACharacterBoundaryWithItsSize) {
  EXPECT_EQ(Excerpt(std::string(100000, 'x'), 8), "xxxxxxxx... (100000 bytes)");
  // "é" is two bytes: a cut after 5 bytes would split the third one.
  EXPECT_EQ(Excerpt("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 5), "\xc3\xa9\xc3\xa9... (8 bytes)");
}

}  // namespace
}  // namespace catserve::server
