#include "engine/attention_kernels.h"

#include <bit>
#include <cmath>
#include <cstddef>

#include "engine/kv_dtype.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define CATSERVE_AVX2_KERNELS 1
#endif

namespace catserve::engine {
namespace {

// Value i of a run stored as D, as fp32.
template <KvDtype D>
inline float LoadOne(const void* p, size_t i) {
  if constexpr (D == KvDtype::kFp32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (D == KvDtype::kBf16) {
    return std::bit_cast<float>(static_cast<uint32_t>(static_cast<const uint16_t*>(p)[i]) << 16);
  } else {
    return Fp16ToFloat(static_cast<const uint16_t*>(p)[i]);
  }
}

// Eight independent partial sums let the compiler keep a vector register busy; one running sum
// would serialise every add.
template <KvDtype D>
void PortableScores(const float* q, const void* k, int n, int hd, float scale, float* s) {
  for (int j = 0; j < n; ++j) {
    const size_t kj = static_cast<size_t>(j) * hd;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
      for (int l = 0; l < 8; ++l) acc[l] += q[i + l] * LoadOne<D>(k, kj + i + l);
    }
    float dot = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < hd; ++i) dot += q[i] * LoadOne<D>(k, kj + i);
    s[j] = dot * scale;
  }
}

float PortableExpSum(float* s, int n, float max) {
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    sum += s[j];
  }
  return sum;
}

template <KvDtype D>
void PortableAccumulate(float keep, const float* p, const void* v, int n, int hd, float* acc) {
  for (int i = 0; i < hd; ++i) acc[i] *= keep;
  for (int j = 0; j < n; ++j) {
    const float pj = p[j];
    const size_t vj = static_cast<size_t>(j) * hd;
    for (int i = 0; i < hd; ++i) acc[i] += pj * LoadOne<D>(v, vj + i);
  }
}

#ifdef CATSERVE_AVX2_KERNELS
// GCC vectorises the portable loops for AVX2 too (checked with target attributes), but leaves
// each dot product one dependency chain, reloads the accumulator for every value row, calls
// expf per score and converts fp16 one value at a time; these do four keys per pass, keep the
// accumulator in registers, use a vector exp and widen 16-bit values as they are loaded.
#define CATSERVE_AVX2 __attribute__((target("avx2,fma,f16c")))

// Values i..i+7 of a run stored as D, as fp32.
template <KvDtype D>
CATSERVE_AVX2 inline __m256 Load8(const void* p, size_t i) {
  if constexpr (D == KvDtype::kFp32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    if constexpr (D == KvDtype::kBf16) {
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(h);
    }
  }
}

CATSERVE_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

template <KvDtype D>
CATSERVE_AVX2 void Avx2Scores(const float* q, const void* k, int n, int hd, float scale, float* s) {
  const int vec = hd & ~7;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const size_t k0 = static_cast<size_t>(j) * hd, k1 = k0 + hd, k2 = k1 + hd, k3 = k2 + hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < vec; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      a0 = _mm256_fmadd_ps(qv, Load8<D>(k, k0 + i), a0);
      a1 = _mm256_fmadd_ps(qv, Load8<D>(k, k1 + i), a1);
      a2 = _mm256_fmadd_ps(qv, Load8<D>(k, k2 + i), a2);
      a3 = _mm256_fmadd_ps(qv, Load8<D>(k, k3 + i), a3);
    }
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    alignas(16) float dots[4];
    _mm_store_ps(dots, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    for (int i = vec; i < hd; ++i) {
      dots[0] += q[i] * LoadOne<D>(k, k0 + i);
      dots[1] += q[i] * LoadOne<D>(k, k1 + i);
      dots[2] += q[i] * LoadOne<D>(k, k2 + i);
      dots[3] += q[i] * LoadOne<D>(k, k3 + i);
    }
    for (int l = 0; l < 4; ++l) s[j + l] = dots[l] * scale;
  }
  for (; j < n; ++j) {
    const size_t kj = static_cast<size_t>(j) * hd;
    __m256 a = _mm256_setzero_ps();
    for (int i = 0; i < vec; i += 8) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), Load8<D>(k, kj + i), a);
    }
    float dot = HorizontalSum(a);
    for (int i = vec; i < hd; ++i) dot += q[i] * LoadOne<D>(k, kj + i);
    s[j] = dot * scale;
  }
}

