#ifndef CATSERVE_ENGINE_ATTENTION_KERNELS_H_
#define CATSERVE_ENGINE_ATTENTION_KERNELS_H_

#include <cstdint>

#include "engine/kv_dtype.h"

namespace catserve::engine {

// The inner loops of the CPU decode attention over a run of n keys (or values) of head_dim floats
// each, contiguous (one page's slots), stored as fp32, bf16 or fp16. Two sets exist: portable C++,
// and AVX2 + FMA + F16C. The
// engine takes BestAttentionKernels(), chosen once from what the CPU reports. Both compute the same
// sums in the same order up to the rounding of fused multiply-adds and of exp (the AVX2 exp is a
// polynomial within 2 ulp of expf).
struct AttentionKernels {
  const char* name;
  // s[j] = scale * dot(q, k[j * head_dim ...]) for j < n, the keys stored as `dtype` (indexed by
  // KvDtype; 16-bit values are widened to fp32 as they are loaded).
  void (*scores[3])(const float* q, const void* k, int n, int head_dim, float scale, float* s);
  // s[j] = exp(s[j] - max) for j < n (s[j] <= max); returns their sum.
  float (*exp_sum)(float* s, int n, float max);
  // acc = acc * keep + sum_j p[j] * v[j * head_dim ...] over j < n, the values stored as `dtype`.
  void (*accumulate[3])(float keep, const float* p, const void* v, int n, int head_dim, float* acc);
};

const AttentionKernels& PortableAttentionKernels();
// The AVX2/FMA/F16C set, or nullptr when this CPU (or this build's target) lacks one of those.
const AttentionKernels* Avx2AttentionKernels();
// The AVX2 set when available, else the portable one.
const AttentionKernels& BestAttentionKernels();

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_ATTENTION_KERNELS_H_
