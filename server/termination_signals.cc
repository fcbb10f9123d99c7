#include "server/termination_signals.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace catserve::server {
namespace {

// Process-wide by nature: a signal handler reaches nothing but globals. Lock-free atomics are
// safe to read in a handler.
std::atomic<int> pipe_read{-1};
std::atomic<int> pipe_write{-1};

void OnTerminationSignal(int signal) {
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(signal);
  // Non-blocking: with the pipe full, further signals are dropped, which is harmless.
  [[maybe_unused]] const ssize_t n = write(pipe_write.load(std::memory_order_relaxed), &byte, 1);
  errno = saved_errno;
}

}  // namespace

absl::Status InstallTerminationSignals() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  pipe_read = fds[0];
  pipe_write = fds[1];
  struct sigaction action {};
  action.sa_handler = OnTerminationSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signal : {SIGTERM, SIGINT}) {
    if (sigaction(signal, &action, nullptr) != 0) {
      return absl::InternalError(absl::StrCat("sigaction: ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

int WaitForTerminationSignal(absl::Duration timeout) {
  pollfd fd{pipe_read.load(), POLLIN, 0};
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  if (poll(&fd, 1, ms) <= 0) return 0;  // timeout, or EINTR: the caller waits again
  unsigned char byte = 0;
  return read(fd.fd, &byte, 1) == 1 ? byte : 0;
}

}  // namespace catserve::server
