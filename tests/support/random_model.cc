#include "tests/support/random_model.h"

#include <cmath>
#include <random>

namespace catserve::engine {
namespace {

class Filler {
 public:
  explicit Filler(uint64_t seed) : rng_(seed) {}

  std::vector<float> Normal(size_t n, float stddev) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  std::vector<float> NearOne(size_t n) {
    std::vector<float> v = Normal(n, 0.05f);
    for (float& x : v) x += 1.0f;
    return v;
  }
  // A linear layer [out, in] with the usual 1/sqrt(in) scale.
  std::vector<float> Linear(size_t out, size_t in) {
    return Normal(out * in, 1.0f / std::sqrt(static_cast<float>(in)));
  }

  BlockWeights Block(int width, int heads, int kv_heads, int inter, bool bias, bool qk_norm,
                     double norm_eps, double qk_norm_eps) {
    BlockWeights b;
    b.norm_eps = static_cast<float>(norm_eps);
    b.qk_norm_eps = static_cast<float>(qk_norm_eps);
    b.width = width;
    b.heads = heads;
    b.kv_heads = kv_heads;
    b.head_dim = width / heads;
    b.intermediate = inter;
    b.attn_norm = NearOne(width);
    b.qkv = Linear(b.qkv_rows(), width);
    if (bias) b.qkv_bias = Normal(b.qkv_rows(), 0.02f);
    if (qk_norm) {
      b.q_norm = NearOne(b.head_dim);
      b.k_norm = NearOne(b.head_dim);
    }
    b.o = Linear(width, static_cast<size_t>(heads) * b.head_dim);
    b.mlp_norm = NearOne(width);
    b.gate_up = Linear(2 * static_cast<size_t>(inter), width);
    b.down = Linear(width, inter);
    return b;
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

ModelWeights RandomModelWeights(const ModelConfig& c, uint64_t seed) {
  Filler f(seed);
  const size_t V = c.vocab_size, D = c.hidden_size, Dc = c.compressor_hidden_size;
  const size_t M = c.max_chunk_size, P = c.max_position_embeddings;
  ModelWeights w;
  CompressorWeights& cw = w.compressor;
  cw.wte = f.Normal(V * Dc, 1.0f);
  cw.pos_tokens = f.Normal(P * Dc, 1.0f);
  cw.adaptive_tokens = f.Normal((M + 1) * Dc, 1.0f);
  for (int i = 0; i < c.compressor_num_layers; ++i) {
    cw.layers.push_back(f.Block(c.compressor_hidden_size, c.compressor_num_heads,
                                c.compressor_kv_heads(), c.compressor_intermediate_size(),
                                c.compressor_qkv_bias, c.compressor_qk_norm, c.compressor_eps(),
                                c.compressor_qk_eps()));
  }
  cw.norm = f.NearOne(Dc);
  const std::vector<float> proj_fx = f.Linear(D, M * Dc);
  for (int l : c.chunk_sizes()) {
    cw.proj_fx[l] = ResizeProjFx(proj_fx, static_cast<int>(D), static_cast<int>(M * Dc),
                                 static_cast<int>(l * Dc));
  }
  DecoderWeights& dw = w.decoder;
  dw.embeddings = f.Normal(V * D, 1.0f);
  dw.separator = f.Normal(D, 1.0f);
  dw.adaptive_token = f.Normal((M + 1) * D, 1.0f);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    dw.layers.push_back(f.Block(c.hidden_size, c.num_heads, c.num_kv_heads,
                                c.decoder_intermediate_size(), c.qkv_bias, c.qk_norm, c.norm_eps,
                                c.qk_norm_eps));
  }
  dw.norm = f.NearOne(D);
  dw.lm_head = c.tie_word_embeddings ? dw.embeddings : f.Linear(V, D);
  return w;
}

}  // namespace catserve::engine
