#include "engine/cuda/device_weights.h"

#include <tuple>
#include <utility>

namespace catserve::engine::cuda {

namespace {

// Uploads `host` to `dst` in bf16 (or fp32 when `bf16` is false), adding its bytes to `total`.
absl::Status Put(const std::vector<float>& host, bool bf16, DeviceBuffer& dst, size_t& total) {
  if (host.empty()) return absl::OkStatus();
  absl::Status s = bf16 ? dst.Upload(ToBf16(host)) : dst.Upload(host);
  total += dst.bytes();
  return s;
}

absl::StatusOr<DeviceBlock> PutBlock(const BlockWeights& b, size_t& total) {
  DeviceBlock d;
  d.width = b.width;
  d.heads = b.heads;
  d.kv_heads = b.kv_heads;
  d.head_dim = b.head_dim;
  d.intermediate = b.intermediate;
  d.norm_eps = b.norm_eps;
  d.qk_norm_eps = b.qk_norm_eps;
  for (auto [host, bf16, dst] :
       {std::tuple{&b.attn_norm, false, &d.attn_norm}, std::tuple{&b.qkv, true, &d.qkv},
        std::tuple{&b.qkv_bias, false, &d.qkv_bias}, std::tuple{&b.q_norm, false, &d.q_norm},
        std::tuple{&b.k_norm, false, &d.k_norm}, std::tuple{&b.o, true, &d.o},
        std::tuple{&b.mlp_norm, false, &d.mlp_norm}, std::tuple{&b.gate_up, true, &d.gate_up},
        std::tuple{&b.down, true, &d.down}}) {
    if (absl::Status s = Put(*host, bf16, *dst, total); !s.ok()) return s;
  }
  return d;
}

}  // namespace

absl::StatusOr<DeviceWeights> UploadWeights(const ModelConfig& config,
                                            const ModelWeights& weights) {
  DeviceWeights d;
  const CompressorWeights& cw = weights.compressor;
  const DecoderWeights& dw = weights.decoder;
  size_t& total = d.bytes;
  for (auto [host, bf16, dst] :
       {std::tuple{&cw.wte, true, &d.wte}, std::tuple{&cw.pos_tokens, true, &d.pos_tokens},
        std::tuple{&cw.adaptive_tokens, true, &d.adaptive_tokens},
        std::tuple{&cw.norm, false, &d.compressor_norm},
        std::tuple{&dw.embeddings, true, &d.embeddings},
        std::tuple{&dw.separator, true, &d.separator},
        std::tuple{&dw.adaptive_token, true, &d.adaptive_token},
        std::tuple{&dw.norm, false, &d.norm}}) {
    if (absl::Status s = Put(*host, bf16, *dst, total); !s.ok()) return s;
  }
  if (!config.tie_word_embeddings) {
    if (absl::Status s = Put(dw.lm_head, true, d.lm_head, total); !s.ok()) return s;
  }
  for (const auto& [l, w] : cw.proj_fx) {
    if (absl::Status s = Put(w, true, d.proj_fx[l], total); !s.ok()) return s;
  }
  for (const BlockWeights& b : cw.layers) {
    absl::StatusOr<DeviceBlock> block = PutBlock(b, total);
    if (!block.ok()) return block.status();
    d.compressor_layers.push_back(*std::move(block));
  }
  for (const BlockWeights& b : dw.layers) {
    absl::StatusOr<DeviceBlock> block = PutBlock(b, total);
    if (!block.ok()) return block.status();
    d.layers.push_back(*std::move(block));
  }
  return d;
}

}  // namespace catserve::engine::cuda
