#ifndef CATSERVE_ENGINE_CUDA_CUDA_ENGINE_H_
#define CATSERVE_ENGINE_CUDA_CUDA_ENGINE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"
#include "engine/step/engine.h"

namespace catserve::engine {

// The CAT model on one GPU (device 0): the CPU engine's step (same StepPlan) with bf16 weights
// and bf16 compressed KV in device memory, fp32 activations and accumulation, cuBLAS GEMMs over
// the whole ragged step, the decoder's attention on the kernel each item's route names
// (engine/cuda/attention_routes.h: FlashInfer's paged decode, the tensor-core prefill or the
// split-KV kernel; EngineOptions::cuda_attention) and kernels of our own for the rest
// (engine/cuda/kernels.h). Its pools
// (CreateKvPool) live in cudaMalloc'ed memory; Step copies the logits back to the caller's host
// buffer. FAILED_PRECONDITION when no CUDA device is usable ("no CUDA device: ..."), or when the
// model's shapes exceed what the kernels take (head_dim <= 128, GQA group <= 8).
absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(const ModelConfig& config,
                                                         const ModelWeights& weights,
                                                         const EngineOptions& options = {});

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_CUDA_CUDA_ENGINE_H_
