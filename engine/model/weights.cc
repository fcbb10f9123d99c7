#include "engine/model/weights.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/model_footprint.h"

namespace catserve::engine {
namespace {

// Reads tensors by name and remembers which were read, so unexpected extras can be reported.
class TensorReader {
 public:
  TensorReader(const TensorSet& tensors, bool check_finite)
      : tensors_(tensors), check_finite_(check_finite) {}

  absl::Status Read(const std::string& name, std::vector<int64_t> shape, std::vector<float>& out) {
    absl::StatusOr<std::vector<float>> data = tensors_.ReadFloat(name, shape);
    if (!data.ok()) return data.status();
    if (check_finite_) {
      auto bad =
          std::find_if(data->begin(), data->end(), [](float x) { return !std::isfinite(x); });
      if (bad != data->end()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tensor %s element %d is %s; the weight check refuses NaN and infinite weights",
            tensors_.FileOf(name), name, bad - data->begin(),
            std::isnan(*bad) ? "NaN" : (*bad > 0 ? "+inf" : "-inf")));
      }
    }
    out = *std::move(data);
    used_.insert(name);
    return absl::OkStatus();
  }

  absl::Status CheckNoExtras() const {
    std::vector<std::string> extras;
    for (const std::string& name : tensors_.names()) {
      if (!used_.contains(name)) extras.push_back(name);
    }
    if (extras.empty()) return absl::OkStatus();
    if (extras.size() > 5) {
      size_t more = extras.size() - 5;
      extras.resize(5);
      extras.push_back(absl::StrCat("and ", more, " more"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(tensors_.source(), ": holds tensors the config does not imply: ",
                     absl::StrJoin(extras, ", "), " (check config.json matches the weights)"));
  }

 private:
  const TensorSet& tensors_;
  const bool check_finite_;
  std::set<std::string> used_;
};

// Stacks row-major matrices with the same column count.
std::vector<float> StackRows(std::initializer_list<const std::vector<float>*> parts) {
  std::vector<float> out;
  for (const auto* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// The shape and options of one block, from the decoder's or the compressor's config keys.
struct BlockSpec {
  int width, heads, kv_heads, intermediate;
  bool qkv_bias, qk_norm;
  double norm_eps, qk_norm_eps;
};

absl::Status LoadBlock(TensorReader& reader, const std::string& prefix, const std::string& attn,
                       const std::string& mlp, const BlockSpec& spec, BlockWeights& b) {
  const int width = spec.width, heads = spec.heads, kv_heads = spec.kv_heads;
  const int intermediate = spec.intermediate;
  const bool qkv_bias = spec.qkv_bias, qk_norm = spec.qk_norm;
  b.width = width;
  b.heads = heads;
  b.kv_heads = kv_heads;
  b.head_dim = width / heads;
  b.intermediate = intermediate;
  b.norm_eps = static_cast<float>(spec.norm_eps);
  b.qk_norm_eps = static_cast<float>(spec.qk_norm_eps);
  const int64_t hd = b.head_dim;
  std::vector<float> q, k, v, gate, up;
  auto r = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float>& out) {
    return reader.Read(prefix + name, std::move(shape), out);
  };
  absl::Status s;
  if (!(s = r("attn_norm.weight", {width}, b.attn_norm)).ok()) return s;
  if (!(s = r(attn + "q_proj.weight", {heads * hd, width}, q)).ok()) return s;
  if (!(s = r(attn + "k_proj.weight", {kv_heads * hd, width}, k)).ok()) return s;
  if (!(s = r(attn + "v_proj.weight", {kv_heads * hd, width}, v)).ok()) return s;
  if (!(s = r(attn + "o_proj.weight", {width, heads * hd}, b.o)).ok()) return s;
  b.qkv = StackRows({&q, &k, &v});
  if (qkv_bias) {
    std::vector<float> qb, kb, vb;
    if (!(s = r(attn + "q_proj.bias", {heads * hd}, qb)).ok()) return s;
    if (!(s = r(attn + "k_proj.bias", {kv_heads * hd}, kb)).ok()) return s;
    if (!(s = r(attn + "v_proj.bias", {kv_heads * hd}, vb)).ok()) return s;
    b.qkv_bias = StackRows({&qb, &kb, &vb});
  }
  if (qk_norm) {
    if (!(s = r(attn + "q_norm.weight", {hd}, b.q_norm)).ok()) return s;
    if (!(s = r(attn + "k_norm.weight", {hd}, b.k_norm)).ok()) return s;
  }
  if (!(s = r("mlp_norm.weight", {width}, b.mlp_norm)).ok()) return s;
  if (!(s = r(mlp + "gate_proj.weight", {intermediate, width}, gate)).ok()) return s;
  if (!(s = r(mlp + "up_proj.weight", {intermediate, width}, up)).ok()) return s;
  if (!(s = r(mlp + "down_proj.weight", {width, intermediate}, b.down)).ok()) return s;
  b.gate_up = StackRows({&gate, &up});
  return absl::OkStatus();
}

BlockSpec DecoderBlockSpec(const ModelConfig& c) {
  return {.width = c.hidden_size,
          .heads = c.num_heads,
          .kv_heads = c.num_kv_heads,
          .intermediate = c.decoder_intermediate_size(),
          .qkv_bias = c.qkv_bias,
          .qk_norm = c.qk_norm,
          .norm_eps = c.norm_eps,
          .qk_norm_eps = c.qk_norm_eps};
}

BlockSpec CompressorBlockSpec(const ModelConfig& c) {
  return {.width = c.compressor_hidden_size,
          .heads = c.compressor_num_heads,
          .kv_heads = c.compressor_kv_heads(),
          .intermediate = c.compressor_intermediate_size(),
          .qkv_bias = c.compressor_qkv_bias,
          .qk_norm = c.compressor_qk_norm,
          .norm_eps = c.compressor_eps(),
          .qk_norm_eps = c.compressor_qk_eps()};
}

}  // namespace

std::vector<float> ResizeProjFx(const std::vector<float>& proj_fx, int rows, int src_cols,
                                int dst_cols) {
  std::vector<float> out(static_cast<size_t>(rows) * dst_cols);
  const double scale = static_cast<double>(src_cols) / dst_cols;
  for (int x = 0; x < dst_cols; ++x) {
    // PyTorch computes the source coordinate in float32: s = scale * (x + 0.5) - 0.5.
    float s = static_cast<float>(scale) * (static_cast<float>(x) + 0.5f) - 0.5f;
    if (s < 0) s = 0;
    int x0 = static_cast<int>(std::floor(s));
    int x1 = std::min(x0 + 1, src_cols - 1);
    float w1 = s - static_cast<float>(x0);
    float w0 = 1.0f - w1;
    for (int row = 0; row < rows; ++row) {
      const float* src = proj_fx.data() + static_cast<size_t>(row) * src_cols;
      out[static_cast<size_t>(row) * dst_cols + x] = w0 * src[x0] + w1 * src[x1];
    }
  }
  return out;
}

absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& c, const TensorSet& tensors,
                                              bool check_finite) {
  TensorReader reader(tensors, check_finite);
  ModelWeights w;
  const int V = c.vocab_size, D = c.hidden_size, Dc = c.compressor_hidden_size;
  const int M = c.max_chunk_size, P = c.max_position_embeddings;
  absl::Status s;

  CompressorWeights& cw = w.compressor;
  if (!(s = reader.Read("model.compressor.wte.weight", {V, Dc}, cw.wte)).ok()) return s;
  if (!(s = reader.Read("model.compressor.pos_tokens.weight", {P, Dc}, cw.pos_tokens)).ok()) {
    return s;
  }
  if (!(s = reader.Read("model.compressor.adaptive_tokens.weight", {M + 1, Dc}, cw.adaptive_tokens))
           .ok()) {
    return s;
  }
  cw.layers.resize(c.compressor_num_layers);
  for (int i = 0; i < c.compressor_num_layers; ++i) {
    s = LoadBlock(reader, absl::StrCat("model.compressor.layers.", i, "."), "attn.", "mlp.",
                  CompressorBlockSpec(c), cw.layers[i]);
    if (!s.ok()) return s;
  }
  if (!(s = reader.Read("model.compressor.norm.weight", {Dc}, cw.norm)).ok()) return s;
  std::vector<float> proj_fx;
  if (!(s = reader.Read("model.compressor.proj_fx.weight", {D, static_cast<int64_t>(M) * Dc},
                        proj_fx))
           .ok()) {
    return s;
  }
  for (int l : c.chunk_sizes()) {
    cw.proj_fx[l] = l == M ? proj_fx : ResizeProjFx(proj_fx, D, M * Dc, l * Dc);
  }

  DecoderWeights& dw = w.decoder;
  if (!(s = reader.Read("model.embeddings.weight", {V, D}, dw.embeddings)).ok()) return s;
  if (!(s = reader.Read("model.separator.weight", {1, D}, dw.separator)).ok()) return s;
  if (!(s = reader.Read("model.adaptive_token.weight", {M + 1, D}, dw.adaptive_token)).ok()) {
    return s;
  }
  dw.layers.resize(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    s = LoadBlock(reader, absl::StrCat("model.layers.", i, "."), "attn.", "mlp.",
                  DecoderBlockSpec(c), dw.layers[i]);
    if (!s.ok()) return s;
  }
  if (!(s = reader.Read("model.norm.weight", {D}, dw.norm)).ok()) return s;
  if (c.tie_word_embeddings) {
    dw.lm_head = dw.embeddings;
  } else if (!(s = reader.Read("lm_head.weight", {V, D}, dw.lm_head)).ok()) {
    return s;
  }
  if (!(s = reader.CheckNoExtras()).ok()) return s;
  return w;
}

bool ChecksWeights(WeightCheck check, uint64_t tensor_bytes) {
  switch (check) {
    case WeightCheck::kOn:
      return true;
    case WeightCheck::kOff:
      return false;
    case WeightCheck::kAuto:
      break;
  }
  return tensor_bytes < kAutoWeightCheckMaxBytes;
}

absl::StatusOr<Model> LoadModel(const std::filesystem::path& model_dir, WeightCheck check) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<TensorSet> tensors = TensorSet::OpenModelDir(model_dir);
  if (!tensors.ok()) return tensors.status();
  const std::string config_file = (model_dir / "config.json").string();
  absl::StatusOr<ModelFootprint> footprint = ComputeModelFootprint(*config);
  if (!footprint.ok()) {
    return absl::Status(footprint.status().code(),
                        absl::StrCat(config_file, ": ", footprint.status().message()));
  }
  if (absl::Status s = CheckModelFootprint(*footprint, tensors->tensor_bytes(), MemoryLimitBytes(),
                                           config_file, tensors->source());
      !s.ok()) {
    return s;
  }
  absl::StatusOr<ModelWeights> weights =
      LoadModelWeights(*config, *tensors, ChecksWeights(check, tensors->tensor_bytes()));
  if (!weights.ok()) return weights.status();
  return Model{*std::move(config), *std::move(weights)};
}

}  // namespace catserve::engine
