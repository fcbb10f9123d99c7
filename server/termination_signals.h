// SIGTERM and SIGINT as events the main thread waits for (the self-pipe pattern): the handler
// only writes the signal's number to a pipe, so nothing async-signal-unsafe runs in it, and it
// works whichever thread the kernel picks (libraries such as OpenBLAS start threads before main,
// so blocking the signals there would not cover every thread).
#ifndef CATSERVE_SERVER_TERMINATION_SIGNALS_H_
#define CATSERVE_SERVER_TERMINATION_SIGNALS_H_

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace catserve::server {

// Installs the handlers of SIGTERM and SIGINT. Call once, early in main().
absl::Status InstallTerminationSignals();

// Waits up to `timeout` for SIGTERM or SIGINT. Returns the signal's number, or 0 if none came.
// Each signal is returned once.
int WaitForTerminationSignal(absl::Duration timeout);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_TERMINATION_SIGNALS_H_
