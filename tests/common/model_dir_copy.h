// ModelDirCopy: a scratch copy of a fixture model directory with the edits that tests of bad
// model directories make (a config value, a weight, the safetensors header length), removed when
// the copy goes out of scope. Header-only: the engine and the server tests share it.
#ifndef CATSERVE_TESTS_COMMON_MODEL_DIR_COPY_H_
#define CATSERVE_TESTS_COMMON_MODEL_DIR_COPY_H_

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/safetensors.h"
#include "gtest/gtest.h"

namespace catserve::testing {

class ModelDirCopy {
 public:
  // Copies every file of `fixture` into a fresh directory named after `name` and this process.
  ModelDirCopy(const std::filesystem::path& fixture, const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              absl::StrCat("catserve_model_", name, "_", getpid())) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
    std::filesystem::copy(fixture, path_, std::filesystem::copy_options::recursive);
  }
  ~ModelDirCopy() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ModelDirCopy(const ModelDirCopy&) = delete;
  ModelDirCopy& operator=(const ModelDirCopy&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path file(const std::string& name) const { return path_ / name; }

  std::string Read(const std::string& name) const {
    std::ifstream in(file(name), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  void Write(const std::string& name, const std::string& bytes) const {
    std::ofstream(file(name), std::ios::binary | std::ios::trunc) << bytes;
  }
  void Append(const std::string& name, const std::string& bytes) const {
    Write(name, Read(name) + bytes);
  }

  // Sets config.json's top-level `key` to the JSON text `value`. The fixtures' config.json has
  // one scalar key per line, which is all this edits.
  void SetConfig(const std::string& key, const std::string& value) const {
    std::string text = Read("config.json");
    const std::string quoted = absl::StrCat("\"", key, "\":");
    const size_t at = text.find(quoted);
    if (at == std::string::npos) {
      text.insert(text.find('{') + 1, absl::StrCat(quoted, " ", value, ","));
    } else {
      const size_t begin = at + quoted.size();
      text.replace(begin, text.find_first_of(",\n}", begin) - begin, " " + value);
    }
    Write("config.json", text);
  }

  // Overwrites element `index` of `tensor` in model.safetensors with `element` (raw bytes of
  // the tensor's dtype).
  void OverwriteElement(const std::string& tensor, size_t index, const std::string& element) const {
    std::string tensor_bytes;
    {
      absl::StatusOr<engine::SafetensorsFile> weights =
          engine::SafetensorsFile::Open(file("model.safetensors"));
      ASSERT_TRUE(weights.ok()) << weights.status();
      const engine::TensorInfo* info = weights->Find(tensor);
      ASSERT_NE(info, nullptr) << tensor;
      ASSERT_EQ(element.size(), engine::DTypeSize(info->dtype));
      tensor_bytes.assign(reinterpret_cast<const char*>(info->data), info->nbytes);
    }
    std::string bytes = Read("model.safetensors");
    const size_t at = bytes.find(tensor_bytes);
    ASSERT_NE(at, std::string::npos);
    ASSERT_EQ(at, bytes.rfind(tensor_bytes)) << tensor << "'s bytes are not unique in the file";
    bytes.replace(at + index * element.size(), element.size(), element);
    Write("model.safetensors", bytes);
  }

  // Lowers model.safetensors' 8-byte header length by one.
  void ShortenHeaderLength() const {
    std::string bytes = Read("model.safetensors");
    uint64_t length;
    std::memcpy(&length, bytes.data(), sizeof(length));
    --length;
    std::memcpy(bytes.data(), &length, sizeof(length));
    Write("model.safetensors", bytes);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_MODEL_DIR_COPY_H_
