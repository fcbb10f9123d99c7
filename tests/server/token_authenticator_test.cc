#include "server/token_authenticator.h"

#include <filesystem>
#include <fstream>

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
  const std::string path_ = ::testing::TempDir() + "/catserve_tokens";
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

TEST_F(TokenAuthenticatorTest, ReloadsAChangedFileAndKeepsTokensOfABrokenOne) {
  Write("first\n");
  std::unique_ptr<TokenAuthenticator> auth = *TokenAuthenticator::Load(path_, absl::ZeroDuration());
  EXPECT_TRUE(auth->Check("Bearer first").ok());
  Write("second-token\n");
  EXPECT_TRUE(auth->Check("Bearer second-token").ok());
  EXPECT_FALSE(auth->Check("Bearer first").ok());
  Write("# emptied by mistake\n");
  EXPECT_TRUE(auth->Check("Bearer second-token").ok());
  EXPECT_NE(auth->last_reload_error().find("holds no token"), std::string::npos);
}

TEST_F(TokenAuthenticatorTest, MissingOrEmptyFileIsRefused) {
  EXPECT_EQ(TokenAuthenticator::Load(path_ + ".missing").status().code(),
            absl::StatusCode::kNotFound);
  Write("\n# none\n");
  EXPECT_EQ(TokenAuthenticator::Load(path_).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace catserve::server
