#ifndef CATSERVE_ENGINE_CUDA_DEVICE_WEIGHTS_H_
#define CATSERVE_ENGINE_CUDA_DEVICE_WEIGHTS_H_

#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cuda/device_buffer.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace catserve::engine::cuda {

// One block on the device: linear weights and embedding tables in bf16, norm weights and biases
// in fp32 (they are tiny and enter fp32 arithmetic). Empty buffers where the host block has none.
struct DeviceBlock {
  int width = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int intermediate = 0;
  float norm_eps = 0;
  float qk_norm_eps = 0;
  DeviceBuffer attn_norm, qkv, qkv_bias, q_norm, k_norm, o, mlp_norm, gate_up, down;

  int qkv_rows() const { return (heads + 2 * kv_heads) * head_dim; }
};

// ModelWeights on the device (same tensors, same layouts as weights.h).
struct DeviceWeights {
  // Compressor.
  DeviceBuffer wte, pos_tokens, adaptive_tokens;
  std::vector<DeviceBlock> compressor_layers;
  DeviceBuffer compressor_norm;
  std::map<int, DeviceBuffer> proj_fx;  // by chunk size, [D, l * Dc]
  // Decoder.
  DeviceBuffer embeddings, separator, adaptive_token;
  std::vector<DeviceBlock> layers;
  DeviceBuffer norm;
  DeviceBuffer lm_head;  // empty when tied: embeddings serve
  size_t bytes = 0;      // device memory all of it takes

  const uint16_t* lm_head_data() const {
    return lm_head.empty() ? embeddings.as<uint16_t>() : lm_head.as<uint16_t>();
  }
};

// Copies the weights to the current device (bf16 where said above).
absl::StatusOr<DeviceWeights> UploadWeights(const ModelConfig& config, const ModelWeights& weights);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_DEVICE_WEIGHTS_H_
