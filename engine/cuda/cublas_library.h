// cuBLAS, opened at run time by the CUDA engine rather than linked. libcublas needs libcublasLt,
// whose 94 KB of static TLS, when loaded at program start, makes pthread_create fail for threads
// with small stacks (the civetweb metrics server of the time could not start in any binary
// linking the engine), and costs every thread that much. Opened with dlopen, its TLS is allocated
// per thread on demand instead, and binaries that never create a CUDA engine never load it.
#ifndef CATSERVE_ENGINE_CUDA_CUBLAS_LIBRARY_H_
#define CATSERVE_ENGINE_CUDA_CUBLAS_LIBRARY_H_

#include <cublas_api.h>  // types and enums only: nothing here links against cuBLAS

#include "absl/status/statusor.h"

namespace catserve::engine::cuda {

// The cuBLAS entry points the engine uses.
struct CublasLibrary {
  cublasStatus_t (*create)(cublasHandle_t* handle);
  cublasStatus_t (*destroy)(cublasHandle_t handle);
  cublasStatus_t (*set_stream)(cublasHandle_t handle, cudaStream_t stream);
  // A workspace of the caller's, so that GEMMs captured into a CUDA graph allocate nothing.
  cublasStatus_t (*set_workspace)(cublasHandle_t handle, void* workspace, size_t bytes);
  cublasStatus_t (*gemm_ex)(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* a, cudaDataType a_type, int lda, const void* b,
                            cudaDataType b_type, int ldb, const void* beta, void* c,
                            cudaDataType c_type, int ldc, cublasComputeType_t compute_type,
                            cublasGemmAlgo_t algo);
  const char* (*status_string)(cublasStatus_t status);
};

// Opens libcublas.so.<major of the headers built against> (once; later calls return the same
// table). FAILED_PRECONDITION naming the library when it or a symbol is missing.
absl::StatusOr<const CublasLibrary*> LoadCublas();

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_CUBLAS_LIBRARY_H_
