#include "tests/support/reference_forward.h"

#include <cmath>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/kernels/cpu_ops.h"

namespace catserve::engine {
namespace {

using Mask = std::function<bool(int query, int key)>;

// One pre-norm block over x [T, width] in place: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x)).
void BlockForward(const BlockWeights& b, const RopeTable& rope, const std::vector<int>& positions,
                  const Mask& mask, std::vector<float>& x) {
  const int T = static_cast<int>(positions.size());
  const int W = b.width, hd = b.head_dim, H = b.heads, Hkv = b.kv_heads;
  const int rows = b.qkv_rows();
  const float eps = b.norm_eps;

  std::vector<float> n(x.size());
  RmsNorm(x.data(), b.attn_norm.data(), T, W, eps, n.data());
  std::vector<float> qkv(static_cast<size_t>(T) * rows);
  Linear(n.data(), T, W, b.qkv.data(), rows, qkv.data());
  for (int t = 0; t < T; ++t) {
    float* row = qkv.data() + static_cast<size_t>(t) * rows;
    if (!b.qkv_bias.empty()) {
      for (int i = 0; i < rows; ++i) row[i] += b.qkv_bias[i];
    }
    if (!b.q_norm.empty()) {
      RmsNorm(row, b.q_norm.data(), H, hd, b.qk_norm_eps, row);
      RmsNorm(row + H * hd, b.k_norm.data(), Hkv, hd, b.qk_norm_eps, row + H * hd);
    }
    rope.Apply(row, H + Hkv, positions[t]);  // q heads then k heads
  }

  std::vector<float> attn(static_cast<size_t>(T) * H * hd, 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> scores(T);
  for (int q = 0; q < T; ++q) {
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / Hkv);
      const float* qv = qkv.data() + static_cast<size_t>(q) * rows + h * hd;
      float mx = -INFINITY;
      for (int k = 0; k < T; ++k) {
        if (!mask(q, k)) {
          scores[k] = -INFINITY;
          continue;
        }
        const float* kv = qkv.data() + static_cast<size_t>(k) * rows + (H + g) * hd;
        scores[k] = Dot(qv, kv, hd) * scale;
        mx = std::max(mx, scores[k]);
      }
      float sum = 0;
      for (int k = 0; k < T; ++k) {
        scores[k] = std::isinf(scores[k]) ? 0.0f : std::exp(scores[k] - mx);
        sum += scores[k];
      }
      float* out = attn.data() + (static_cast<size_t>(q) * H + h) * hd;
      for (int k = 0; k < T; ++k) {
        if (scores[k] == 0.0f) continue;
        const float* vv = qkv.data() + static_cast<size_t>(k) * rows + (H + Hkv + g) * hd;
        const float p = scores[k] / sum;
        for (int i = 0; i < hd; ++i) out[i] += p * vv[i];
      }
    }
  }
  std::vector<float> proj(x.size());
  Linear(attn.data(), T, H * hd, b.o.data(), W, proj.data());
  for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

  RmsNorm(x.data(), b.mlp_norm.data(), T, W, eps, n.data());
  std::vector<float> gate_up(static_cast<size_t>(T) * 2 * b.intermediate);
  Linear(n.data(), T, W, b.gate_up.data(), 2 * b.intermediate, gate_up.data());
  std::vector<float> act(static_cast<size_t>(T) * b.intermediate);
  SiluMul(gate_up.data(), T, b.intermediate, act.data());
  Linear(act.data(), T, b.intermediate, b.down.data(), W, proj.data());
  for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
}

void AppendRow(std::vector<float>& x, const std::vector<float>& table, int row, int width) {
  x.insert(x.end(), table.begin() + static_cast<size_t>(row) * width,
           table.begin() + static_cast<size_t>(row + 1) * width);
}

}  // namespace

