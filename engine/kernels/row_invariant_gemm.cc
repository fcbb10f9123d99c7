#include "engine/kernels/row_invariant_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace catserve::engine {
namespace {

constexpr int kLanes = 8;
// Rows and outputs computed together: 3 x 4 accumulators, 3 rows of x and a row of W fill the 16
// ymm registers.
constexpr int kRowBlock = 3;
constexpr int kOutBlock = 4;

// The fixed tree over eight partial sums: (l0+l4, l1+l5, l2+l6, l3+l7), then (t0+t2, t1+t3),
// then their sum; as _mm256 extract/add, movehl/add and shuffle/add_ss compute it.
inline float SumLanes(const float* l) {
  const float t0 = l[0] + l[4], t1 = l[1] + l[5], t2 = l[2] + l[6], t3 = l[3] + l[7];
  const float u0 = t0 + t2, u1 = t1 + t3;
  return u0 + u1;
}

// The k beyond the last multiple of kLanes, fused in order.
inline float Tail(const float* x, const float* w, int k0, int in, float s) {
  for (int k = k0; k < in; ++k) s = std::fma(x[k], w[k], s);
  return s;
}

__attribute__((target("avx2,fma"))) inline float SumLanesAvx(__m256 v) {
  const __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));  // (t0+t2, t1+t3, ...)
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

// One block of NR rows by NO outputs, accumulators in registers (NR * NO + NR + 1 of the 16 ymm
// registers at most). Every accumulator runs the same operations whatever NR and NO are.
template <int NR, int NO>
__attribute__((target("avx2,fma"))) void BlockAvx2(const float* x, int in, const float* w, float* y,
                                                   int ldy) {
  const int body = in / kLanes * kLanes;
  __m256 acc[NR][NO];
  for (int r = 0; r < NR; ++r) {
    for (int o = 0; o < NO; ++o) acc[r][o] = _mm256_setzero_ps();
  }
  for (int k = 0; k < body; k += kLanes) {
    __m256 xv[NR];
    for (int r = 0; r < NR; ++r) xv[r] = _mm256_loadu_ps(x + static_cast<size_t>(r) * in + k);
    for (int o = 0; o < NO; ++o) {
      const __m256 wv = _mm256_loadu_ps(w + static_cast<size_t>(o) * in + k);
      for (int r = 0; r < NR; ++r) acc[r][o] = _mm256_fmadd_ps(xv[r], wv, acc[r][o]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int o = 0; o < NO; ++o) {
      y[static_cast<size_t>(r) * ldy + o] =
          Tail(x + static_cast<size_t>(r) * in, w + static_cast<size_t>(o) * in, body, in,
               SumLanesAvx(acc[r][o]));
    }
  }
}

using BlockFn = void (*)(const float*, int, const float*, float*, int);

template <int NR>
constexpr BlockFn BlockFor(int no) {
  return no == 1   ? &BlockAvx2<NR, 1>
         : no == 2 ? &BlockAvx2<NR, 2>
         : no == 3 ? &BlockAvx2<NR, 3>
                   : &BlockAvx2<NR, 4>;
}

void GemmAvx2(const float* x, int rows, int in, const float* w, int out, float* y, int ldy) {
  // Outputs in slices whose rows of W stay in a 512 KiB share of L2 while every row of x passes
  // over them. (Blocking changes which outputs are computed together, never how one is.)
  constexpr size_t kSliceBytes = 512 << 10;
  const int slice =
      std::max<int>(kOutBlock, static_cast<int>(kSliceBytes / (sizeof(float) * std::max(in, 1))) /
                                   kOutBlock * kOutBlock);
  for (int s0 = 0; s0 < out; s0 += slice) {
    const int s1 = std::min(out, s0 + slice);
    for (int r0 = 0; r0 < rows; r0 += kRowBlock) {
      const int nr = std::min(kRowBlock, rows - r0);
      for (int o0 = s0; o0 < s1; o0 += kOutBlock) {
        const int no = std::min(kOutBlock, s1 - o0);
        const BlockFn block = nr == 1   ? BlockFor<1>(no)
                              : nr == 2 ? BlockFor<2>(no)
                                        : BlockFor<3>(no);
        block(x + static_cast<size_t>(r0) * in, in, w + static_cast<size_t>(o0) * in,
              y + static_cast<size_t>(r0) * ldy + o0, ldy);
      }
    }
  }
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

}  // namespace

void RowInvariantGemmScalar(const float* x, int rows, int in, const float* w, int out, float* y,
                            int ldy) {
  const int body = in / kLanes * kLanes;
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * in;
    for (int o = 0; o < out; ++o) {
      const float* wo = w + static_cast<size_t>(o) * in;
      float lanes[kLanes] = {};
      for (int k = 0; k < body; k += kLanes) {
        for (int l = 0; l < kLanes; ++l) lanes[l] = std::fma(xr[k + l], wo[k + l], lanes[l]);
      }
      y[static_cast<size_t>(r) * ldy + o] = Tail(xr, wo, body, in, SumLanes(lanes));
    }
  }
}

void RowInvariantGemm(const float* x, int rows, int in, const float* w, int out, float* y,
                      int ldy) {
  if (HasAvx2Fma()) {
    GemmAvx2(x, rows, in, w, out, y, ldy);
  } else {
    RowInvariantGemmScalar(x, rows, in, w, out, y, ldy);
  }
}

}  // namespace catserve::engine
