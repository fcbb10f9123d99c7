#include "engine/model/config.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace catserve::engine {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// How a JSON value is shown in an error message.
std::string Describe(const Value& value) {
  switch (value.kind_case()) {
    case Value::kNumberValue:
      return absl::StrCat(value.number_value());
    case Value::kStringValue:
      return absl::StrCat("\"", absl::CHexEscape(value.string_value()), "\"");
    case Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    case Value::kNullValue:
    case Value::KIND_NOT_SET:
      break;
  }
  return "null";
}

bool IsPowerOfTwo(int v) { return v > 0 && (v & (v - 1)) == 0; }

// 256 * ceil(int(width * ratio * 2 / 3) / 256), the reference's SwiGLU width rule, evaluated in
// the same order and precision (double) as the Python expression. Exact for the widths and ratios
// of kIntRanges and kRealRanges (below), which Validate checks before calling it.
int64_t SwiGluWidth(int width, double ratio) {
  const int64_t truncated = static_cast<int64_t>(width * ratio * 2 / 3);
  return 256 * ((truncated + 255) / 256);
}

// Reads typed fields out of the top-level object, keeping the first error. A missing key or a
// null value leaves the output untouched, so the caller's default stands.
class FieldReader {
 public:
  FieldReader(const Struct& object, std::string_view file) : object_(object), file_(file) {}

  void Int(std::string_view key, int* out) {
    const Value* value = Find(key);
    if (value == nullptr) return;
    const double number = value->number_value();
    if (value->kind_case() != Value::kNumberValue || std::trunc(number) != number) {
      Fail(key, *value, "must be an integer");
      return;
    }
    if (number < std::numeric_limits<int>::min() || number > std::numeric_limits<int>::max()) {
      Fail(key, *value, "is outside the 32-bit integer range");
      return;
    }
    *out = static_cast<int>(number);
  }

  void OptionalInt(std::string_view key, std::optional<int>* out) {
    if (Find(key) == nullptr) return;
    int v = 0;
    Int(key, &v);
    if (status_.ok()) *out = v;
  }

  void Double(std::string_view key, double* out) {
    const Value* value = Find(key);
    if (value == nullptr) return;
    if (value->kind_case() != Value::kNumberValue) {
      Fail(key, *value, "must be a number");
      return;
    }
    *out = value->number_value();
  }

  void OptionalDouble(std::string_view key, std::optional<double>* out) {
    if (Find(key) == nullptr) return;
    double v = 0;
    Double(key, &v);
    if (status_.ok()) *out = v;
  }

  void Bool(std::string_view key, bool* out) {
    const Value* value = Find(key);
    if (value == nullptr) return;
    if (value->kind_case() != Value::kBoolValue) {
      Fail(key, *value, "must be true or false");
      return;
    }
    *out = value->bool_value();
  }

  const absl::Status& status() const { return status_; }

 private:
  const Value* Find(std::string_view key) const {
    auto it = object_.fields().find(std::string(key));
    if (it == object_.fields().end() || it->second.kind_case() == Value::kNullValue) {
      return nullptr;
    }
    return &it->second;
  }

  void Fail(std::string_view key, const Value& value, std::string_view rule) {
    if (!status_.ok()) return;
    status_ = absl::InvalidArgumentError(
        absl::StrFormat("%s: %s (%s) %s", file_, key, Describe(value), rule));
  }

  const Struct& object_;
  std::string_view file_;
  absl::Status status_;
};

// The sane range of every size and real-valued field, checked before anything is sized from the
// config: wide enough for any real CAT model, narrow enough that a config.json cannot make the
// loader allocate absurd amounts before the weights are opened, and that products of two sizes
// (vocab_size * hidden_size, max_chunk_size * compressor_hidden_size, ...) fit in 64 bits with
// room to spare. A new field gets a row here.
constexpr int kMaxHeads = 1024;

