// RowInvariantGemm against OpenBLAS's sgemm (the core OpenBLAS picks, or OPENBLAS_CORETYPE), one
// thread, on the shipped model's and the paper's layer shapes: best of 7 rounds of 5 calls.
//
//   OPENBLAS_CORETYPE=Haswell build/benchmarks/linear_bench
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/kernels/row_invariant_gemm.h"

int main() {
  openblas_set_num_threads(1);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int shapes[][3] = {{1, 192, 768},   {64, 192, 768},   {256, 192, 768},  {256, 768, 192},
                           {1, 1024, 3072}, {64, 1024, 3072}, {256, 1024, 1024}};
  std::printf(
      "OpenBLAS core %s\n\n| rows | in | out | sgemm ms | RowInvariantGemm ms | ratio |\n"
      "|---:|---:|---:|---:|---:|---:|\n",
      openblas_get_corename());
  for (const auto& [rows, in, out] : shapes) {
    std::vector<float> x(static_cast<size_t>(rows) * in), w(static_cast<size_t>(out) * in),
        y(static_cast<size_t>(rows) * out);
    for (float& v : x) v = dist(rng);
    for (float& v : w) v = dist(rng);
    auto best = [&](auto fn) {
      double seconds = 1e9;
      for (int round = 0; round < 7; ++round) {
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < 5; ++i) fn();
        seconds = std::min(
            seconds,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 5);
      }
      return seconds;
    };
    const double blas = best([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x.data(), in,
                  w.data(), in, 0.0f, y.data(), out);
    });
    const double ours = best([&] {
      catserve::engine::RowInvariantGemm(x.data(), rows, in, w.data(), out, y.data(), out);
    });
    std::printf("| %d | %d | %d | %.3f | %.3f | %.2f |\n", rows, in, out, blas * 1e3, ours * 1e3,
                ours / blas);
  }
  return 0;
}
