#include "engine/kernels/attention_kernels.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <utility>

#include "engine/kv/kv_dtype.h"

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

// One run's online-softmax update (AttentionKernels::attend) from a set's three loops, in pieces
// of at most kPiece keys.
template <auto Scores, auto ExpSum, auto Accumulate>
void ComposedAttend(const float* q, const void* k, const void* v, int n, int hd, int bytes,
                    float scale, float* m, float* sum, float* acc) {
  constexpr int kPiece = 64;
  float s[kPiece];
  for (int j0 = 0; j0 < n; j0 += kPiece) {
    const int count = std::min(kPiece, n - j0);
    const size_t at = static_cast<size_t>(j0) * hd * bytes;
    Scores(q, static_cast<const std::byte*>(k) + at, count, hd, scale, s);
    const float new_max = std::max(*m, *std::max_element(s, s + count));
    const float keep = std::exp(*m - new_max);  // 0 while m is -inf
    *sum = *sum * keep + ExpSum(s, count, new_max);
    Accumulate(keep, s, static_cast<const std::byte*>(v) + at, count, hd, acc);
    *m = new_max;
  }
}

template <KvDtype D>
void PortableAttend(const float* q, int group, const KvRun* runs, int num_runs, int hd, float scale,
                    float* m, float* sum, float* acc) {
  for (int r = 0; r < num_runs; ++r) {
    for (int g = 0; g < group; ++g) {
      ComposedAttend<PortableScores<D>, PortableExpSum, PortableAccumulate<D>>(
          q + static_cast<size_t>(g) * hd, runs[r].k, runs[r].v, runs[r].n, hd, KvDtypeBytes(D),
          scale, m + g, sum + g, acc + static_cast<size_t>(g) * hd);
    }
  }
}

#ifdef CATSERVE_AVX2_KERNELS
// GCC vectorises the portable loops for AVX2 too (checked with target attributes), but leaves
// each dot product one dependency chain, reloads the accumulator for every value row, calls
// expf per score and converts fp16 one value at a time; these score eight keys per pass on eight
// FMA chains, keep the accumulator in registers, use a vector exp and widen 16-bit values as they
// are loaded.
#define CATSERVE_AVX2 __attribute__((target("avx2,fma,f16c")))
// Before every loop over the registers of an array of vectors: unrolled early, the array's
// elements become registers. Left to later unrolling, GCC 12 keeps the array in memory as well
// and stores every accumulator on every key or value (fp32 measured 1.2-1.4x slower).
#define CATSERVE_UNROLL _Pragma("GCC unroll 16")

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

// Eight sums of the lanes of a0..a7: lane l of the result is the sum of a_l's lanes.
CATSERVE_AVX2 inline __m256 HorizontalSums8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4,
                                            __m256 a5, __m256 a6, __m256 a7) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Eight keys per pass, one accumulator each: eight independent FMA chains keep both FMA pipes
// busy (four chains would leave the latency of each FMA exposed).
template <KvDtype D>
CATSERVE_AVX2 void Avx2Scores(const float* q, const void* k, int n, int hd, float scale, float* s) {
  const int vec = hd & ~7;
  const __m256 sv = _mm256_set1_ps(scale);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const size_t k0 = static_cast<size_t>(j) * hd;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int i = 0; i < vec; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      const size_t at = k0 + i;
      a0 = _mm256_fmadd_ps(qv, Load8<D>(k, at), a0);
      a1 = _mm256_fmadd_ps(qv, Load8<D>(k, at + hd), a1);
      a2 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 2 * hd), a2);
      a3 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 3 * hd), a3);
      a4 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 4 * hd), a4);
      a5 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 5 * hd), a5);
      a6 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 6 * hd), a6);
      a7 = _mm256_fmadd_ps(qv, Load8<D>(k, at + 7 * hd), a7);
    }
    alignas(32) float dots[8];
    _mm256_store_ps(dots, HorizontalSums8(a0, a1, a2, a3, a4, a5, a6, a7));
    for (int i = vec; i < hd; ++i) {
      for (int l = 0; l < 8; ++l) dots[l] += q[i] * LoadOne<D>(k, k0 + l * hd + i);
    }
    _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_load_ps(dots), sv));
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

