#ifndef CATSERVE_ENGINE_KERNELS_CPU_OPS_H_
#define CATSERVE_ENGINE_KERNELS_CPU_OPS_H_

#include <vector>

namespace catserve::engine {

// fp32 building blocks of the CPU backend. Matrices are row-major.

// y[rows, out] = x[rows, in] * W^T with W [out, in] (a linear layer). A row's output never
// depends on how many rows the call has or where the row sits: through OpenBLAS on the cores
// where its blocked kernels keep rows apart (BlasRowsAreBatchInvariant; cpu_ops.cc pads the
// products OpenBLAS would send to its small-matrix kernels), through RowInvariantGemm elsewhere.
void Linear(const float* x, int rows, int in, const float* w, int out, float* y);

// Whether the OpenBLAS core in use computes a row of a product the same wherever it sits in the
// call (its AVX-512 cores: SkylakeX, CooperLake, SapphireRapids). Elsewhere (Haswell, Zen, ...)
// its blocked kernels round by row position, and Linear does not use it.
bool BlasRowsAreBatchInvariant();

class ThreadPool;
// Linear split over the pool by output columns, each slice a single-threaded BLAS call: the
// engine keeps one set of compute threads (BLAS's own threads would spin against them).
void ParallelLinear(ThreadPool& pool, const float* x, int rows, int in, const float* w, int out,
                    float* y);

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for `rows` rows of `dim`. y may alias x.
void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y);

// Non-interleaved (rotate-half) rotary embedding of `heads` vectors of `head_dim` at `pos`,
// in place, with cos/sin from a RopeTable.
class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(int head_dim, double theta, int max_pos);
  void Apply(float* v, int heads, int pos) const;
  int head_dim() const { return head_dim_; }
  int max_pos() const { return max_pos_; }
  // [max_pos, head_dim / 2] tables (the CUDA backend uploads them as they are).
  const std::vector<float>& cos_table() const { return cos_; }
  const std::vector<float>& sin_table() const { return sin_; }

 private:
  int head_dim_ = 0;
  int max_pos_ = 0;
  std::vector<float> cos_, sin_;  // [max_pos, head_dim / 2]
};

// out[i] = silu(gate_up[i]) * gate_up[inter + i] for each row of gate_up [rows, 2 * inter].
void SiluMul(const float* gate_up, int rows, int inter, float* out);

// In-place softmax over n values.
void Softmax(float* x, int n);

// dot product of two n-vectors.
float Dot(const float* a, const float* b, int n);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_KERNELS_CPU_OPS_H_
