#ifndef CATSERVE_ENGINE_KERNELS_ATTENTION_KERNELS_H_
#define CATSERVE_ENGINE_KERNELS_ATTENTION_KERNELS_H_

#include <cstdint>

#include "engine/kv/kv_dtype.h"

namespace catserve::engine {

// The inner loops of the CPU decode attention over runs of n keys (or values) of head_dim floats
// each, contiguous (one page's slots), stored as fp32, bf16 or fp16. Two sets exist: portable C++,
// and AVX2 + FMA + F16C. The engine takes BestAttentionKernels(), chosen once from what the CPU
// reports. Both compute the same sums up to rounding: of fused multiply-adds, of exp (the AVX2 exp
// is a polynomial within 2 ulp of expf), and of where attend rescales (the portable set once per
// run, the AVX2 set once per piece of up to 64 keys of consecutive runs).

// n keys at k and their n values at v, each head_dim values contiguous (one page's slots of one kv
// head), stored as the kernels' dtype.
struct KvRun {
  const void* k;
  const void* v;
  int n;
};

struct AttentionKernels {
  const char* name;
  // s[j] = scale * dot(q, k[j * head_dim ...]) for j < n, the keys stored as `dtype` (indexed by
  // KvDtype; 16-bit values are widened to fp32 as they are loaded).
  void (*scores[3])(const float* q, const void* k, int n, int head_dim, float scale, float* s);
  // s[j] = exp(s[j] - max) for j < n (s[j] <= max); returns their sum.
  float (*exp_sum)(float* s, int n, float max);
  // acc = acc * keep + sum_j p[j] * v[j * head_dim ...] over j < n, the values stored as `dtype`.
  void (*accumulate[3])(float keep, const float* p, const void* v, int n, int head_dim, float* acc);
  // The online-softmax update over the keys and values of `num_runs` runs (page runs of one split,
  // in order) of the `group` query heads that share one kv head: q, m, sum and acc hold one query
  // after another (q and acc head_dim floats each). For each query g, over the runs' keys j, with
  // s_j = scale * dot(q_g, k_j) and M = max(m[g], max_j s_j),
  //   acc_g = acc_g * exp(m[g] - M) + sum_j exp(s_j - M) v_j,
  //   sum[g] = sum[g] * exp(m[g] - M) + sum_j exp(s_j - M),  m[g] = M
  // (exp(m[g] - M) = 0 while m[g] is -inf). The same three loops as above, fused: for head sizes
  // 32, 48, 64, 96 and 128 the AVX2 set keeps scores and accumulators in registers and loads and
  // widens each key and value once for up to 8 query heads of the group, across up to 64 keys of
  // consecutive runs at a time.
  void (*attend[3])(const float* q, int group, const KvRun* runs, int num_runs, int head_dim,
                    float scale, float* m, float* sum, float* acc);
};

const AttentionKernels& PortableAttentionKernels();
// The AVX2/FMA/F16C set, or nullptr when this CPU (or this build's target) lacks one of those.
const AttentionKernels* Avx2AttentionKernels();
// The AVX2 set when available, else the portable one.
const AttentionKernels& BestAttentionKernels();

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KERNELS_ATTENTION_KERNELS_H_
