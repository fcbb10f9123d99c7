// RowInvariantGemm: a linear layer whose every output is one fixed sequence of operations.
#ifndef CATSERVE_ENGINE_KERNELS_ROW_INVARIANT_GEMM_H_
#define CATSERVE_ENGINE_KERNELS_ROW_INVARIANT_GEMM_H_

namespace catserve::engine {

// y[rows, out] (leading dimension ldy) = x[rows, in] * W^T with W [out, in], where each output
// y[r][o] is the dot product of x's row r and W's row o computed the same way whatever the call
// around it: eight partial sums over k (k = 8j + lane, fused multiply-adds in order of j), added
// in a fixed tree, then the k beyond the last multiple of 8 fused in order. So a row's output
// never depends on how many rows share the call or where the row sits, on any x86-64 core: AVX2
// with FMA where the CPU has them, else the same operations one lane at a time (bit-identical).
//
// Linear uses it where OpenBLAS's blocked kernels round a row by its position in the call
// (Haswell and Zen cores, among others; cpu_ops.cc); it reaches a fraction of those kernels' speed
// (docs/BENCHMARKS.md), the price of a request's tokens not depending on its batch.
void RowInvariantGemm(const float* x, int rows, int in, const float* w, int out, float* y, int ldy);

// The same computed one lane at a time, whatever the CPU (for tests: it must equal the above).
void RowInvariantGemmScalar(const float* x, int rows, int in, const float* w, int out, float* y,
                            int ldy);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KERNELS_ROW_INVARIANT_GEMM_H_
