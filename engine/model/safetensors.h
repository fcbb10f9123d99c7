// Read-only access to safetensors checkpoints, memory-mapped.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header, then the
// data region. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets relative to the data region) and may hold "__metadata__": {string: string}.
//
// Open validates the whole header before handing anything out: after a successful Open, every
// TensorInfo's [data, data + nbytes) lies inside the mapping, nbytes == product(shape) * element
// size, and the tensors' byte ranges tile the data region exactly: no overlap, no gap and no
// trailing byte, so a wrong header length or offset is refused instead of read shifted. Nothing
// ever reads past the file.
//
// Errors: NOT_FOUND (or the errno's code) when a file cannot be opened, INVALID_ARGUMENT for
// anything malformed; every message names the file and the problem.
//
// Thread safety: both classes are immutable after construction; const methods may be called from
// any number of threads.

#ifndef CATSERVE_ENGINE_MODEL_SAFETENSORS_H_
#define CATSERVE_ENGINE_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace catserve::engine {

// The element types the engine reads. Other safetensors dtypes (F64, U8, BOOL, F8_*, ...) are
// rejected by Open, naming the dtype.
enum class DType { kF32, kF16, kBF16, kI32, kI64 };

// The safetensors spelling: "F32", "F16", "BF16", "I32", "I64".
std::string_view DTypeName(DType dtype);

// Bytes per element.
size_t DTypeSize(DType dtype);

// One tensor inside a mapped file. `data` is borrowed: it stays valid as long as the
// SafetensorsFile (or TensorSet) it came from is alive, moves included. It has no alignment
// guarantee beyond 1 byte, and holds little-endian elements in row-major order.
struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // empty for a scalar
  const std::byte* data;
  size_t nbytes;
};

// One memory-mapped safetensors file (read-only, MAP_PRIVATE). Move-only; unmaps on destruction.
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  // nullptr if the file holds no tensor of that name.
  const TensorInfo* Find(std::string_view name) const;
  // All tensors, sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // The "__metadata__" object; empty when the header has none.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  void Unmap();

  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Every tensor of a checkpoint, possibly spread over shards, behind one name lookup. Move-only.
class TensorSet {
 public:
  // Opens dir/model.safetensors if it exists; otherwise dir/model.safetensors.index.json and
  // every shard its "weight_map" names (shard names are plain file names inside dir). Rejects
  // with INVALID_ARGUMENT: an index that is not {"weight_map": {tensor: shard}}, a shard name
  // that leaves dir, a tensor the index places in a shard that does not hold it, and a tensor
  // name present in two shards. NOT_FOUND when neither file exists or a named shard is missing.
  // Tensors a shard holds but the index does not list are still part of the set.
  static absl::StatusOr<TensorSet> OpenModelDir(const std::filesystem::path& dir);
  // A set holding the tensors of one file.
  static absl::StatusOr<TensorSet> OpenFile(const std::filesystem::path& file);

  TensorSet(TensorSet&&) noexcept = default;
  TensorSet& operator=(TensorSet&&) noexcept = default;

  // nullptr if no file of the set holds that name.
  const TensorInfo* Find(std::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  // The file of the set that holds tensor `name`, for messages; empty if none does.
  std::string FileOf(std::string_view name) const;
  // The directory or file the set was opened from.
  const std::string& source() const { return source_; }
  // The bytes of every tensor of every file: their data regions, which tensors tile exactly.
  uint64_t tensor_bytes() const;

  // Converts one tensor to fp32 after checking that it exists (else NOT_FOUND), that its shape is
  // exactly `shape` and that its dtype is F32, F16 or BF16 (else INVALID_ARGUMENT, e.g. "tensor
  // model.norm.weight has shape [32] but the config implies [64]"). The conversion is exact.
  absl::StatusOr<std::vector<float>> ReadFloat(std::string_view name,
                                               absl::Span<const int64_t> shape) const;
  // Reads an I32 or I64 tensor of any shape, flattened. I64 values outside the int32 range and
  // any other dtype are INVALID_ARGUMENT; a missing tensor is NOT_FOUND.
  absl::StatusOr<std::vector<int32_t>> ReadInt32(std::string_view name) const;

 private:
  TensorSet() = default;
  // Indexes the tensors of files_; INVALID_ARGUMENT when two files hold the same name.
  absl::Status BuildIndex();

  std::string source_;  // the directory or file opened, for messages
  std::vector<SafetensorsFile> files_;
  // Points into files_[i].tensors(), whose buffers do not move when files_ or *this move.
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_SAFETENSORS_H_
