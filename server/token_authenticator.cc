#include "server/token_authenticator.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "server/log.h"

namespace catserve::server {
namespace {

struct FileState {
  int64_t mtime_ns = 0;
  int64_t size = -1;
};

absl::StatusOr<FileState> Stat(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) {
    return absl::NotFoundError(absl::StrCat("--auth_tokens_file=", path, " cannot be read"));
  }
  return FileState{static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec,
                   static_cast<int64_t>(info.st_size)};
}

absl::StatusOr<std::vector<std::string>> ReadTokens(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("--auth_tokens_file=", path, " cannot be read"));
  }
  std::stringstream text;
  text << file.rdbuf();
  std::vector<std::string> tokens;
  for (absl::string_view line : absl::StrSplit(text.str(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    tokens.emplace_back(line);
  }
  return tokens;
}

absl::Status NoTokenAtStart(const std::string& path) {
  return absl::InvalidArgumentError(
      absl::StrCat("--auth_tokens_file=", path,
                   " holds no token; write one token per line ('#' starts a comment)"));
}

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Walks the whole of `a` (the guess) whatever `b` is, so the time tells nothing of `b`'s bytes.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char other = b.empty() ? 0 : static_cast<unsigned char>(b[i % b.size()]);
    diff |= static_cast<unsigned char>(a[i]) ^ other;
  }
  return diff == 0;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(
    const std::string& path, absl::Duration recheck) {
  absl::StatusOr<FileState> state = Stat(path);
  if (!state.ok()) return state.status();
  absl::StatusOr<std::vector<std::string>> tokens = ReadTokens(path);
  if (!tokens.ok()) return tokens.status();
  if (tokens->empty()) return NoTokenAtStart(path);
  std::unique_ptr<TokenAuthenticator> auth(new TokenAuthenticator(path, recheck));
  absl::MutexLock lock(&auth->mu_);
  auth->tokens_ = *std::move(tokens);
  auth->mtime_ns_ = state->mtime_ns;
  auth->size_ = state->size;
  auth->next_check_ = absl::Now() + recheck;
  return auth;
}

void TokenAuthenticator::MaybeReload() {
  const absl::Time now = absl::Now();
  if (now < next_check_) return;
  next_check_ = now + recheck_;
  // Fails closed: a file that is gone or unreadable accepts no token, as an empty one does.
  absl::StatusOr<FileState> state = Stat(path_);
  absl::StatusOr<std::vector<std::string>> tokens =
      state.ok() ? ReadTokens(path_) : absl::StatusOr<std::vector<std::string>>(state.status());
  if (state.ok() && state->mtime_ns == mtime_ns_ && state->size == size_) return;
  if (!tokens.ok()) {
    if (last_reload_error_.empty() || !tokens_.empty()) {
      Log("auth: %s; every token is refused until it can be read", tokens.status().message());
    }
    tokens_.clear();
    mtime_ns_ = 0;
    size_ = -1;
    last_reload_error_ = std::string(tokens.status().message());
    return;
  }
  if (tokens->empty()) {
    Log("auth: --auth_tokens_file=%s holds no token now: every token is revoked", path_);
  } else {
    Log("auth: --auth_tokens_file=%s reloaded: %d token(s)", path_, tokens->size());
  }
  tokens_ = *std::move(tokens);
  mtime_ns_ = state->mtime_ns;
  size_ = state->size;
  last_reload_error_.clear();
}

absl::Status TokenAuthenticator::Check(absl::string_view authorization_header) {
  if (authorization_header.empty()) {
    return absl::UnauthenticatedError(
        "this server requires a token: send metadata 'authorization: Bearer <token>'");
  }
  // RFC 9110: the scheme is case-insensitive; spaces around the token are not part of it.
  absl::string_view header = absl::StripLeadingAsciiWhitespace(authorization_header);
  const size_t space = header.find_first_of(" \t");
  if (space == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(header.substr(0, space), "bearer")) {
    return absl::UnauthenticatedError("the 'authorization' metadata must be 'Bearer <token>'");
  }
  const absl::string_view token = absl::StripAsciiWhitespace(header.substr(space));
  absl::MutexLock lock(&mu_);
  MaybeReload();
  if (tokens_.empty()) {
    return absl::UnauthenticatedError(
        "this server accepts no token now: its token file holds none or cannot be read");
  }
  bool match = false;
  for (const std::string& known : tokens_) match |= ConstantTimeEquals(token, known);
  if (!match) return absl::UnauthenticatedError("the bearer token is not valid");
  return absl::OkStatus();
}

std::string TokenAuthenticator::last_reload_error() const {
  absl::MutexLock lock(&mu_);
  return last_reload_error_;
}

}  // namespace catserve::server
