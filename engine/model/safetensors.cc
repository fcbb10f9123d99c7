#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace catserve::engine {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is read in place");

using google::protobuf::Struct;
using google::protobuf::Value;

// A header (or a shard index) longer than this is treated as corrupt rather than parsed.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// JSON numbers are doubles; integers above this are not exact and no real file is that large.
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

absl::Status Invalid(std::string_view file, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s", file, message));
}

absl::Status ErrnoError(int error, std::string_view what, const std::filesystem::path& path) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrFormat("%s %s: %s", what, path.string(), std::strerror(error)));
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool ParseDType(std::string_view name, DType* dtype) {
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64}) {
    if (DTypeName(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

absl::StatusOr<Value> ParseJson(std::string_view text, std::string_view file,
                                std::string_view what) {
  Value root;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &root);
  if (!status.ok()) {
    return Invalid(file, absl::StrFormat(
                             "%s is not valid JSON: %s", what,
                             std::string(status.message().substr(0, status.message().find('\n')))));
  }
  if (root.kind_case() != Value::kStructValue) {
    return Invalid(file, absl::StrFormat("%s is not a JSON object", what));
  }
  return root;
}

// Reads a JSON list of non-negative integers, e.g. a shape or data_offsets.
bool ReadUintList(const Value& value, std::vector<uint64_t>* out) {
  if (value.kind_case() != Value::kListValue) return false;
  out->clear();
  for (const Value& item : value.list_value().values()) {
    const double v = item.number_value();
    if (item.kind_case() != Value::kNumberValue || std::trunc(v) != v || v < 0 ||
        v > kMaxExactInteger) {
      return false;
    }
    out->push_back(static_cast<uint64_t>(v));
  }
  return true;
}

// Fills *tensors (sorted by name) and *metadata from the bytes of a whole file, checking every
// promise of SafetensorsFile::Open.
absl::Status ParseFile(const std::byte* bytes, size_t size, std::string_view file,
                       std::vector<TensorInfo>* tensors,
                       std::map<std::string, std::string>* metadata) {
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, sizeof(header_len));
  if (header_len > kMaxHeaderBytes) {
    return Invalid(file, absl::StrFormat("header length %d is absurd (limit %d bytes)", header_len,
                                         kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return Invalid(file,
                   absl::StrFormat("header length %d runs past the end of the file (%d bytes)",
                                   header_len, size));
  }
  absl::StatusOr<Value> header = ParseJson(
      std::string_view(reinterpret_cast<const char*>(bytes + 8), header_len), file, "header");
  if (!header.ok()) return header.status();

  const std::byte* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (const auto& [name, entry] : header->struct_value().fields()) {
    if (name == "__metadata__") {
      if (entry.kind_case() != Value::kStructValue) {
        return Invalid(file, "__metadata__ is not an object of strings");
      }
      for (const auto& [key, value] : entry.struct_value().fields()) {
        if (value.kind_case() != Value::kStringValue) {
          return Invalid(file, absl::StrCat("__metadata__ value of \"", key, "\" is not a string"));
        }
        (*metadata)[key] = value.string_value();
      }
      continue;
    }
    const std::string tensor = absl::StrCat("tensor ", name);
    if (entry.kind_case() != Value::kStructValue) {
      return Invalid(file, absl::StrCat(tensor, ": entry is not an object"));
    }
    const auto& fields = entry.struct_value().fields();
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (fields.find(key) == fields.end()) {
        return Invalid(file, absl::StrCat(tensor, ": entry has no ", key));
      }
    }
    const Value& dtype_value = fields.at("dtype");
    TensorInfo info{name, DType::kF32, {}, nullptr, 0};
    if (dtype_value.kind_case() != Value::kStringValue) {
      return Invalid(file, absl::StrCat(tensor, ": dtype is not a string"));
    }
    if (!ParseDType(dtype_value.string_value(), &info.dtype)) {
      return Invalid(file,
                     absl::StrCat(tensor, ": unsupported dtype \"", dtype_value.string_value(),
                                  "\" (supported: F32, F16, BF16, I32, I64)"));
    }
    std::vector<uint64_t> dims;
    if (!ReadUintList(fields.at("shape"), &dims)) {
      return Invalid(file, absl::StrCat(tensor, ": shape must be a list of non-negative integers"));
    }
    uint64_t elements = 1;
    for (uint64_t d : dims) {
      if (__builtin_mul_overflow(elements, d, &elements)) {
        return Invalid(file, absl::StrCat(tensor, ": shape overflows 64 bits"));
      }
      info.shape.push_back(static_cast<int64_t>(d));
    }
    std::vector<uint64_t> offsets;
    if (!ReadUintList(fields.at("data_offsets"), &offsets) || offsets.size() != 2 ||
        offsets[0] > offsets[1]) {
      return Invalid(file, absl::StrCat(tensor,
                                        ": data_offsets must be two non-negative integers "
                                        "[begin, end] with begin <= end"));
    }
    if (offsets[1] > data_size) {
      return Invalid(file, absl::StrFormat("%s: data_offsets end %d is past the end of the data "
                                           "region (%d bytes); the file is truncated",
                                           tensor, offsets[1], data_size));
    }
    uint64_t expected = 0;
    if (__builtin_mul_overflow(elements, DTypeSize(info.dtype), &expected) ||
        expected != offsets[1] - offsets[0]) {
      return Invalid(file, absl::StrFormat("%s: data_offsets [%d, %d] hold %d bytes but shape %s "
                                           "of %s needs %d elements of %d bytes",
                                           tensor, offsets[0], offsets[1], offsets[1] - offsets[0],
                                           ShapeString(info.shape), DTypeName(info.dtype), elements,
                                           DTypeSize(info.dtype)));
    }
    info.data = data + offsets[0];
    info.nbytes = offsets[1] - offsets[0];
    tensors->push_back(std::move(info));
  }

  // The non-empty byte ranges, in data order, must tile the data region exactly: an overlap, a
  // gap or trailing bytes mean the header length or the offsets are wrong (a header length one
  // byte short shifts every tensor by one byte and leaves one byte over at the end).
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : *tensors) {
    if (t.nbytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->data < b->data; });
  uint64_t covered = 0;  // the data region's bytes [0, covered) belong to tensors seen so far
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* next : by_offset) {
    const uint64_t begin = static_cast<uint64_t>(next->data - data);
    if (begin < covered) {
      return Invalid(
          file, absl::StrFormat("tensors %s [%d, %d) and %s [%d, %d) overlap", prev->name,
                                prev->data - data, prev->data - data + prev->nbytes, next->name,
                                begin, begin + next->nbytes));
    }
    if (begin > covered) {
      return Invalid(
          file, absl::StrFormat("data region bytes [%d, %d) before tensor %s belong to no tensor; "
                                "the header length or data_offsets are wrong",
                                covered, begin, next->name));
    }
    covered = begin + next->nbytes;
    prev = next;
  }
  if (covered != data_size) {
    return Invalid(file,
                   absl::StrFormat("the last %d bytes of the %d-byte data region belong to no "
                                   "tensor; the header length or data_offsets are wrong",
                                   data_size - covered, data_size));
  }
  std::sort(tensors->begin(), tensors->end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return absl::OkStatus();
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf, or nan with its payload kept
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal mantissa * 2^-24 becomes the normal 1.f * 2^(p-24), p = top bit index
    const int p = std::bit_width(mantissa) - 1;
    bits = sign | (static_cast<uint32_t>(p + 103) << 23) | ((mantissa << (23 - p)) & 0x7fffffu);
  }
  return std::bit_cast<float>(bits);
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return ErrnoError(errno, "cannot open", path);
  std::string text;
  char buffer[1 << 14];
  size_t n;
  while (text.size() <= kMaxHeaderBytes && (n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    text.append(buffer, n);
  }
  const int error = std::ferror(file) != 0 ? errno : 0;
  std::fclose(file);
  if (error != 0) return ErrnoError(error, "cannot read", path);
  if (text.size() > kMaxHeaderBytes) {
    return Invalid(path.string(), absl::StrFormat("larger than %d bytes", kMaxHeaderBytes));
  }
  return text;
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return ErrnoError(error, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Invalid(name, "not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Invalid(
        name, absl::StrFormat("file is %d bytes, shorter than the 8-byte header length", size));
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_error = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) return ErrnoError(map_error, "cannot mmap", path);

  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = mapping;
  file.mapping_size_ = size;
  absl::Status status = ParseFile(static_cast<const std::byte*>(mapping), size, name,
                                  &file.tensors_, &file.metadata_);
  if (!status.ok()) return status;
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept
    : path_(std::move(other.path_)),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_size_(std::exchange(other.mapping_size_, 0)),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_size_ = std::exchange(other.mapping_size_, 0);
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { Unmap(); }

void SafetensorsFile::Unmap() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
  mapping_ = nullptr;
  mapping_size_ = 0;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

absl::StatusOr<TensorSet> TensorSet::OpenFile(const std::filesystem::path& file) {
  absl::StatusOr<SafetensorsFile> opened = SafetensorsFile::Open(file);
  if (!opened.ok()) return opened.status();
  TensorSet set;
  set.source_ = file.string();
  set.files_.push_back(*std::move(opened));
  if (absl::Status status = set.BuildIndex(); !status.ok()) return status;
  return set;
}

absl::StatusOr<TensorSet> TensorSet::OpenModelDir(const std::filesystem::path& dir) {
  const std::filesystem::path single = dir / "model.safetensors";
  const std::filesystem::path index = dir / "model.safetensors.index.json";
  std::error_code ignored;
  if (std::filesystem::exists(single, ignored)) return OpenFile(single);
  if (!std::filesystem::exists(index, ignored)) {
    return absl::NotFoundError(absl::StrCat(
        dir.string(), ": holds neither model.safetensors nor model.safetensors.index.json"));
  }
  const std::string index_name = index.string();
  absl::StatusOr<std::string> text = ReadTextFile(index);
  if (!text.ok()) return text.status();
  absl::StatusOr<Value> root = ParseJson(*text, index_name, "index");
  if (!root.ok()) return root.status();
  const auto& fields = root->struct_value().fields();
  auto weight_map = fields.find("weight_map");
  if (weight_map == fields.end() || weight_map->second.kind_case() != Value::kStructValue) {
    return Invalid(index_name, "weight_map is missing or not an object");
  }
  // shard file name -> the tensors the index places in it
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, shard] : weight_map->second.struct_value().fields()) {
    if (shard.kind_case() != Value::kStringValue) {
      return Invalid(index_name, absl::StrCat("weight_map entry of ", tensor, " is not a string"));
    }
    const std::string& shard_name = shard.string_value();
    if (shard_name.empty() || shard_name == "." || shard_name == ".." ||
        shard_name.find('/') != std::string::npos) {
      return Invalid(index_name, absl::StrCat("shard name \"", shard_name, "\" of tensor ", tensor,
                                              " is not a file name inside ", dir.string()));
    }
    shards[shard_name].push_back(tensor);
  }

  TensorSet set;
  set.source_ = dir.string();
  for (const auto& [shard_name, tensors] : shards) {
    absl::StatusOr<SafetensorsFile> shard = SafetensorsFile::Open(dir / shard_name);
    if (!shard.ok()) {
      return absl::Status(
          shard.status().code(),
          absl::StrCat(index_name, " names shard ", shard_name, ": ", shard.status().message()));
    }
    for (const std::string& tensor : tensors) {
      if (shard->Find(tensor) == nullptr) {
        return Invalid(index_name, absl::StrCat("weight_map places tensor ", tensor, " in shard ",
                                                shard_name, ", which does not hold it"));
      }
    }
    set.files_.push_back(*std::move(shard));
  }
  if (absl::Status status = set.BuildIndex(); !status.ok()) return status;
  return set;
}

