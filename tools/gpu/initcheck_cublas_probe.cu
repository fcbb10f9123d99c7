// Does compute-sanitizer's initcheck see what cuBLAS writes? Writes C with one bf16
// cublasGemmEx (beta = 0, so every element of C is written), then reads every element of C with a
// kernel of ours. A control buffer written by a kernel of ours is read the same way. Under
//   compute-sanitizer --tool initcheck --error-exitcode 1 initcheck_cublas_probe
// a report against the GEMM's output but none against the control means initcheck does not track
// that GEMM's stores (so its reports against buffers cuBLAS writes are not ours to fix). The
// control is half the GEMM's output, so the error count says which buffer was reported:
// m * n / 2 = 368640 reads of the control, m * n = 737280 of the GEMM's output.
//
//   nvcc -O2 -arch=sm_90 tools/gpu/initcheck_cublas_probe.cu -lcublas -o initcheck_cublas_probe
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(expr)                                                         \
  do {                                                                      \
    if (auto _e = (expr); _e != 0) {                                        \
      std::fprintf(stderr, "%s failed: %d\n", #expr, static_cast<int>(_e)); \
      std::exit(1);                                                         \
    }                                                                       \
  } while (false)

__global__ void Fill(float* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    out[i] = static_cast<float>(i % 7);
  }
}

__global__ void Sum(const float* in, int n, float* total) {
  float s = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    s += in[i];
  atomicAdd(total, s);
}

int main() {
  const int m = 160, k = 1536, n = 4608;  // rows x hidden -> qkv width of the paper's shape
  std::vector<__nv_bfloat16> ha(static_cast<size_t>(m) * k), hb(static_cast<size_t>(k) * n);
  for (size_t i = 0; i < ha.size(); ++i) ha[i] = __float2bfloat16((i % 13) / 13.0f - 0.5f);
  for (size_t i = 0; i < hb.size(); ++i) hb[i] = __float2bfloat16((i % 11) / 11.0f - 0.5f);
  __nv_bfloat16 *a, *b;
  float *c, *control, *total;
  CHECK(cudaMalloc(&a, ha.size() * 2));
  CHECK(cudaMalloc(&b, hb.size() * 2));
  CHECK(cudaMalloc(&c, static_cast<size_t>(m) * n * 4));
  CHECK(cudaMalloc(&control, static_cast<size_t>(m) * n / 2 * 4));
  CHECK(cudaMalloc(&total, 2 * sizeof(float)));
  CHECK(cudaMemcpy(a, ha.data(), ha.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(b, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(total, 0, 2 * sizeof(float)));
  cublasHandle_t h;
  CHECK(cublasCreate(&h));
  const float alpha = 1, beta = 0;
  // Column-major C[n x m] = B^T[n x k] * A[k x m]: row-major C[m x n] = A[m x k] * B[k x n].
  CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, n, a,
                     CUDA_R_16BF, k, &beta, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT));
  Fill<<<132, 256>>>(control, m * n / 2);
  std::printf("reading the control (written by our kernel)\n");
  Sum<<<132, 256>>>(control, m * n / 2, total);
  CHECK(cudaDeviceSynchronize());
  std::printf("reading the GEMM's output\n");
  Sum<<<132, 256>>>(c, m * n, total + 1);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  float sums[2];
  CHECK(cudaMemcpy(sums, total, sizeof(sums), cudaMemcpyDeviceToHost));
  std::printf("sums: control %g, gemm %g\n", sums[0], sums[1]);
  return 0;
}