std::vector<float> ReferenceCompress(const ModelConfig& c, const ModelWeights& w,
                                     absl::Span<const int32_t> chunk, int index) {
  const CompressorWeights& cw = w.compressor;
  const int l = static_cast<int>(chunk.size()), Dc = c.compressor_hidden_size;
  std::vector<float> x;
  AppendRow(x, cw.adaptive_tokens, l, Dc);
  AppendRow(x, cw.pos_tokens, index, Dc);
  for (int32_t t : chunk) AppendRow(x, cw.wte, t, Dc);
  std::vector<int> positions(l + 2);
  for (int i = 0; i < l + 2; ++i) positions[i] = i;
  const RopeTable rope(c.compressor_head_dim(), c.rope_theta, l + 2);
  const Mask bidirectional = [](int, int) { return true; };
  for (const BlockWeights& b : cw.layers) {
    BlockForward(b, rope, positions, bidirectional, x);
  }
  std::vector<float> normed(x.size());
  RmsNorm(x.data(), cw.norm.data(), l + 2, Dc, static_cast<float>(c.compressor_eps()),
          normed.data());
  std::vector<float> fx(c.hidden_size);
  // fx = W_l v, v = the l token states concatenated (rows 2.. of normed).
  Linear(normed.data() + 2 * Dc, 1, l * Dc, cw.proj_fx.at(l).data(), c.hidden_size, fx.data());
  return fx;
}

absl::StatusOr<std::vector<float>> ReferenceForward(const ModelConfig& c, const ModelWeights& w,
                                                    absl::Span<const int32_t> tokens,
                                                    int chunk_size) {
  const int l = chunk_size, D = c.hidden_size, V = c.vocab_size;
  const int N = static_cast<int>(tokens.size());
  if (!c.serves_chunk_size(l)) {
    return absl::InvalidArgumentError(absl::StrCat("chunk size ", l, " is not served"));
  }
  if (N < 1 || N > c.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence length ", N, " outside [1, ", c.max_position_embeddings, "]"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= V) return absl::InvalidArgumentError(absl::StrCat("token ", t, " invalid"));
  }
  const int K = (N + l - 1) / l;
  std::vector<int32_t> padded(tokens.begin(), tokens.end());
  padded.resize(static_cast<size_t>(K) * l, c.pad_token_id);

  std::vector<std::vector<float>> fx(K);
  for (int j = 0; j < K; ++j) {
    fx[j] = ReferenceCompress(c, w, absl::MakeConstSpan(padded).subspan(j * l, l), j);
  }

  // The interleaved sequence: block j = [F_j, S, t_{jl} .. t_{jl+l-1}], then [fx_{K-1}, S].
  const DecoderWeights& dw = w.decoder;
  const int block = l + 2;
  std::vector<float> x;
  std::vector<int> positions;
  for (int j = 0; j <= K; ++j) {
    if (j == 0) {
      AppendRow(x, dw.adaptive_token, l, D);
    } else {
      x.insert(x.end(), fx[j - 1].begin(), fx[j - 1].end());
    }
    AppendRow(x, dw.separator, 0, D);
    positions.push_back(0);
    positions.push_back(1);
    if (j == K) break;
    for (int r = 0; r < l; ++r) {
      AppendRow(x, dw.embeddings, padded[j * l + r], D);
      positions.push_back(r + 2);
    }
  }
  const Mask mask = [block](int q, int k) {
    return k <= q && (k % block == 0 || k / block == q / block);
  };
  const RopeTable rope(c.head_dim(), c.rope_theta, block);
  for (const BlockWeights& b : dw.layers) {
    BlockForward(b, rope, positions, mask, x);
  }

  // Row i reads the S of block i / l when i % l == 0, else the position of token t_{i-1}.
  std::vector<float> logits(static_cast<size_t>(N + 1) * V);
  std::vector<float> h(D);
  for (int i = 0; i <= N; ++i) {
    const int pos = i % l == 0 ? (i / l) * block + 1 : ((i - 1) / l) * block + 2 + (i - 1) % l;
    RmsNorm(x.data() + static_cast<size_t>(pos) * D, dw.norm.data(), 1, D,
            static_cast<float>(c.norm_eps), h.data());
    Linear(h.data(), 1, D, dw.lm_head.data(), V, logits.data() + static_cast<size_t>(i) * V);
  }
  return logits;
}

}  // namespace catserve::engine