// Consecutive values of one run that the fused kernel takes in one piece: n values from v
// (and their keys from k), whose probabilities are at p[at ...].
struct Segment {
  const void* k;
  const void* v;
  int n;
  int at;
};

// acc_g[i..i+8*R) = acc_g * keep[g] + sum over the segments' values j of p_g[at + j] v[j][i..]
// for Gv queries g (p_g = p + g * p_stride, acc_g = acc + g * hd): Gv * R accumulators held in
// registers across all the values, Gv * R independent FMA chains, each value vector loaded once
// for all Gv queries.
template <KvDtype D, int Gv, int R>
CATSERVE_AVX2 inline void Avx2AccumulateBlock(const float* keep, const float* p, size_t p_stride,
                                              const Segment* segments, int num_segments, int hd,
                                              int i, float* acc) {
  __m256 a[Gv][R];
  CATSERVE_UNROLL
  for (int g = 0; g < Gv; ++g) {
    const __m256 kg = _mm256_set1_ps(keep[g]);
    CATSERVE_UNROLL
    for (int r = 0; r < R; ++r) {
      a[g][r] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + i + 8 * r), kg);
    }
  }
  for (int t = 0; t < num_segments; ++t) {
    const Segment& seg = segments[t];
    const float* pt = p + seg.at;
    for (int j = 0; j < seg.n; ++j) {
      const size_t vj = static_cast<size_t>(j) * hd + i;
      CATSERVE_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m256 value = Load8<D>(seg.v, vj + 8 * r);
        CATSERVE_UNROLL
        for (int g = 0; g < Gv; ++g) {
          a[g][r] = _mm256_fmadd_ps(_mm256_broadcast_ss(pt + g * p_stride + j), value, a[g][r]);
        }
      }
    }
  }
  CATSERVE_UNROLL
  for (int g = 0; g < Gv; ++g) {
    CATSERVE_UNROLL
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(acc + g * hd + i + 8 * r, a[g][r]);
  }
}

template <KvDtype D>
CATSERVE_AVX2 void Avx2Accumulate(float keep, const float* p, const void* v, int n, int hd,
                                  float* acc) {
  const Segment all = {nullptr, v, n, 0};
  int i = 0;
  for (; i + 64 <= hd; i += 64) Avx2AccumulateBlock<D, 1, 8>(&keep, p, 0, &all, 1, hd, i, acc);
  for (; i + 32 <= hd; i += 32) Avx2AccumulateBlock<D, 1, 4>(&keep, p, 0, &all, 1, hd, i, acc);
  for (; i + 8 <= hd; i += 8) Avx2AccumulateBlock<D, 1, 1>(&keep, p, 0, &all, 1, hd, i, acc);
  for (; i < hd; ++i) {
    float a = acc[i] * keep;
    for (int j = 0; j < n; ++j) a += p[j] * LoadOne<D>(v, static_cast<size_t>(j) * hd + i);
    acc[i] = a;
  }
}

CATSERVE_AVX2 inline float HorizontalMax(__m256 v) {
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// s[j] = exp(s[j] - max) over whole vectors of an aligned buffer whose lanes past the n scores
// hold -inf (exp gives 0: they add nothing); returns the sum.
CATSERVE_AVX2 inline float ExpInPlace(float* s, int n, float max) {
  const __m256 mv = _mm256_set1_ps(max);
  __m256 total = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_load_ps(s + j), mv));
    _mm256_store_ps(s + j, e);
    total = _mm256_add_ps(total, e);
  }
  return HorizontalSum(total);
}

