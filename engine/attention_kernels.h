#ifndef CATSERVE_ENGINE_ATTENTION_KERNELS_H_
#define CATSERVE_ENGINE_ATTENTION_KERNELS_H_

#include <cstdint>

namespace catserve::engine {

// The inner loops of the CPU decode attention over a run of n keys (or values) of head_dim floats
// each, contiguous (one page's slots). Two sets exist: portable C++ and the same C++ compiled for
// AVX2 + FMA + F16C (the compiler vectorises it; only the fp16 widening needs an intrinsic). The
// engine takes BestAttentionKernels(), chosen once from what the CPU reports.
struct AttentionKernels {
  const char* name;
  // s[j] = scale * dot(q, k[j * head_dim ...]) for j < n.
  void (*scores)(const float* q, const float* k, int n, int head_dim, float scale, float* s);
  // acc = acc * keep + sum_j p[j] * v[j * head_dim ...] over j < n.
  void (*accumulate)(float keep, const float* p, const float* v, int n, int head_dim, float* acc);
  // dst[i] = the value of the bf16 / fp16 pattern src[i], for i < n (exact).
  void (*widen_bf16)(const uint16_t* src, int n, float* dst);
  void (*widen_fp16)(const uint16_t* src, int n, float* dst);
};

const AttentionKernels& PortableAttentionKernels();
// The AVX2/FMA/F16C set, or nullptr when this CPU (or this build's target) lacks one of those.
const AttentionKernels* Avx2AttentionKernels();
// The AVX2 set when available, else the portable one.
const AttentionKernels& BestAttentionKernels();

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_ATTENTION_KERNELS_H_
