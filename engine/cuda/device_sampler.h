#ifndef CATSERVE_ENGINE_CUDA_DEVICE_SAMPLER_H_
#define CATSERVE_ENGINE_CUDA_DEVICE_SAMPLER_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cuda/device_buffer.h"
#include "engine/sampling/sampler.h"

namespace catserve::engine::cuda {

// The batch's next tokens drawn on the device from logits already there (sampling_kernels.h says
// how), so that only the tokens cross to the host. Reuses its buffers across calls; one thread
// at a time.
class DeviceSampler {
 public:
  // `logits` is a device pointer to [rows, vocab]; params, contexts (the tokens the repetition
  // penalty sees) and steps (the draw's index in its sequence, with the seed the generator's
  // key) have one entry per row. Validates the params (engine/sampler.h's ranges).
  absl::StatusOr<std::vector<int32_t>> Sample(const float* logits, int rows, int vocab,
                                              absl::Span<const SamplingParams> params,
                                              absl::Span<const std::vector<int32_t>> contexts,
                                              absl::Span<const uint64_t> steps,
                                              cudaStream_t stream);

 private:
  DeviceBuffer meta_, context_, scratch_, tokens_;
  PinnedBuffer host_tokens_;  // where the tokens land on the host
};

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_DEVICE_SAMPLER_H_