struct IntRange {
  const char* name;
  int ModelConfig::*field;
  int min;
  int max;
};
constexpr IntRange kIntRanges[] = {
    {"vocab_size", &ModelConfig::vocab_size, 1, 1 << 22},
    {"hidden_size", &ModelConfig::hidden_size, 1, 1 << 16},
    {"num_hidden_layers", &ModelConfig::num_hidden_layers, 1, 1024},
    {"num_heads", &ModelConfig::num_heads, 1, kMaxHeads},
    {"num_kv_heads", &ModelConfig::num_kv_heads, 1, kMaxHeads},
    {"compressor_hidden_size", &ModelConfig::compressor_hidden_size, 1, 1 << 16},
    {"compressor_num_layers", &ModelConfig::compressor_num_layers, 1, 1024},
    {"compressor_num_heads", &ModelConfig::compressor_num_heads, 1, kMaxHeads},
    {"max_chunk_size", &ModelConfig::max_chunk_size, 1, 1024},
    {"min_train_chunk_size", &ModelConfig::min_train_chunk_size, 1, 1024},
    {"max_position_embeddings", &ModelConfig::max_position_embeddings, 1, 1 << 20},
};
// intermediate_size, and the SwiGLU widths hidden_ratio implies without it.
constexpr int kMaxIntermediate = 1 << 20;

constexpr double kMinEps = 1e-12;
constexpr double kMaxEps = 1.0;  // the test fixtures use up to 0.3 to make each epsilon visible

struct RealRange {
  const char* name;
  double ModelConfig::*field;
  double min;
  double max;
};
constexpr RealRange kRealRanges[] = {
    {"rope_theta", &ModelConfig::rope_theta, 1.0, 1e12},
    {"norm_eps", &ModelConfig::norm_eps, kMinEps, kMaxEps},
    {"qk_norm_eps", &ModelConfig::qk_norm_eps, kMinEps, kMaxEps},
    {"hidden_ratio", &ModelConfig::hidden_ratio, 1.0 / 64, 64.0},
};

