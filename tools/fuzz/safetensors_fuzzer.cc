// Fuzzes the safetensors parser (engine/safetensors.cc) with whole files: header length, JSON
// header and data region. Each input is written to a memfd and opened by path, as a model file
// is. On success every promise of SafetensorsFile::Open must hold and every tensor must read.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/model/safetensors.h"
#include "tools/fuzz/fuzz_check.h"

namespace {

using catserve::engine::DType;
using catserve::engine::DTypeSize;
using catserve::engine::TensorInfo;
using catserve::engine::TensorSet;

int MemFd() {
  static const int fd = memfd_create("fuzz.safetensors", 0);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemFd();
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  FUZZ_CHECK(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
  absl::StatusOr<TensorSet> set = TensorSet::OpenFile("/proc/self/fd/" + std::to_string(fd));
  if (!set.ok()) {
    FUZZ_CHECK(set.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  uint64_t bytes = 0;
  for (const std::string& name : set->names()) {
    const TensorInfo* t = set->Find(name);
    FUZZ_CHECK(t != nullptr && t->name == name);
    uint64_t elements = 1;
    for (int64_t d : t->shape) {
      FUZZ_CHECK(d >= 0);
      elements *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(elements * DTypeSize(t->dtype) == t->nbytes);
    bytes += t->nbytes;
    switch (t->dtype) {
      case DType::kF32:
      case DType::kF16:
      case DType::kBF16: {
        absl::StatusOr<std::vector<float>> values = set->ReadFloat(name, t->shape);
        FUZZ_CHECK(values.ok() && values->size() == elements);
        break;
      }
      case DType::kI32:
      case DType::kI64: {
        absl::StatusOr<std::vector<int32_t>> values = set->ReadInt32(name);
        FUZZ_CHECK(!values.ok() || values->size() == elements);
        break;
      }
    }
  }
  // The tensors tile the data region: it is exactly their bytes.
  FUZZ_CHECK(bytes == set->tensor_bytes());
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | data[i];
  FUZZ_CHECK(8 + header_length + bytes == size);
  return 0;
}
