#ifndef CATSERVE_ENGINE_CUDA_SAMPLING_KERNELS_H_
#define CATSERVE_ENGINE_CUDA_SAMPLING_KERNELS_H_

// Sampling for a whole batch on the device, one block per logits row: the repetition penalty,
// then greedy (temperature 0: argmax, ties to the lowest id) or temperature, top-k, top-p and
// min-p, each as a probability threshold found by bisection (no sort), and a draw by inverse CDF
// in token order with the generator of engine/sampling/draw.h, keyed by (seed, step): the CPU
// sampler (engine/sampling/sampler.h) draws the same way, so both pick the same token from the
// same logits except where the draw lands within float rounding of a boundary, and for ties at a
// top-k or top-p boundary, which the device keeps all of. Plain pointers and ints
// only: nvcc never sees Abseil.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace catserve::engine::cuda {

struct DeviceSamplingParams {
  float temperature;         // 0: greedy
  int32_t top_k;             // 0: off
  float top_p;               // 1: off
  float min_p;               // 0: off
  float repetition_penalty;  // 1: off
  int32_t context_begin;     // the row's context tokens: context[begin, end)
  int32_t context_end;
  uint64_t seed;
  uint64_t step;  // which draw of the sequence this is
};

// logits [rows, vocab]; scratch at least rows * vocab floats; tokens [rows].
cudaError_t SampleRows(const float* logits, int rows, int vocab, const DeviceSamplingParams* params,
                       const int32_t* context, float* scratch, int32_t* tokens,
                       cudaStream_t stream);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_SAMPLING_KERNELS_H_
