// SIGTERM and SIGINT, received synchronously: no signal handler runs, so nothing async-unsafe
// can happen in one.
#ifndef CATSERVE_SERVER_TERMINATION_SIGNALS_H_
#define CATSERVE_SERVER_TERMINATION_SIGNALS_H_

#include "absl/time/time.h"

namespace catserve::server {

// Blocks SIGTERM and SIGINT in the calling thread and so in every thread it starts afterwards:
// call it first in main(), before any thread exists, so that the signals stay pending until
// WaitForTerminationSignal takes them.
void BlockTerminationSignals();

// Waits up to `timeout` for SIGTERM or SIGINT. Returns the signal's number, or 0 if none came.
int WaitForTerminationSignal(absl::Duration timeout);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_TERMINATION_SIGNALS_H_
