// Linear: a row's output does not depend on how many rows share the call or where it sits, on
// every OpenBLAS core (through BLAS where its kernels allow it, RowInvariantGemm elsewhere); the
// batching tests of the scheduler and the server rest on it.
#include "engine/kernels/cpu_ops.h"

#include <cblas.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "engine/kernels/row_invariant_gemm.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

// Every call of `gemm` over rows 0..rows-1 gives each row what it gets alone.
using GemmFn = void (*)(const float* x, int rows, int in, const float* w, int out, float* y);

void ExpectRowsIndependentOfTheirCall(GemmFn gemm) {
  // The shipped model's, the test models' and the paper's layer shapes, slices of them, and
  // widths that are no multiple of 8.
  const int shapes[][2] = {{64, 64},     {64, 256}, {256, 64},   {192, 192}, {192, 768},
                           {768, 192},   {96, 96},  {192, 4096}, {32, 32},   {48, 16},
                           {1024, 1024}, {13, 7},   {100, 37}};
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const auto& [in, out] : shapes) {
    SCOPED_TRACE(testing::Message() << in << " -> " << out);
    constexpr int kRows = 80;
    std::vector<float> w(static_cast<size_t>(in) * out), x(static_cast<size_t>(in) * kRows);
    for (float& v : w) v = dist(rng);
    for (float& v : x) v = dist(rng);
    std::vector<float> alone(static_cast<size_t>(out) * kRows), together(alone.size());
    for (int r = 0; r < kRows; ++r) {
      gemm(x.data() + static_cast<size_t>(r) * in, 1, in, w.data(), out,
           alone.data() + static_cast<size_t>(r) * out);
    }
    for (int rows = 1; rows <= kRows; ++rows) {
      gemm(x.data(), rows, in, w.data(), out, together.data());
      ASSERT_EQ(std::memcmp(together.data(), alone.data(), sizeof(float) * rows * out), 0)
          << rows << " rows";
    }
  }
}

// Linear, on whatever OpenBLAS core this machine (or OPENBLAS_CORETYPE) selects: CTest also runs
// it as LinearTest.OnHaswellKernels with OPENBLAS_CORETYPE=Haswell, whose blocked kernels round by
// row position, so that the RowInvariantGemm path is held to it on any machine.
TEST(LinearTest, ARowsOutputDoesNotDependOnTheRowsBesideIt) {
  SCOPED_TRACE(testing::Message() << "OpenBLAS core " << openblas_get_corename() << ", "
                                  << (BlasRowsAreBatchInvariant() ? "BLAS" : "RowInvariantGemm"));
  ExpectRowsIndependentOfTheirCall(&Linear);
}

TEST(RowInvariantGemmTest, ARowsOutputDoesNotDependOnTheRowsBesideIt) {
  ExpectRowsIndependentOfTheirCall(
      +[](const float* x, int rows, int in, const float* w, int out, float* y) {
        RowInvariantGemm(x, rows, in, w, out, y, out);
      });
}

// The vector path and the lane-by-lane one are bit-identical, so a machine without AVX2 gives
// the same outputs.
TEST(RowInvariantGemmTest, TheVectorAndScalarPathsAgreeBitForBit) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const auto& [rows, in, out] : {std::tuple{5, 192, 64}, std::tuple{7, 13, 9},
                                      std::tuple{1, 1024, 33}, std::tuple{16, 100, 100}}) {
    std::vector<float> x(static_cast<size_t>(rows) * in), w(static_cast<size_t>(out) * in);
    for (float& v : x) v = dist(rng);
    for (float& v : w) v = dist(rng);
    std::vector<float> vec(static_cast<size_t>(rows) * out), scalar(vec.size());
    RowInvariantGemm(x.data(), rows, in, w.data(), out, vec.data(), out);
    RowInvariantGemmScalar(x.data(), rows, in, w.data(), out, scalar.data(), out);
    ASSERT_EQ(std::memcmp(vec.data(), scalar.data(), sizeof(float) * vec.size()), 0)
        << rows << "x" << in << " -> " << out;
    // And close to BLAS: only the order of the sums differs.
    std::vector<float> blas(vec.size());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x.data(), in,
                w.data(), in, 0.0f, blas.data(), out);
    for (size_t i = 0; i < vec.size(); ++i) EXPECT_NEAR(vec[i], blas[i], 1e-4f * std::sqrt(in));
  }
}

}  // namespace
}  // namespace catserve::engine
