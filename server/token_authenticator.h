// TokenAuthenticator: bearer tokens from a file, checked on every call of catserve.v1.Generation.
#ifndef CATSERVE_SERVER_TOKEN_AUTHENTICATOR_H_
#define CATSERVE_SERVER_TOKEN_AUTHENTICATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace catserve::server {

// The tokens of `--auth_tokens_file`: one per line; blank lines and lines starting with '#' are
// ignored, surrounding whitespace is trimmed. A call passes when its `authorization` metadata is
// "Bearer <token>" for one of them; the comparison takes the same time whichever token, if any,
// matches and wherever a guess first differs.
//
// The scheme is matched without regard to case ("bearer" passes) and spaces around the token are
// ignored.
//
// The file is read again when its modification time or size changes, looked at no more than once
// per `recheck` (a Kubernetes Secret update, or an operator's edit, applies without a restart).
// Emptying it (or leaving only comments) revokes every token; a file deleted or unreadable
// refuses every token too (it fails closed, and says why in last_reload_error()) until it can be
// read again. Each change is logged. At start, a file with no token is refused: a server that
// accepts nobody from its first second is a deployment mistake. Thread-safe.
class TokenAuthenticator {
 public:
  // NOT_FOUND naming the flag when the file cannot be read; INVALID_ARGUMENT when it holds no
  // token.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(
      const std::string& path, absl::Duration recheck = absl::Seconds(1));

  // OK, or UNAUTHENTICATED with a message that says what was missing (never what a token is).
  absl::Status Check(absl::string_view authorization_header);

  // Empty while the last reload (if any) succeeded.
  std::string last_reload_error() const;

 private:
  TokenAuthenticator(std::string path, absl::Duration recheck)
      : path_(std::move(path)), recheck_(recheck) {}
  // Re-reads the file if it changed since the last read and `recheck_` has passed.
  void MaybeReload() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const absl::Duration recheck_;
  mutable absl::Mutex mu_;
  std::vector<std::string> tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time next_check_ ABSL_GUARDED_BY(mu_);
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
  std::string last_reload_error_ ABSL_GUARDED_BY(mu_);
};

// True when `a` equals `b`, in a time that depends only on the lengths of the two.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_TOKEN_AUTHENTICATOR_H_