// How the fused kernel below reads one dtype's keys and values for G query heads of one kv head
// (G = 1, 2, 4 or 8), with a head size HD known at compile time (a multiple of 16, at most 128:
// every loop over the head unrolls). Each key and value is loaded and widened once and used by
// all G queries.
//   Dots adds the products of the G queries with Kt = 8 / G keys into a[g * Kt + kk] (key kk at
//   value offset k0 + at[kk]): eight independent FMA chains, HD / 8 FMAs each.
//   Accumulate does acc_g = acc_g * keep[g] + sum_j p_g[j] v_j for each query g, over the values
//   of the piece's segments; p_g is p + g * p_stride and acc_g is acc + g * HD.
template <KvDtype D, int HD, int G>
struct WidenedRuns {
  static constexpr int Kt = 8 / G;
  explicit CATSERVE_AVX2 WidenedRuns(const float* queries) : q(queries) {}
  CATSERVE_AVX2 void Dots(const void* k, size_t k0, const size_t (&at)[Kt], __m256 (&a)[8]) const {
    CATSERVE_UNROLL
    for (int i = 0; i < HD; i += 8) {
      CATSERVE_UNROLL
      for (int kk = 0; kk < Kt; ++kk) {
        const __m256 key = Load8<D>(k, k0 + at[kk] + i);
        CATSERVE_UNROLL
        for (int g = 0; g < G; ++g) {
          a[g * Kt + kk] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * HD + i), key, a[g * Kt + kk]);
        }
      }
    }
  }
  static CATSERVE_AVX2 void Accumulate(const float* keep, const float* p, size_t p_stride,
                                       const Segment* segments, int num_segments, float* acc) {
    // Eight accumulators in registers: Gv queries at a time, R vectors of each.
    constexpr int Gv = std::min(G, 4), R = 8 / Gv;
    for (int g = 0; g < G; g += Gv) {
      // Blocks of up to 8 R values: with one query, 48 is one block of 6 and 96 one of 8 and
      // one of 4.
      [&]<int... B>(std::integer_sequence<int, B...>) {
        (Avx2AccumulateBlock<D, Gv, std::min(R, (HD - 8 * R * B) / 8)>(
             keep + g, p + g * p_stride, p_stride, segments, num_segments, HD, 8 * R * B,
             acc + g * HD),
         ...);
      }
      (std::make_integer_sequence<int, (HD + 8 * R - 1) / (8 * R)>());
    }
  }
  const float* q;
};

// bf16 holds the top half of an fp32, so two bf16 values in one 32-bit lane widen without a
// shuffle: the even one is the lane shifted left by 16, the odd one the lane with its low half
// cleared. Bf16PairRuns works on HD values as HD / 16 pairs of (even, odd) vectors and keeps q
// and the accumulator in that order; these convert 16 fp32 values to and from it.
// Returned by value, not through pointers: an accumulator array whose address is taken cannot
// live in registers alone (see CATSERVE_UNROLL).
struct EvenOdd {
  __m256 even, odd;
};

CATSERVE_AVX2 inline EvenOdd Deinterleave16(const float* x) {
  const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
  // shuffle_ps works within 128-bit lanes: [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit permute puts
  // the a pairs first.
  return {_mm256_castpd_ps(_mm256_permute4x64_pd(
              _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8)),
          _mm256_castpd_ps(_mm256_permute4x64_pd(
              _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8))};
}

CATSERVE_AVX2 inline void Interleave16(__m256 even, __m256 odd, float* x) {
  const __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
  _mm256_storeu_ps(x, _mm256_permute2f128_ps(lo, hi, 0x20));
  _mm256_storeu_ps(x + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

CATSERVE_AVX2 inline __m256 EvenBf16(__m256i pairs) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
}
CATSERVE_AVX2 inline __m256 OddBf16(__m256i pairs) {
  return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(-65536)));
}

