#ifndef CATSERVE_ENGINE_MODEL_WEIGHTS_H_
#define CATSERVE_ENGINE_MODEL_WEIGHTS_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"

namespace catserve::engine {

// One pre-norm transformer block in fp32. Linear weights are [out, in] (y = W x). For speed the
// q/k/v projections are stacked into `qkv` ([(H + 2*Hkv) * head_dim, width]) and gate/up into
// `gate_up` ([2 * intermediate, width]); the math is unchanged.
struct BlockWeights {
  int width = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  float norm_eps = 0;            // epsilon of attn_norm and mlp_norm
  float qk_norm_eps = 0;         // epsilon of q_norm and k_norm
  std::vector<float> attn_norm;  // [width]
  std::vector<float> qkv;        // [(heads + 2 * kv_heads) * head_dim, width]
  std::vector<float> qkv_bias;   // same rows as qkv, or empty
  std::vector<float> q_norm;     // [head_dim], or empty without qk_norm
  std::vector<float> k_norm;     // [head_dim], or empty without qk_norm
  std::vector<float> o;          // [width, heads * head_dim]
  std::vector<float> mlp_norm;   // [width]
  std::vector<float> gate_up;    // [2 * intermediate, width]
  std::vector<float> down;       // [width, intermediate]

  int qkv_rows() const { return (heads + 2 * kv_heads) * head_dim; }
};

struct CompressorWeights {
  std::vector<float> wte;              // [V, Dc]
  std::vector<float> pos_tokens;       // [P, Dc]
  std::vector<float> adaptive_tokens;  // [M + 1, Dc], row = chunk size
  std::vector<BlockWeights> layers;
  std::vector<float> norm;  // [Dc]
  // proj_fx resized for each served chunk size l: [D, l * Dc] (docs/CAT_MODEL.md, bilinear,
  // align_corners=false), computed once at load.
  std::map<int, std::vector<float>> proj_fx;
};

struct DecoderWeights {
  std::vector<float> embeddings;      // [V, D]
  std::vector<float> separator;       // [D]
  std::vector<float> adaptive_token;  // [M + 1, D], row = chunk size
  std::vector<BlockWeights> layers;
  std::vector<float> norm;     // [D]
  std::vector<float> lm_head;  // [V, D]; a copy of embeddings when tied
};

struct ModelWeights {
  CompressorWeights compressor;
  DecoderWeights decoder;
};

// Loads every tensor the config implies, checking each by name, shape and dtype, and rejects
// tensors the config does not imply. All float dtypes are converted to fp32. With
// `check_finite`, a NaN or infinite weight is INVALID_ARGUMENT naming the file, the tensor and the
// element.
absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config, const TensorSet& tensors,
                                              bool check_finite = false);

// Whether LoadModel scans every weight for NaN and infinity: kAuto does for models whose tensor
// data is under kAutoWeightCheckMaxBytes (the scan costs a pass over the weights at load).
enum class WeightCheck { kAuto, kOn, kOff };
inline constexpr uint64_t kAutoWeightCheckMaxBytes = uint64_t{1} << 30;
// Whether `check` scans a model of `tensor_bytes` bytes of tensor data.
bool ChecksWeights(WeightCheck check, uint64_t tensor_bytes);

// A model directory's config.json and safetensors weights, checked against each other. Before
// any weight is read, the config's footprint (model_footprint.h) is checked against the
// weights' size and the memory limit, so a config asking for more than the files hold fails
// fast with a message naming config.json. Every error names the file at fault.
struct Model {
  ModelConfig config;
  ModelWeights weights;
};
absl::StatusOr<Model> LoadModel(const std::filesystem::path& model_dir,
                                WeightCheck check = WeightCheck::kAuto);

// proj_fx ([D, M * Dc]) resized to [D, l * Dc] by bilinear interpolation with
// align_corners=false along columns only (rows keep their size).
std::vector<float> ResizeProjFx(const std::vector<float>& proj_fx, int rows, int src_cols,
                                int dst_cols);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_WEIGHTS_H_