absl::Status TensorSet::BuildIndex() {
  by_name_.clear();
  for (const SafetensorsFile& file : files_) {
    for (const TensorInfo& tensor : file.tensors()) {
      auto [it, inserted] = by_name_.emplace(tensor.name, &tensor);
      if (!inserted) {
        const std::filesystem::path* other = nullptr;
        for (const SafetensorsFile& f : files_) {
          if (f.Find(tensor.name) == it->second) other = &f.path();
        }
        return Invalid(source_, absl::StrCat("duplicate tensor ", tensor.name, " in shards ",
                                             other->filename().string(), " and ",
                                             file.path().filename().string()));
      }
    }
  }
  return absl::OkStatus();
}

const TensorInfo* TensorSet::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::string> TensorSet::names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, tensor] : by_name_) names.push_back(name);
  return names;
}

std::string TensorSet::FileOf(std::string_view name) const {
  for (const SafetensorsFile& file : files_) {
    if (file.Find(name) != nullptr) return file.path().string();
  }
  return "";
}

uint64_t TensorSet::tensor_bytes() const {
  uint64_t bytes = 0;
  for (const auto& [name, tensor] : by_name_) bytes += tensor->nbytes;
  return bytes;
}

absl::StatusOr<std::vector<float>> TensorSet::ReadFloat(std::string_view name,
                                                        absl::Span<const int64_t> shape) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: tensor %s not found", source_, name));
  }
  if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end())) {
    return Invalid(source_, absl::StrFormat("tensor %s has shape %s but the config implies %s",
                                            name, ShapeString(t->shape), ShapeString(shape)));
  }
  const size_t count = t->nbytes / DTypeSize(t->dtype);
  std::vector<float> out(count);
  switch (t->dtype) {
    case DType::kF32:
      if (count > 0) std::memcpy(out.data(), t->data, t->nbytes);
      return out;
    case DType::kF16:
    case DType::kBF16: {
      const bool half = t->dtype == DType::kF16;
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, t->data + 2 * i, sizeof(bits));
        out[i] = half ? HalfToFloat(bits) : BFloat16ToFloat(bits);
      }
      return out;
    }
    case DType::kI32:
    case DType::kI64:
      break;
  }
  return Invalid(
      source_,
      absl::StrFormat("tensor %s has dtype %s but a float dtype (F32, F16, BF16) is required", name,
                      DTypeName(t->dtype)));
}

absl::StatusOr<std::vector<int32_t>> TensorSet::ReadInt32(std::string_view name) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrFormat("%s: tensor %s not found", source_, name));
  }
  const size_t count = t->nbytes / DTypeSize(t->dtype);
  std::vector<int32_t> out(count);
  if (t->dtype == DType::kI32) {
    if (count > 0) std::memcpy(out.data(), t->data, t->nbytes);
    return out;
  }
  if (t->dtype != DType::kI64) {
    return Invalid(
        source_,
        absl::StrFormat("tensor %s has dtype %s but an integer dtype (I32, I64) is required", name,
                        DTypeName(t->dtype)));
  }
  for (size_t i = 0; i < count; ++i) {
    int64_t v;
    std::memcpy(&v, t->data + 8 * i, sizeof(v));
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max()) {
      return Invalid(
          source_,
          absl::StrFormat("tensor %s element %d (%d) is outside the int32 range", name, i, v));
    }
    out[i] = static_cast<int32_t>(v);
  }
  return out;
}

}  // namespace catserve::engine
