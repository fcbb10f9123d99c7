#include "engine/cuda/device_buffer.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "engine/kv/bf16.h"

namespace catserve::engine::cuda {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", cudaGetErrorString(error));
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

void DeviceBuffer::Free() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::Status DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  Free();
  if (absl::Status s = CudaStatus(cudaMalloc(&ptr_, bytes), "cudaMalloc"); !s.ok()) {
    ptr_ = nullptr;
    return s;
  }
  bytes_ = bytes;
  return absl::OkStatus();
}

void PinnedBuffer::Free() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::Status PinnedBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  Free();
  if (absl::Status s = CudaStatus(cudaMallocHost(&ptr_, bytes), "cudaMallocHost"); !s.ok()) {
    ptr_ = nullptr;
    return s;
  }
  bytes_ = bytes;
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Upload(const void* host, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (absl::Status s = Reserve(bytes); !s.ok()) return s;
  return CudaStatus(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (upload)");
}

std::vector<uint16_t> ToBf16(const std::vector<float>& values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = Bf16Bits(values[i]);
  return out;
}

}  // namespace catserve::engine::cuda