// Checks every rule of the header comment in config.h, in a fixed order so that the first broken
// rule is the one reported: the ranges first, so the later rules never see an absurd value.
absl::Status Validate(const ModelConfig& c, std::string_view file) {
  auto invalid = [file](std::string_view message) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", file, message));
  };
  for (const IntRange& range : kIntRanges) {
    const int value = c.*range.field;
    if (value < range.min || value > range.max) {
      return invalid(
          absl::StrFormat("%s (%d) must lie in [%d, %d]", range.name, value, range.min, range.max));
    }
  }
  if (c.compressor_kv_heads() < 1 || c.compressor_kv_heads() > kMaxHeads) {
    return invalid(absl::StrFormat("compressor_num_kv_heads (%d) must lie in [1, %d]",
                                   c.compressor_kv_heads(), kMaxHeads));
  }
  if (c.intermediate_size.has_value() &&
      (*c.intermediate_size < 1 || *c.intermediate_size > kMaxIntermediate)) {
    return invalid(absl::StrFormat("intermediate_size (%d) must lie in [1, %d]",
                                   *c.intermediate_size, kMaxIntermediate));
  }
  if (c.compressor_intermediate.has_value() &&
      (*c.compressor_intermediate < 1 || *c.compressor_intermediate > kMaxIntermediate)) {
    return invalid(absl::StrFormat("compressor_intermediate_size (%d) must lie in [1, %d]",
                                   *c.compressor_intermediate, kMaxIntermediate));
  }
  for (const RealRange& range : kRealRanges) {
    const double value = c.*range.field;
    if (!(value >= range.min && value <= range.max)) {  // NaN fails too
      return invalid(
          absl::StrFormat("%s (%g) must lie in [%g, %g]", range.name, value, range.min, range.max));
    }
  }
  // The compressor's epsilons default to the decoder's, which the table has checked.
  for (auto [name, value] :
       {std::pair<const char*, double>{"compressor_norm_eps", c.compressor_eps()},
        {"compressor_qk_norm_eps", c.compressor_qk_eps()}}) {
    if (!(value >= kMinEps && value <= kMaxEps)) {
      return invalid(
          absl::StrFormat("%s (%g) must lie in [%g, %g]", name, value, kMinEps, kMaxEps));
    }
  }
  // The MLP widths that come from the hidden_ratio rule rather than from a key.
  std::vector<std::pair<const char*, int>> rule_widths;
  if (!c.intermediate_size.has_value()) rule_widths.push_back({"hidden_size", c.hidden_size});
  if (!c.intermediate_size.has_value() && !c.compressor_intermediate.has_value()) {
    rule_widths.push_back({"compressor_hidden_size", c.compressor_hidden_size});
  }
  for (auto [name, width] : rule_widths) {
    const int64_t mlp = SwiGluWidth(width, c.hidden_ratio);
    if (mlp < 1 || mlp > kMaxIntermediate) {
      return invalid(absl::StrFormat(
          "hidden_ratio (%g) with %s (%d) gives an MLP width of %d, outside [1, %d]; set "
          "hidden_ratio or intermediate_size",
          c.hidden_ratio, name, width, mlp, kMaxIntermediate));
    }
  }
  if (c.hidden_size % c.num_heads != 0) {
    return invalid(
        absl::StrFormat("num_heads (%d) must divide hidden_size (%d)", c.num_heads, c.hidden_size));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return invalid(absl::StrFormat("num_kv_heads (%d) must divide num_heads (%d)", c.num_kv_heads,
                                   c.num_heads));
  }
  if (c.head_dim() % 2 != 0) {
    return invalid(
        absl::StrFormat("head_dim = hidden_size / num_heads (%d / %d = %d) must be even for RoPE",
                        c.hidden_size, c.num_heads, c.head_dim()));
  }
  if (c.compressor_hidden_size % c.compressor_num_heads != 0) {
    return invalid(
        absl::StrFormat("compressor_num_heads (%d) must divide compressor_hidden_size (%d)",
                        c.compressor_num_heads, c.compressor_hidden_size));
  }
  if (c.compressor_num_heads % c.compressor_kv_heads() != 0) {
    return invalid(
        absl::StrFormat("compressor_num_kv_heads (%d) must divide compressor_num_heads (%d)",
                        c.compressor_kv_heads(), c.compressor_num_heads));
  }
  if (c.compressor_head_dim() % 2 != 0) {
    return invalid(absl::StrFormat(
        "compressor head dim = compressor_hidden_size / compressor_num_heads (%d / %d = %d) must "
        "be even for RoPE",
        c.compressor_hidden_size, c.compressor_num_heads, c.compressor_head_dim()));
  }
  if (!IsPowerOfTwo(c.max_chunk_size)) {
    return invalid(absl::StrFormat("max_chunk_size (%d) must be a power of two", c.max_chunk_size));
  }
  if (!IsPowerOfTwo(c.min_train_chunk_size)) {
    return invalid(absl::StrFormat("min_train_chunk_size (%d) must be a power of two",
                                   c.min_train_chunk_size));
  }
  if (c.min_train_chunk_size > c.max_chunk_size) {
    return invalid(absl::StrFormat("min_train_chunk_size (%d) must be <= max_chunk_size (%d)",
                                   c.min_train_chunk_size, c.max_chunk_size));
  }
  if (c.max_position_embeddings < c.max_chunk_size) {
    return invalid(absl::StrFormat("max_position_embeddings (%d) must be >= max_chunk_size (%d)",
                                   c.max_position_embeddings, c.max_chunk_size));
  }
  const std::pair<const char*, int> token_ids[] = {
      {"pad_token_id", c.pad_token_id},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
  };
  for (const auto& [name, value] : token_ids) {
    if (value < 0 || value >= c.vocab_size) {
      return invalid(absl::StrFormat("%s (%d) must lie in [0, vocab_size) = [0, %d)", name, value,
                                     c.vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseNamed(std::string_view json_text, std::string_view file) {
  Value root;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json_text.data(), json_text.size()), &root);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not valid JSON: %s", file,
                        std::string(parsed.message().substr(0, parsed.message().find('\n')))));
  }
  if (root.kind_case() != Value::kStructValue) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: must be a JSON object, got %s", file, Describe(root)));
  }
  const Struct& object = root.struct_value();

  auto model_type = object.fields().find("model_type");
  if (model_type == object.fields().end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: model_type is missing; must be \"cat\"", file));
  }
  if (model_type->second.kind_case() != Value::kStringValue ||
      model_type->second.string_value() != "cat") {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: model_type (%s) must be \"cat\"", file, Describe(model_type->second)));
  }

  ModelConfig c;
  std::optional<int> num_kv_heads, compressor_hidden_size, compressor_num_layers,
      compressor_num_heads, dim_fx;
  FieldReader reader(object, file);
  reader.Int("vocab_size", &c.vocab_size);
  reader.Int("hidden_size", &c.hidden_size);
  reader.Int("num_hidden_layers", &c.num_hidden_layers);
  reader.Int("num_heads", &c.num_heads);
  reader.OptionalInt("num_kv_heads", &num_kv_heads);
  reader.OptionalInt("compressor_hidden_size", &compressor_hidden_size);
  reader.OptionalInt("compressor_num_layers", &compressor_num_layers);
  reader.OptionalInt("compressor_num_heads", &compressor_num_heads);
  reader.OptionalInt("dim_fx", &dim_fx);
  reader.Int("max_chunk_size", &c.max_chunk_size);
  reader.Int("min_train_chunk_size", &c.min_train_chunk_size);
  reader.Int("max_position_embeddings", &c.max_position_embeddings);
  reader.Double("rope_theta", &c.rope_theta);
  reader.Double("norm_eps", &c.norm_eps);
  reader.Double("hidden_ratio", &c.hidden_ratio);
  reader.OptionalInt("intermediate_size", &c.intermediate_size);
  reader.Bool("qk_norm", &c.qk_norm);
  reader.Bool("qkv_bias", &c.qkv_bias);
  reader.Bool("tie_word_embeddings", &c.tie_word_embeddings);
  reader.Int("pad_token_id", &c.pad_token_id);
  reader.Int("bos_token_id", &c.bos_token_id);
  reader.Int("eos_token_id", &c.eos_token_id);
  reader.Double("qk_norm_eps", &c.qk_norm_eps);
  reader.OptionalInt("compressor_num_kv_heads", &c.compressor_num_kv_heads);
  reader.OptionalInt("compressor_intermediate_size", &c.compressor_intermediate);
  reader.OptionalDouble("compressor_norm_eps", &c.compressor_norm_eps);
  reader.Bool("compressor_qk_norm", &c.compressor_qk_norm);
  reader.OptionalDouble("compressor_qk_norm_eps", &c.compressor_qk_norm_eps);
  reader.Bool("compressor_qkv_bias", &c.compressor_qkv_bias);
  if (!reader.status().ok()) return reader.status();

  c.num_kv_heads = num_kv_heads.value_or(c.num_heads);
  c.compressor_hidden_size = compressor_hidden_size.value_or(c.hidden_size / 2);
  c.compressor_num_layers = compressor_num_layers.value_or(std::max(1, c.num_hidden_layers / 4));
  c.compressor_num_heads = compressor_num_heads.value_or(std::max(1, c.num_heads / 2));

  // fx vectors are fed to the decoder as tokens, so their width is not a free parameter.
  if (dim_fx.has_value() && *dim_fx != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: dim_fx (%d) must equal hidden_size (%d)",
                                                      file, *dim_fx, c.hidden_size));
  }
  if (absl::Status status = Validate(c, file); !status.ok()) return status;
  return c;
}

}  // namespace

