// What the CUDA benchmarks share: a fatal check of CUDA calls, and the device's copy bandwidth,
// the memory ceiling every floor is measured against.
#ifndef CATSERVE_BENCHMARKS_CUDA_BENCH_COMMON_H_
#define CATSERVE_BENCHMARKS_CUDA_BENCH_COMMON_H_

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

// Exits with the call and CUDA's message when `expr` fails.
#define CHECK_CUDA(expr)                                                      \
  do {                                                                        \
    if (cudaError_t _e = (expr); _e != cudaSuccess) {                         \
      std::fprintf(stderr, "%s failed: %s\n", #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (false)

namespace catserve::bench {

// Device-to-device copy bandwidth in bytes/s over 1 GiB of random bytes (not a constant: the
// copy should see what real data costs), counting bytes read plus bytes written; the median of
// 10 timed copies after 3 untimed ones.
inline double MeasureCopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  std::vector<uint32_t> pattern((size_t{32} << 20) / sizeof(uint32_t));
  std::mt19937 rng(3);
  for (uint32_t& w : pattern) w = rng();
  const size_t piece = pattern.size() * sizeof(uint32_t);
  for (size_t at = 0; at < bytes; at += piece) {
    CHECK_CUDA(cudaMemcpy(static_cast<char*>(a) + at, pattern.data(), std::min(piece, bytes - at),
                          cudaMemcpyHostToDevice));
  }
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 13; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    CHECK_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i >= 3) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(a);
  cudaFree(b);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3);
}

}  // namespace catserve::bench

#endif  // CATSERVE_BENCHMARKS_CUDA_BENCH_COMMON_H_
