#ifndef CATSERVE_TESTS_CUDA_NO_DEVICE_H_
#define CATSERVE_TESTS_CUDA_NO_DEVICE_H_

// Every CUDA test skips, naming the driver's reason, where no device is usable.

#include <cuda_runtime_api.h>

#include <string>

#include "gtest/gtest.h"

namespace catserve::testing {

// Empty when a device is usable, else why not.
inline std::string NoCudaDeviceReason() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device (") + cudaGetErrorString(e) + ")";
  }
  return count == 0 ? "no CUDA device (none found)" : "";
}

}  // namespace catserve::testing

#define SKIP_WITHOUT_CUDA_DEVICE()                                                         \
  do {                                                                                     \
    if (const std::string why = ::catserve::testing::NoCudaDeviceReason(); !why.empty()) { \
      GTEST_SKIP() << why << ": the CUDA backend's tests need a GPU";                      \
    }                                                                                      \
  } while (false)

#endif  // CATSERVE_TESTS_CUDA_NO_DEVICE_H_