template <int HD, int G>
struct Bf16PairRuns {
  static constexpr int kPairs = HD / 16, Kt = 8 / G;
  explicit CATSERVE_AVX2 Bf16PairRuns(const float* q) {
    CATSERVE_UNROLL
    for (int g = 0; g < G; ++g) {
      CATSERVE_UNROLL
      for (int c = 0; c < kPairs; ++c) {
        const EvenOdd pair = Deinterleave16(q + g * HD + 16 * c);
        _mm256_store_ps(qd + g * HD + 16 * c, pair.even);
        _mm256_store_ps(qd + g * HD + 16 * c + 8, pair.odd);
      }
    }
  }
  CATSERVE_AVX2 void Dots(const void* k, size_t k0, const size_t (&at)[Kt], __m256 (&a)[8]) const {
    const uint16_t* keys = static_cast<const uint16_t*>(k) + k0;
    CATSERVE_UNROLL
    for (int c = 0; c < kPairs; ++c) {
      CATSERVE_UNROLL
      for (int kk = 0; kk < Kt; ++kk) {
        const __m256i pairs =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + at[kk] + 16 * c));
        const __m256 even = EvenBf16(pairs), odd = OddBf16(pairs);
        CATSERVE_UNROLL
        for (int g = 0; g < G; ++g) {
          const float* qg = qd + g * HD + 16 * c;
          __m256& sum = a[g * Kt + kk];
          sum = _mm256_fmadd_ps(_mm256_load_ps(qg), even, sum);
          sum = _mm256_fmadd_ps(_mm256_load_ps(qg + 8), odd, sum);
        }
      }
    }
  }
  // Eight accumulators in registers: Gv queries at a time, P (even, odd) pairs of each.
  static CATSERVE_AVX2 void Accumulate(const float* keep, const float* p, size_t p_stride,
                                       const Segment* segments, int num_segments, float* acc) {
    constexpr int Gv = std::min(G, 4), P = 4 / Gv;
    for (int g = 0; g < G; g += Gv) {
      [&]<int... B>(std::integer_sequence<int, B...>) {
        (AccumulatePairs<Gv, P * B, std::min(P, kPairs - P * B)>(
             keep + g, p + g * p_stride, p_stride, segments, num_segments, acc + g * HD),
         ...);
      }
      (std::make_integer_sequence<int, (kPairs + P - 1) / P>());
    }
  }
  template <int Gv, int C0, int P>
  static CATSERVE_AVX2 void AccumulatePairs(const float* keep, const float* p, size_t p_stride,
                                            const Segment* segments, int num_segments, float* acc) {
    __m256 e[Gv][P], o[Gv][P];
    CATSERVE_UNROLL
    for (int g = 0; g < Gv; ++g) {
      const __m256 kg = _mm256_set1_ps(keep[g]);
      CATSERVE_UNROLL
      for (int c = 0; c < P; ++c) {
        const EvenOdd pair = Deinterleave16(acc + g * HD + 16 * (C0 + c));
        e[g][c] = _mm256_mul_ps(pair.even, kg);
        o[g][c] = _mm256_mul_ps(pair.odd, kg);
      }
    }
    for (int t = 0; t < num_segments; ++t) {
      const Segment& seg = segments[t];
      const uint16_t* values = static_cast<const uint16_t*>(seg.v) + 16 * C0;
      const float* pt = p + seg.at;
      for (int j = 0; j < seg.n; ++j) {
        const uint16_t* row = values + static_cast<size_t>(j) * HD;
        CATSERVE_UNROLL
        for (int c = 0; c < P; ++c) {
          const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * c));
          const __m256 even = EvenBf16(pairs), odd = OddBf16(pairs);
          CATSERVE_UNROLL
          for (int g = 0; g < Gv; ++g) {
            const __m256 pj = _mm256_broadcast_ss(pt + g * p_stride + j);
            e[g][c] = _mm256_fmadd_ps(pj, even, e[g][c]);
            o[g][c] = _mm256_fmadd_ps(pj, odd, o[g][c]);
          }
        }
      }
    }
    CATSERVE_UNROLL
    for (int g = 0; g < Gv; ++g) {
      CATSERVE_UNROLL
      for (int c = 0; c < P; ++c) Interleave16(e[g][c], o[g][c], acc + g * HD + 16 * (C0 + c));
    }
  }
  alignas(32) float qd[G * HD];  // the G queries as (even, odd) vector pairs
};