int ModelConfig::compressor_kv_heads() const {
  return compressor_num_kv_heads.value_or(compressor_num_heads);
}

double ModelConfig::compressor_eps() const { return compressor_norm_eps.value_or(norm_eps); }

double ModelConfig::compressor_qk_eps() const {
  return compressor_qk_norm_eps.value_or(qk_norm_eps);
}

int ModelConfig::head_dim() const { return hidden_size / num_heads; }

int ModelConfig::compressor_head_dim() const {
  return compressor_hidden_size / compressor_num_heads;
}

int ModelConfig::decoder_intermediate_size() const {
  if (intermediate_size.has_value()) return *intermediate_size;
  return static_cast<int>(SwiGluWidth(hidden_size, hidden_ratio));
}

int ModelConfig::compressor_intermediate_size() const {
  if (compressor_intermediate.has_value()) return *compressor_intermediate;
  if (intermediate_size.has_value()) return *intermediate_size;
  return static_cast<int>(SwiGluWidth(compressor_hidden_size, hidden_ratio));
}

std::vector<int> ModelConfig::chunk_sizes() const {
  std::vector<int> sizes;
  if (min_train_chunk_size <= 0) return sizes;
  for (int64_t l = min_train_chunk_size; l <= max_chunk_size; l *= 2) {
    sizes.push_back(static_cast<int>(l));
  }
  return sizes;
}

bool ModelConfig::serves_chunk_size(int l) const {
  return IsPowerOfTwo(l) && l >= min_train_chunk_size && l <= max_chunk_size;
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text) {
  return ParseNamed(json_text, "config.json");
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "config.json";
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int error = errno;
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat("cannot open ", path.string(), ": ", std::strerror(error)));
  }
  // Real configs are a few KB; a bigger file is not read into memory whole.
  constexpr size_t kMaxConfigBytes = 1 << 20;
  std::string text;
  char buffer[1 << 14];
  size_t n;
  while (text.size() <= kMaxConfigBytes && (n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    text.append(buffer, n);
  }
  const int error = std::ferror(file) != 0 ? errno : 0;
  std::fclose(file);
  if (error != 0) {
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat("cannot read ", path.string(), ": ", std::strerror(error)));
  }
  if (text.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: larger than %d bytes, which no config.json is", path.string(), kMaxConfigBytes));
  }
  return ParseNamed(text, path.string());
}

}  // namespace catserve::engine