// exp(x) for x <= 0: x = m ln2 + r with |r| <= ln2 / 2, exp(r) by Cephes' degree-6 polynomial,
// scaled by 2^m through the exponent bits; 0 below the smallest normal result.
CATSERVE_AVX2 inline __m256 Exp(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.33654f);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lowest);
  const __m256 m = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(m, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(m, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(m), _mm256_set1_epi32(127)), 23);
  const __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  return _mm256_andnot_ps(underflow, y);
}

CATSERVE_AVX2 float Avx2ExpSum(float* s, int n, float max) {
  const __m256 mv = _mm256_set1_ps(max);
  __m256 total = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
    _mm256_storeu_ps(s + j, e);
    total = _mm256_add_ps(total, e);
  }
  if (j < n) {
    alignas(32) float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int l = 0; l < n - j; ++l) tail[l] = s[j + l] - max;
    // Lanes past n hold exp(-inf) = 0 and add nothing.
    for (int l = n - j; l < 8; ++l) tail[l] = -INFINITY;
    const __m256 e = Exp(_mm256_load_ps(tail));
    _mm256_store_ps(tail, e);
    for (int l = 0; l < n - j; ++l) s[j + l] = tail[l];
    total = _mm256_add_ps(total, e);
  }
  return HorizontalSum(total);
}

template <KvDtype D>
CATSERVE_AVX2 void Avx2Accumulate(float keep, const float* p, const void* v, int n, int hd,
                                  float* acc) {
  const __m256 kv = _mm256_set1_ps(keep);
  int i = 0;
  for (; i + 32 <= hd; i += 32) {
    __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(acc + i), kv);
    __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 8), kv);
    __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 16), kv);
    __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(acc + i + 24), kv);
    for (int j = 0; j < n; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      const size_t vj = static_cast<size_t>(j) * hd + i;
      a0 = _mm256_fmadd_ps(pj, Load8<D>(v, vj), a0);
      a1 = _mm256_fmadd_ps(pj, Load8<D>(v, vj + 8), a1);
      a2 = _mm256_fmadd_ps(pj, Load8<D>(v, vj + 16), a2);
      a3 = _mm256_fmadd_ps(pj, Load8<D>(v, vj + 24), a3);
    }
    _mm256_storeu_ps(acc + i, a0);
    _mm256_storeu_ps(acc + i + 8, a1);
    _mm256_storeu_ps(acc + i + 16, a2);
    _mm256_storeu_ps(acc + i + 24, a3);
  }
  for (; i + 8 <= hd; i += 8) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + i), kv);
    for (int j = 0; j < n; ++j) {
      a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), Load8<D>(v, static_cast<size_t>(j) * hd + i), a);
    }
    _mm256_storeu_ps(acc + i, a);
  }
  for (; i < hd; ++i) {
    float a = acc[i] * keep;
    for (int j = 0; j < n; ++j) a += p[j] * LoadOne<D>(v, static_cast<size_t>(j) * hd + i);
    acc[i] = a;
  }
}

bool CpuHasAvx2() {
  __builtin_cpu_init();
  // F16C by cpuid: clang 14's __builtin_cpu_supports does not know "f16c".
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}
#endif

}  // namespace

const AttentionKernels& PortableAttentionKernels() {
  static constexpr AttentionKernels kPortable = {
      "portable",
      {PortableScores<KvDtype::kFp32>, PortableScores<KvDtype::kBf16>,
       PortableScores<KvDtype::kFp16>},
      PortableExpSum,
      {PortableAccumulate<KvDtype::kFp32>, PortableAccumulate<KvDtype::kBf16>,
       PortableAccumulate<KvDtype::kFp16>}};
  return kPortable;
}

const AttentionKernels* Avx2AttentionKernels() {
#ifdef CATSERVE_AVX2_KERNELS
  static constexpr AttentionKernels kAvx2 = {
      "avx2",
      {Avx2Scores<KvDtype::kFp32>, Avx2Scores<KvDtype::kBf16>, Avx2Scores<KvDtype::kFp16>},
      Avx2ExpSum,
      {Avx2Accumulate<KvDtype::kFp32>, Avx2Accumulate<KvDtype::kBf16>,
       Avx2Accumulate<KvDtype::kFp16>}};
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