// The whole online-softmax update over a list of runs for G query heads of one kv head, Runs
// reading the keys and values. The runs' keys go in pieces of up to 64 (a piece spans runs: four
// 16-entry pages), each run's part of a piece at a multiple of 8 in the piece's scores. Per pass,
// the scores of Kt = 8 / G keys of one run for all G queries: eight independent FMA chains
// summed into one vector (lane g * Kt + kk). Then one max, one rescale and one vector exp per
// piece, and every query's accumulator in registers across all the piece's values.
template <int HD, typename Runs, int G>
CATSERVE_AVX2 void Avx2AttendTile(const float* q, const KvRun* runs, int num_runs, int bytes,
                                  float scale, float* m, float* sum, float* acc) {
  constexpr int kPiece = 64, Kt = 8 / G;
  const Runs reader(q);
  alignas(32) float s[G][kPiece];
  Segment segments[kPiece / 8];
  const __m256 sv = _mm256_set1_ps(scale);
  const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
  int r = 0, done = 0;  // the next key: key `done` of run r
  while (true) {
    int num_segments = 0, filled = 0;
    while (r < num_runs && filled < kPiece) {
      const int take = std::min(runs[r].n - done, kPiece - filled);
      if (take > 0) {
        const size_t at = static_cast<size_t>(done) * HD * bytes;
        segments[num_segments++] = {static_cast<const std::byte*>(runs[r].k) + at,
                                    static_cast<const std::byte*>(runs[r].v) + at, take, filled};
        filled += (take + 7) & ~7;  // filled stays a multiple of 8, so it never passes kPiece
        done += take;
      }
      if (done >= runs[r].n) {
        ++r;
        done = 0;
      }
    }
    if (num_segments == 0) return;
    for (int t = 0; t < num_segments; ++t) {
      const Segment& seg = segments[t];
      int j = 0;
      for (; j < seg.n; j += Kt) {
        const int live = std::min(Kt, seg.n - j);
        // Keys past the run read as key 0 of the pass (in bounds) and are masked below.
        size_t at[Kt];
        CATSERVE_UNROLL
        for (int kk = 0; kk < Kt; ++kk) at[kk] = static_cast<size_t>(kk < live ? kk : 0) * HD;
        __m256 a[8];
        CATSERVE_UNROLL
        for (int l = 0; l < 8; ++l) a[l] = _mm256_setzero_ps();
        reader.Dots(seg.k, static_cast<size_t>(j) * HD, at, a);
        __m256 scores =
            _mm256_mul_ps(HorizontalSums8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]), sv);
        if (live < Kt) {
          const __m256i key =
              _mm256_setr_epi32(0 % Kt, 1 % Kt, 2 % Kt, 3 % Kt, 4 % Kt, 5 % Kt, 6 % Kt, 7 % Kt);
          const __m256 mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(live), key));
          scores = _mm256_blendv_ps(minus_inf, scores, mask);
        }
        if constexpr (G == 1) {
          _mm256_store_ps(s[0] + seg.at + j, scores);
        } else {
          alignas(32) float lanes[8];
          _mm256_store_ps(lanes, scores);
          CATSERVE_UNROLL
          for (int g = 0; g < G; ++g) {
            CATSERVE_UNROLL
            for (int kk = 0; kk < Kt; ++kk) s[g][seg.at + j + kk] = lanes[g * Kt + kk];
          }
        }
      }
      // Whole vectors from here on: lanes past a run's scores hold -inf, whose exp adds nothing.
      for (int g = 0; g < G; ++g) {
        for (int u = j; u < ((seg.n + 7) & ~7); ++u) s[g][seg.at + u] = -INFINITY;
      }
    }
    float keep[G];
    for (int g = 0; g < G; ++g) {
      __m256 vmax = minus_inf;
      for (int u = 0; u < filled; u += 8) vmax = _mm256_max_ps(vmax, _mm256_load_ps(s[g] + u));
      const float new_max = std::max(m[g], HorizontalMax(vmax));
      keep[g] = std::exp(m[g] - new_max);  // 0 while m is -inf
      sum[g] = sum[g] * keep[g] + ExpInPlace(s[g], filled, new_max);
      m[g] = new_max;
    }
    Runs::Accumulate(keep, s[0], kPiece, segments, num_segments, acc);
  }
}

