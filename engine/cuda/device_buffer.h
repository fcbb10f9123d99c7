// Owning handles of CUDA memory for the CUDA backend's host code (never managed memory).
#ifndef CATSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_
#define CATSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace catserve::engine::cuda {

// OK for cudaSuccess, else INTERNAL naming `what` and CUDA's message (RESOURCE_EXHAUSTED for an
// allocation failure).
absl::Status CudaStatus(cudaError_t error, const char* what);

// Device memory from cudaMalloc, freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Free(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Makes the buffer at least `bytes` long; growing drops the contents (and waits for the device,
  // as cudaFree does).
  absl::Status Reserve(size_t bytes);
  // Reserve(bytes), then a blocking copy from host memory.
  absl::Status Upload(const void* host, size_t bytes);
  template <typename T>
  absl::Status Upload(const std::vector<T>& host) {
    return Upload(host.data(), host.size() * sizeof(T));
  }

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  bool empty() const { return ptr_ == nullptr; }

 private:
  void Free();

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory from cudaMallocHost, freed on destruction: what device-to-host copies
// land in, so that they are real asynchronous DMA rather than staged through a pageable bounce
// buffer. Grown, never shrunk. Move-only.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Free(); }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  // Makes the buffer at least `bytes` long; growing drops the contents.
  absl::Status Reserve(size_t bytes);
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void Free();

  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// fp32 values rounded to bf16 (nearest even; NaN stays NaN), as 16-bit patterns.
std::vector<uint16_t> ToBf16(const std::vector<float>& values);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_DEVICE_BUFFER_H_
