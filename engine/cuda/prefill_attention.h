// The decoder's paged attention for items with many rows (prefill), on tensor cores.
#ifndef CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
#define CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_

#include <cuda_runtime_api.h>

namespace catserve::engine::cuda {}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_PREFILL_ATTENTION_H_
