#include "engine/kernels/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "engine/kernels/row_invariant_gemm.h"
#include "engine/kernels/thread_pool.h"

namespace catserve::engine {

namespace {

// OpenBLAS (0.3.21 on AVX-512 cores) computes a "small" single-precision product through other
// kernels than a large one; in our row-major x * W^T call (column-major TN for BLAS) it permits
// them when out * rows <= 1200 (kernel/x86_64/sgemm_small_kernel_permit_skylakex.c). Their sums
// round differently, so a row's output would depend on how many rows share the call: a request's
// logits, and its sampled tokens, on what else is in the batch. Padding such a call with zero
// rows keeps every call on the blocked kernels, whose rows do not depend on the row count there.
constexpr int kSmallProductLimit = 1200;

int RowsForBlockedPath(int rows, int out) {
  return std::max(rows, kSmallProductLimit / std::max(out, 1) + 1);
}

// y[rows, out] (leading dimension ldy) = x * W^T with W [out, in].
void Gemm(const float* x, int rows, int in, const float* w, int out, float* y, int ldy) {
  static const bool blas = BlasRowsAreBatchInvariant();
  if (!blas) {
    RowInvariantGemm(x, rows, in, w, out, y, ldy);
    return;
  }
  const int padded = RowsForBlockedPath(rows, out);
  if (padded == rows) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 0.0f, y,
                ldy);
    return;
  }
  std::vector<float> xp(static_cast<size_t>(padded) * in, 0.0f);
  std::vector<float> yp(static_cast<size_t>(padded) * out);
  std::copy(x, x + static_cast<size_t>(rows) * in, xp.begin());
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, padded, out, in, 1.0f, xp.data(), in, w, in,
              0.0f, yp.data(), out);
  for (int r = 0; r < rows; ++r) {
    std::copy_n(yp.data() + static_cast<size_t>(r) * out, out, y + static_cast<size_t>(r) * ldy);
  }
}

}  // namespace

bool BlasRowsAreBatchInvariant() {
  std::string core = openblas_get_corename();
  for (char& c : core) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return core == "skylakex" || core == "cooperlake" || core == "sapphirerapids";
}

void Linear(const float* x, int rows, int in, const float* w, int out, float* y) {
  if (rows == 0) return;
  Gemm(x, rows, in, w, out, y, out);
}

void ParallelLinear(ThreadPool& pool, const float* x, int rows, int in, const float* w, int out,
                    float* y) {
  if (rows == 0) return;
  // Slices of at least 64 columns; small layers stay on one thread.
  const int slices = std::max(1, std::min(pool.size(), out / 64));
  if (slices == 1) {
    Linear(x, rows, in, w, out, y);
    return;
  }
  const int step = (out + slices - 1) / slices;
  pool.ParallelFor(slices, [&](int begin, int end) {
    for (int s = begin; s < end; ++s) {
      const int o0 = s * step, n = std::min(out, o0 + step) - o0;
      if (n <= 0) continue;
      Gemm(x, rows, in, w + static_cast<size_t>(o0) * in, n, y + o0, out);
    }
  });
}

void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * dim;
    float* yr = y + static_cast<size_t>(r) * dim;
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
  }
}

RopeTable::RopeTable(int head_dim, double theta, int max_pos)
    : head_dim_(head_dim), max_pos_(max_pos) {
  const int half = head_dim / 2;
  cos_.resize(static_cast<size_t>(max_pos) * half);
  sin_.resize(cos_.size());
  for (int k = 0; k < half; ++k) {
    // As PyTorch computes it: inv_freq in fp32, angle = pos * inv_freq in fp32.
    const float inv_freq =
        1.0f / static_cast<float>(std::pow(theta, static_cast<double>(2 * k) / head_dim));
    for (int p = 0; p < max_pos; ++p) {
      const float angle = static_cast<float>(p) * inv_freq;
      cos_[p * half + k] = std::cos(angle);
      sin_[p * half + k] = std::sin(angle);
    }
  }
}

void RopeTable::Apply(float* v, int heads, int pos) const {
  const int half = head_dim_ / 2;
  const float* c = cos_.data() + static_cast<size_t>(pos) * half;
  const float* s = sin_.data() + static_cast<size_t>(pos) * half;
  for (int h = 0; h < heads; ++h) {
    float* x = v + static_cast<size_t>(h) * head_dim_;
    for (int k = 0; k < half; ++k) {
      const float a = x[k], b = x[k + half];
      x[k] = a * c[k] - b * s[k];
      x[k + half] = b * c[k] + a * s[k];
    }
  }
}

void SiluMul(const float* gate_up, int rows, int inter, float* out) {
  for (int r = 0; r < rows; ++r) {
    const float* g = gate_up + static_cast<size_t>(r) * 2 * inter;
    const float* u = g + inter;
    float* o = out + static_cast<size_t>(r) * inter;
    for (int i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

void Softmax(float* x, int n) {
  float mx = *std::max_element(x, x + n);
  float sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

float Dot(const float* a, const float* b, int n) {
  // Eight independent partial sums let the compiler keep a vector register busy; one running
  // sum would serialise every add.
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace catserve::engine