template <KvDtype D, int HD, int G>
CATSERVE_AVX2 void Avx2AttendTileFor(const float* q, const KvRun* runs, int num_runs, float scale,
                                     float* m, float* sum, float* acc) {
  if constexpr (D == KvDtype::kBf16) {
    Avx2AttendTile<HD, Bf16PairRuns<HD, G>, G>(q, runs, num_runs, 2, scale, m, sum, acc);
  } else {
    Avx2AttendTile<HD, WidenedRuns<D, HD, G>, G>(q, runs, num_runs, KvDtypeBytes(D), scale, m, sum,
                                                 acc);
  }
}

// A group of any size in tiles of 8, 4, 2 and 1 query heads.
template <KvDtype D, int HD>
CATSERVE_AVX2 void Avx2AttendFor(const float* q, int group, const KvRun* runs, int num_runs,
                                 float scale, float* m, float* sum, float* acc) {
  for (int g = 0; g < group;) {
    const int left = group - g;
    const float* qg = q + static_cast<size_t>(g) * HD;
    float* ag = acc + static_cast<size_t>(g) * HD;
    if (left >= 8) {
      Avx2AttendTileFor<D, HD, 8>(qg, runs, num_runs, scale, m + g, sum + g, ag);
      g += 8;
    } else if (left >= 4) {
      Avx2AttendTileFor<D, HD, 4>(qg, runs, num_runs, scale, m + g, sum + g, ag);
      g += 4;
    } else if (left >= 2) {
      Avx2AttendTileFor<D, HD, 2>(qg, runs, num_runs, scale, m + g, sum + g, ag);
      g += 2;
    } else {
      Avx2AttendTileFor<D, HD, 1>(qg, runs, num_runs, scale, m + g, sum + g, ag);
      g += 1;
    }
  }
}

template <KvDtype D>
CATSERVE_AVX2 void Avx2Attend(const float* q, int group, const KvRun* runs, int num_runs, int hd,
                              float scale, float* m, float* sum, float* acc) {
  // Head sizes of the common models get the fused kernel; others compose the three loops.
  switch (hd) {
    case 32:
      return Avx2AttendFor<D, 32>(q, group, runs, num_runs, scale, m, sum, acc);
    case 48:
      return Avx2AttendFor<D, 48>(q, group, runs, num_runs, scale, m, sum, acc);
    case 64:
      return Avx2AttendFor<D, 64>(q, group, runs, num_runs, scale, m, sum, acc);
    case 96:
      return Avx2AttendFor<D, 96>(q, group, runs, num_runs, scale, m, sum, acc);
    case 128:
      return Avx2AttendFor<D, 128>(q, group, runs, num_runs, scale, m, sum, acc);
    default:
      break;
  }
  for (int r = 0; r < num_runs; ++r) {
    for (int g = 0; g < group; ++g) {
      ComposedAttend<Avx2Scores<D>, Avx2ExpSum, Avx2Accumulate<D>>(
          q + static_cast<size_t>(g) * hd, runs[r].k, runs[r].v, runs[r].n, hd, KvDtypeBytes(D),
          scale, m + g, sum + g, acc + static_cast<size_t>(g) * hd);
    }
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
       PortableAccumulate<KvDtype::kFp16>},
      {PortableAttend<KvDtype::kFp32>, PortableAttend<KvDtype::kBf16>,
       PortableAttend<KvDtype::kFp16>}};
  return kPortable;
}

const AttentionKernels* Avx2AttentionKernels() {
#ifdef CATSERVE_AVX2_KERNELS
  static constexpr AttentionKernels kAvx2 = {
      "avx2",
      {Avx2Scores<KvDtype::kFp32>, Avx2Scores<KvDtype::kBf16>, Avx2Scores<KvDtype::kFp16>},
      Avx2ExpSum,
      {Avx2Accumulate<KvDtype::kFp32>, Avx2Accumulate<KvDtype::kBf16>,
       Avx2Accumulate<KvDtype::kFp16>},
      {Avx2Attend<KvDtype::kFp32>, Avx2Attend<KvDtype::kBf16>, Avx2Attend<KvDtype::kFp16>}};
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
