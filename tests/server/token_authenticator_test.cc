#include "server/token_authenticator.h"

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(ConstantTimeEqualsTest, EqualOnlyWhenSameBytesAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("secret-token", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-tokem", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-tok", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-tokenn", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("", "secret-token"));
  EXPECT_FALSE(ConstantTimeEquals("secret-token", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  // A guess that repeats the token is not the token.
  EXPECT_FALSE(ConstantTimeEquals("abab", "ab"));
}

class TokenAuthenticatorTest : public ::testing::Test {
 protected:
  void Write(const std::string& text) {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path_);
  }
  // One file per test: CTest runs the tests of this fixture in parallel processes.
  const std::string path_ = ::testing::TempDir() + "/catserve_tokens_" +
                            ::testing::UnitTest::GetInstance()->current_test_info()->name();
};

TEST_F(TokenAuthenticatorTest, ChecksBearerTokens) {
  Write("# comment\n  one-token  \n\ntwo-token\n");
  absl::StatusOr<std::unique_ptr<TokenAuthenticator>> auth = TokenAuthenticator::Load(path_);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Check("Bearer one-token").ok());
  EXPECT_TRUE((*auth)->Check("Bearer two-token").ok());
  EXPECT_EQ((*auth)->Check("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Check("one-token").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Check("Bearer # comment").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Check("Bearer three-token").code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(TokenAuthenticatorTest, ReloadsAChangedFile) {
  Write("first\n");
  std::unique_ptr<TokenAuthenticator> auth = *TokenAuthenticator::Load(path_, absl::ZeroDuration());
  EXPECT_TRUE(auth->Check("Bearer first").ok());
  Write("second-token\n");
  EXPECT_TRUE(auth->Check("Bearer second-token").ok());
  EXPECT_FALSE(auth->Check("Bearer first").ok());
}

// Revoking every token is emptying the file, leaving only comments, or deleting it: after each,
// no token passes; writing a token back restores access.
TEST_F(TokenAuthenticatorTest, EmptiedCommentedOrDeletedFileRevokesEveryToken) {
  Write("keep-me\n");
  std::unique_ptr<TokenAuthenticator> auth = *TokenAuthenticator::Load(path_, absl::ZeroDuration());
  const std::vector<std::pair<std::string, std::function<void()>>> revocations = {
      {"emptied", [&] { Write(""); }},
      {"comments only", [&] { Write("# revoked\n\n"); }},
      {"deleted", [&] { std::filesystem::remove(path_); }},
  };
  for (const auto& [name, revoke] : revocations) {
    SCOPED_TRACE(name);
    Write("keep-me\n");
    ASSERT_TRUE(auth->Check("Bearer keep-me").ok());
    revoke();
    const absl::Status refused = auth->Check("Bearer keep-me");
    EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_NE(refused.message().find("accepts no token now"), std::string::npos) << refused;
  }
  EXPECT_NE(auth->last_reload_error().find("cannot be read"), std::string::npos);
  Write("keep-me\n");
  EXPECT_TRUE(auth->Check("Bearer keep-me").ok());
  EXPECT_EQ(auth->last_reload_error(), "");
}

TEST_F(TokenAuthenticatorTest, TheSchemeIsCaseInsensitiveAndSpacesAroundTheTokenAreIgnored) {
  Write("tok\n");
  std::unique_ptr<TokenAuthenticator> auth = *TokenAuthenticator::Load(path_);
  for (const char* header :
       {"Bearer tok", "bearer tok", "BEARER tok", "Bearer   tok  ", " Bearer\ttok"}) {
    EXPECT_TRUE(auth->Check(header).ok()) << "'" << header << "'";
  }
  for (const char* header : {"Basic tok", "Bearertok", "Bearer", "Bearer to k"}) {
    EXPECT_EQ(auth->Check(header).code(), absl::StatusCode::kUnauthenticated)
        << "'" << header << "'";
  }
}

TEST_F(TokenAuthenticatorTest, MissingOrEmptyFileIsRefused) {
  EXPECT_EQ(TokenAuthenticator::Load(path_ + ".missing").status().code(),
            absl::StatusCode::kNotFound);
  Write("\n# none\n");
  EXPECT_EQ(TokenAuthenticator::Load(path_).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace catserve::server
