// FUZZ_CHECK: a property every input must keep. A broken one aborts, which libFuzzer reports as a
// crash with the input that broke it.
#ifndef CATSERVE_TOOLS_FUZZ_FUZZ_CHECK_H_
#define CATSERVE_TOOLS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

#endif  // CATSERVE_TOOLS_FUZZ_FUZZ_CHECK_H_
