#include "engine/attention_kernels.h"

#include <bit>

#include "engine/kv_dtype.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define CATSERVE_AVX2_KERNELS 1
#endif

namespace catserve::engine {
namespace {

// Written once, inlined into each target's wrappers so that every set vectorises for its target.
// Eight independent partial sums let a vector register hold the dot product (one running sum
// would serialise every add).
[[gnu::always_inline]] inline void ScoresBody(const float* q, const float* k, int n, int hd,
                                              float scale, float* s) {
  for (int j = 0; j < n; ++j) {
    const float* kj = k + static_cast<size_t>(j) * hd;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
      for (int l = 0; l < 8; ++l) acc[l] += q[i + l] * kj[i + l];
    }
    float dot = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < hd; ++i) dot += q[i] * kj[i];
    s[j] = dot * scale;
  }
}

[[gnu::always_inline]] inline void AccumulateBody(float keep, const float* p, const float* v, int n,
                                                  int hd, float* acc) {
  for (int i = 0; i < hd; ++i) acc[i] *= keep;
  for (int j = 0; j < n; ++j) {
    const float pj = p[j];
    const float* vj = v + static_cast<size_t>(j) * hd;
    for (int i = 0; i < hd; ++i) acc[i] += pj * vj[i];
  }
}

[[gnu::always_inline]] inline void WidenBf16Body(const uint16_t* src, int n, float* dst) {
  for (int i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(static_cast<uint32_t>(src[i]) << 16);
}

void PortableScores(const float* q, const float* k, int n, int hd, float scale, float* s) {
  ScoresBody(q, k, n, hd, scale, s);
}
void PortableAccumulate(float keep, const float* p, const float* v, int n, int hd, float* acc) {
  AccumulateBody(keep, p, v, n, hd, acc);
}
void PortableWidenBf16(const uint16_t* src, int n, float* dst) { WidenBf16Body(src, n, dst); }
void PortableWidenFp16(const uint16_t* src, int n, float* dst) {
  for (int i = 0; i < n; ++i) dst[i] = Fp16ToFloat(src[i]);
}

#ifdef CATSERVE_AVX2_KERNELS
#define CATSERVE_AVX2 __attribute__((target("avx2,fma,f16c")))

CATSERVE_AVX2 void Avx2Scores(const float* q, const float* k, int n, int hd, float scale,
                              float* s) {
  ScoresBody(q, k, n, hd, scale, s);
}
CATSERVE_AVX2 void Avx2Accumulate(float keep, const float* p, const float* v, int n, int hd,
                                  float* acc) {
  AccumulateBody(keep, p, v, n, hd, acc);
}
CATSERVE_AVX2 void Avx2WidenBf16(const uint16_t* src, int n, float* dst) {
  WidenBf16Body(src, n, dst);
}
// GCC does not vectorise _Float16 -> float conversions with F16C alone, hence the intrinsic.
CATSERVE_AVX2 void Avx2WidenFp16(const uint16_t* src, int n, float* dst) {
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = Fp16ToFloat(src[i]);
}

bool CpuHasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
#endif

}  // namespace

const AttentionKernels& PortableAttentionKernels() {
  static constexpr AttentionKernels kPortable = {"portable", PortableScores, PortableAccumulate,
                                                 PortableWidenBf16, PortableWidenFp16};
  return kPortable;
}

const AttentionKernels* Avx2AttentionKernels() {
#ifdef CATSERVE_AVX2_KERNELS
  static constexpr AttentionKernels kAvx2 = {"avx2", Avx2Scores, Avx2Accumulate, Avx2WidenBf16,
                                             Avx2WidenFp16};
  static const bool available = CpuHasAvx2();
  return available ? &kAvx2 : nullptr;
#else
  return nullptr;
#endif
}

const AttentionKernels& BestAttentionKernels() {
  const AttentionKernels* avx2 = Avx2AttentionKernels();
  return avx2 != nullptr ? *avx2 : PortableAttentionKernels();
}

}  // namespace catserve::engine
