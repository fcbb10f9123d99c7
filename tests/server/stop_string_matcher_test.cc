#include "server/stop_string_matcher.h"

#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(StopStringMatcherTest, NoStopStringsPassEverythingThrough) {
  StopStringMatcher m({});
  EXPECT_EQ(m.Add("abc").text, "abc");
  EXPECT_FALSE(m.Add("def").stopped);
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, HoldsBackAPossibleStartAndReleasesIt) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Add("the E").text, "the ");
  EXPECT_EQ(m.Add("N").text, "");
  StopStringMatcher::Result r = m.Add("d of it");  // "ENd" is no stop
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "ENd of it");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, StopsAcrossPiecesAndDropsTheRest) {
  StopStringMatcher m({"\n\n", "STOP"});
  EXPECT_EQ(m.Add("one ST").text, "one ");
  StopStringMatcher::Result r = m.Add("OP two");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
}

TEST(StopStringMatcherTest, EarliestStopWins) {
  StopStringMatcher m({"cd", "b"});
  StopStringMatcher::Result r = m.Add("abcd");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "a");
}

TEST(StopStringMatcherTest, FlushReturnsHeldTextAtTheEnd) {
  StopStringMatcher m({"xyz"});
  EXPECT_EQ(m.Add("abcxy").text, "abc");
  EXPECT_EQ(m.Flush(), "xy");
}

TEST(StopStringMatcherTest, KeepsUtf8CharactersWhole) {
  StopStringMatcher m({"é!"});
  EXPECT_EQ(m.Add("café").text, "caf");
  StopStringMatcher::Result r = m.Add("?");
  EXPECT_EQ(r.text, "é?");
}

}  // namespace
}  // namespace catserve::server
