#include "engine/cuda/device_sampler.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda/sampling_kernels.h"

namespace catserve::engine::cuda {

absl::StatusOr<std::vector<int32_t>> DeviceSampler::Sample(
    const float* logits, int rows, int vocab, absl::Span<const SamplingParams> params,
    absl::Span<const std::vector<int32_t>> contexts, absl::Span<const uint64_t> steps,
    cudaStream_t stream) {
  if (params.size() != static_cast<size_t>(rows) || contexts.size() != params.size() ||
      steps.size() != params.size() || vocab <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("device sampling of ", rows, " rows with ",
                                                   params.size(), " params, ", contexts.size(),
                                                   " contexts and ", steps.size(), " steps"));
  }
  std::vector<DeviceSamplingParams> meta(rows);
  std::vector<int32_t> context;
  for (int r = 0; r < rows; ++r) {
    const SamplingParams& p = params[r];
    if (absl::Status s = ValidateSamplingParams(p); !s.ok()) return s;
    meta[r] = {p.temperature,
               p.top_k,
               p.top_p,
               p.min_p,
               p.repetition_penalty,
               static_cast<int32_t>(context.size()),
               static_cast<int32_t>(context.size() + contexts[r].size()),
               p.seed,
               steps[r]};
    context.insert(context.end(), contexts[r].begin(), contexts[r].end());
  }
  std::vector<int32_t> tokens(rows);
  if (rows == 0) return tokens;
  if (context.empty()) context.push_back(0);  // a valid pointer; no row reads it
  if (absl::Status s = meta_.Upload(meta); !s.ok()) return s;
  if (absl::Status s = context_.Upload(context); !s.ok()) return s;
  if (absl::Status s = scratch_.Reserve(static_cast<size_t>(rows) * vocab * sizeof(float));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = tokens_.Reserve(rows * sizeof(int32_t)); !s.ok()) return s;
  if (absl::Status s = CudaStatus(
          SampleRows(logits, rows, vocab, meta_.as<DeviceSamplingParams>(), context_.as<int32_t>(),
                     scratch_.as<float>(), tokens_.as<int32_t>(), stream),
          "sampling");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = host_tokens_.Reserve(rows * sizeof(int32_t)); !s.ok()) return s;
  if (absl::Status s =
          CudaStatus(cudaMemcpyAsync(host_tokens_.as<int32_t>(), tokens_.data(),
                                     rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream),
                     "cudaMemcpyAsync (sampled tokens)");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CudaStatus(cudaStreamSynchronize(stream), "sampling"); !s.ok()) return s;
  std::copy_n(host_tokens_.as<int32_t>(), rows, tokens.begin());
  return tokens;
}

}  // namespace catserve::engine::cuda
