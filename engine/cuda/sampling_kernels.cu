#include <cfloat>

#include "engine/cuda/sampling_kernels.h"
#include "engine/sampling/draw.h"

namespace catserve::engine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBisections = 40;

// Block-wide sum; every thread gets the result.
__device__ float BlockSum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  return total;
}

// Block-wide maximum of (value, -index): the largest value, ties to the lowest index.
__device__ void BlockArgMax(float& v, int& i, float* shared_v, int* shared_i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) {
    shared_v[warp] = v;
    shared_i[warp] = i;
  }
  __syncthreads();
  v = shared_v[0];
  i = shared_i[0];
  for (int w = 1; w < kThreads / 32; ++w) {
    if (shared_v[w] > v || (shared_v[w] == v && shared_i[w] < i)) {
      v = shared_v[w];
      i = shared_i[w];
    }
  }
}

// Sum of p over p >= t (mass) or count of p >= t, over the row.
__device__ float MassAtLeast(const float* p, int n, float t, bool count, float* shared) {
  float s = 0;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    if (p[i] >= t) s += count ? 1.0f : p[i];
  }
  return BlockSum(s, shared);
}

// The largest threshold t in [0, 1] with f(t) >= target, f non-increasing (bisection).
template <typename F>
__device__ float LargestThreshold(F f, float target) {
  float lo = 0, hi = 1;
  for (int k = 0; k < kBisections; ++k) {
    const float mid = 0.5f * (lo + hi);
    if (f(mid) >= target) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__global__ void SampleRowsKernel(const float* logits, int vocab, const DeviceSamplingParams* params,
                                 const int32_t* context, float* scratch, int32_t* tokens) {
  __shared__ float shared[kThreads / 32];
  __shared__ int shared_i[kThreads / 32];
  __shared__ float segment[kThreads];
  const int row = blockIdx.x;
  const DeviceSamplingParams p = params[row];
  const float* in = logits + static_cast<size_t>(row) * vocab;
  float* x = scratch + static_cast<size_t>(row) * vocab;
  for (int i = threadIdx.x; i < vocab; i += kThreads) x[i] = in[i];
  __syncthreads();
  if (p.repetition_penalty != 1.0f) {  // from the unpenalised value: repeated ids write the same
    for (int c = p.context_begin + threadIdx.x; c < p.context_end; c += kThreads) {
      const int t = context[c];
      if (t >= 0 && t < vocab)
        x[t] = in[t] > 0 ? in[t] / p.repetition_penalty : in[t] * p.repetition_penalty;
    }
    __syncthreads();
  }
  float best = -FLT_MAX;
  int best_i = vocab;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (x[i] > best) {
      best = x[i];
      best_i = i;
    }
  }
  BlockArgMax(best, best_i, shared, shared_i);
  if (p.temperature == 0.0f) {
    if (threadIdx.x == 0) tokens[row] = best_i;
    return;
  }
  // Probabilities, unnormalised: the best token has 1.
  for (int i = threadIdx.x; i < vocab; i += kThreads) x[i] = __expf((x[i] - best) / p.temperature);
  __syncthreads();
  float threshold = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    threshold = LargestThreshold([&](float t) { return MassAtLeast(x, vocab, t, true, shared); },
                                 static_cast<float>(p.top_k));
  }
  if (p.top_p < 1.0f) {
    const float kept = MassAtLeast(x, vocab, threshold, false, shared);
    const float t = LargestThreshold(
        [&](float t) { return MassAtLeast(x, vocab, fmaxf(t, threshold), false, shared); },
        p.top_p * kept);
    threshold = fmaxf(threshold, t);
  }
  if (p.min_p > 0.0f) threshold = fmaxf(threshold, p.min_p);  // relative to the best's 1
  // Inverse CDF over the kept tokens in id order: each thread owns a contiguous segment, thread
  // 0 turns the segments' masses into their starts and draws the target. The best token stands
  // in should rounding leave the target unclaimed.
  const int per = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * per), end = min(vocab, begin + per);
  float own = 0;
  for (int i = begin; i < end; ++i) own += x[i] >= threshold ? x[i] : 0.0f;
  segment[threadIdx.x] = own;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0;
    for (int s = 0; s < kThreads; ++s) {
      const float v = segment[s];
      segment[s] = total;
      total += v;
    }
    shared[0] = static_cast<float>(DrawUniform(p.seed, p.step) * total);
    tokens[row] = best_i;
  }
  __syncthreads();
  const float target = shared[0];
  float acc = segment[threadIdx.x];
  if (own > 0 && acc <= target && target < acc + own) {
    int chosen = -1;
    for (int i = begin; i < end; ++i) {
      if (x[i] < threshold) continue;
      acc += x[i];
      chosen = i;
      if (target < acc) break;
    }
    tokens[row] = chosen;
  }
}

}  // namespace

cudaError_t SampleRows(const float* logits, int rows, int vocab, const DeviceSamplingParams* params,
                       const int32_t* context, float* scratch, int32_t* tokens,
                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  SampleRowsKernel<<<rows, kThreads, 0, stream>>>(logits, vocab, params, context, scratch, tokens);
  return cudaGetLastError();
}

}  // namespace catserve::engine::cuda
