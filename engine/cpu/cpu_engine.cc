#include "engine/cpu/cpu_engine.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/kv/bf16.h"
#include "engine/kv/page_layout.h"

namespace catserve::engine {
namespace {

void CopyRow(const std::vector<float>& table, int row, int width, float* dst) {
  std::copy_n(table.data() + static_cast<size_t>(row) * width, width, dst);
}

void Round(std::vector<float>& v) {
  for (float& x : v) x = RoundToBf16(x);
}

// The weights as the CUDA backend holds them: linear layers and embedding rows in bf16, norm
// weights and biases in fp32.
ModelWeights RoundedToBf16(ModelWeights w) {
  CompressorWeights& c = w.compressor;
  DecoderWeights& d = w.decoder;
  for (std::vector<float>* t : {&c.wte, &c.pos_tokens, &c.adaptive_tokens, &d.embeddings,
                                &d.separator, &d.adaptive_token, &d.lm_head}) {
    Round(*t);
  }
  for (auto& [l, p] : c.proj_fx) Round(p);
  for (std::vector<BlockWeights>* layers : {&c.layers, &d.layers}) {
    for (BlockWeights& b : *layers) {
      for (std::vector<float>* t : {&b.qkv, &b.o, &b.gate_up, &b.down}) Round(*t);
    }
  }
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuEngine>> CpuEngine::Load(const std::filesystem::path& model_dir,
                                                           const EngineOptions& options) {
  absl::StatusOr<Model> model = LoadModel(model_dir, options.check_weights);
  if (!model.ok()) return model.status();
  return std::make_unique<CpuEngine>(std::move(model->config), std::move(model->weights), options);
}

CpuEngine::CpuEngine(ModelConfig config, ModelWeights weights, const EngineOptions& options)
    : config_(std::move(config)),
      weights_(options.emulate_bf16 ? RoundedToBf16(std::move(weights)) : std::move(weights)),
      compute_(options.threads),
      decoder_rope_(config_.head_dim(), config_.rope_theta, config_.max_chunk_size + 2),
      compressor_rope_(config_.compressor_head_dim(), config_.rope_theta,
                       config_.max_chunk_size + 2),
      emulate_bf16_(options.emulate_bf16),
      kv_dtype_(options.emulate_bf16 ? KvDtype::kBf16 : options.kv_dtype),
      sampler_(options.sampling_threads) {
  // GEMMs are split over compute_ by ParallelLinear; BLAS itself stays single-threaded.
  openblas_set_num_threads(1);
}

KvGeometry CpuEngine::kv_geometry(int page_entries) const {
  return KvGeometryOf(config_, page_entries, kv_dtype_);
}

void CpuEngine::Gemm(const float* x, int rows, int in, const float* w, int out, float* y) {
  if (emulate_bf16_) {
    rounded_.assign(x, x + static_cast<size_t>(rows) * in);
    Round(rounded_);
    x = rounded_.data();
  }
  ParallelLinear(compute_, x, rows, in, w, out, y);
  if (gemm_log_ != nullptr) gemm_log_->push_back({rows, in, out});
}

void CpuEngine::AttentionInputs(const BlockWeights& b, const RopeTable& rope, int rows,
                                const std::vector<int>& positions) {
  const int W = b.width, qkv_rows = b.qkv_rows();
  norm_.resize(static_cast<size_t>(rows) * W);
  RmsNorm(x_.data(), b.attn_norm.data(), rows, W, b.norm_eps, norm_.data());
  qkv_.resize(static_cast<size_t>(rows) * qkv_rows);
  Gemm(norm_.data(), rows, W, b.qkv.data(), qkv_rows, qkv_.data());
  compute_.ParallelFor(rows, [&](int begin, int end) {
    for (int t = begin; t < end; ++t) {
      float* row = qkv_.data() + static_cast<size_t>(t) * qkv_rows;
      if (!b.qkv_bias.empty()) {
        for (int i = 0; i < qkv_rows; ++i) row[i] += b.qkv_bias[i];
      }
      if (!b.q_norm.empty()) {
        RmsNorm(row, b.q_norm.data(), b.heads, b.head_dim, b.qk_norm_eps, row);
        float* k = row + b.heads * b.head_dim;
        RmsNorm(k, b.k_norm.data(), b.kv_heads, b.head_dim, b.qk_norm_eps, k);
      }
      rope.Apply(row, b.heads + b.kv_heads, positions[t]);
    }
  });
}

void CpuEngine::FinishBlock(const BlockWeights& b, int rows, std::vector<float>& x) {
  const int W = b.width, I = b.intermediate;
  const float eps = b.norm_eps;
  proj_.resize(static_cast<size_t>(rows) * W);
  Gemm(attn_.data(), rows, b.heads * b.head_dim, b.o.data(), W, proj_.data());
  for (size_t i = 0; i < proj_.size(); ++i) x[i] += proj_[i];
  RmsNorm(x.data(), b.mlp_norm.data(), rows, W, eps, norm_.data());
  gate_up_.resize(static_cast<size_t>(rows) * 2 * I);
  Gemm(norm_.data(), rows, W, b.gate_up.data(), 2 * I, gate_up_.data());
  act_.resize(static_cast<size_t>(rows) * I);
  SiluMul(gate_up_.data(), rows, I, act_.data());
  Gemm(act_.data(), rows, I, b.down.data(), W, proj_.data());
  for (size_t i = 0; i < proj_.size(); ++i) x[i] += proj_[i];
}

void CpuEngine::RunCompressor(absl::Span<const StepItem> items) {
  if (plan_.chunks.empty()) return;
  const CompressorWeights& cw = weights_.compressor;
  const int Dc = config_.compressor_hidden_size, D = config_.hidden_size;
  const int rows = static_cast<int>(plan_.chunk_positions.size());
  // Every chunk's rows: [adaptive_tokens[l], pos_tokens[index], wte[t_0..t_{l-1}]].
  x_.assign(static_cast<size_t>(rows) * Dc, 0.0f);
  for (const StepPlan::Chunk& ch : plan_.chunks) {
    const SequenceState& s = *items[ch.item].seq;
    const int l = s.chunk_size;
    float* dst = x_.data() + static_cast<size_t>(ch.first_row) * Dc;
    CopyRow(cw.adaptive_tokens, l, Dc, dst);
    CopyRow(cw.pos_tokens, ch.index, Dc, dst + Dc);
    for (int r = 0; r < l; ++r) CopyRow(cw.wte, s.tokens[ch.index * l + r], Dc, dst + (r + 2) * Dc);
  }
  for (const BlockWeights& b : cw.layers) {
    AttentionInputs(b, compressor_rope_, rows, plan_.chunk_positions);
    const int H = b.heads, Hkv = b.kv_heads, hd = b.head_dim, qkv_rows = b.qkv_rows();
    const int group = H / Hkv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    attn_.assign(static_cast<size_t>(rows) * H * hd, 0.0f);
    // Bidirectional attention within each chunk's l + 2 rows; query head h reads kv head h / group.
    compute_.ParallelFor(static_cast<int>(plan_.chunks.size()) * H, [&](int begin, int end) {
      std::vector<float> p(config_.max_chunk_size + 2);
      for (int task = begin; task < end; ++task) {
        const StepPlan::Chunk& ch = plan_.chunks[task / H];
        const int h = task % H;
        const int n = items[ch.item].seq->chunk_size + 2;
        const float* base = qkv_.data() + static_cast<size_t>(ch.first_row) * qkv_rows;
        for (int q = 0; q < n; ++q) {
          const float* qv = base + static_cast<size_t>(q) * qkv_rows + h * hd;
          for (int k = 0; k < n; ++k) {
            p[k] = Dot(qv, base + static_cast<size_t>(k) * qkv_rows + (H + h / group) * hd, hd) *
                   scale;
          }
          Softmax(p.data(), n);
          float* out = attn_.data() + (static_cast<size_t>(ch.first_row + q) * H + h) * hd;
          for (int k = 0; k < n; ++k) {
            const float* vv = base + static_cast<size_t>(k) * qkv_rows + (H + Hkv + h / group) * hd;
            for (int i = 0; i < hd; ++i) out[i] += p[k] * vv[i];
          }
        }
      }
    });
    FinishBlock(b, rows, x_);
  }
  norm_.resize(x_.size());
  RmsNorm(x_.data(), cw.norm.data(), rows, Dc, static_cast<float>(config_.compressor_eps()),
          norm_.data());
  // fx = W_l [h_2; ...; h_{l+1}]: the token states of a chunk are contiguous in norm_, so each
  // chunk's input is one row of l * Dc floats. Chunks of equal size share one GEMM.
  cx_.assign(static_cast<size_t>(plan_.chunks.size()) * D, 0.0f);
  std::vector<float> gathered, out;
  for (const auto& [l, w] : cw.proj_fx) {
    std::vector<int> members;
    for (int c = 0; c < static_cast<int>(plan_.chunks.size()); ++c) {
      if (items[plan_.chunks[c].item].seq->chunk_size == l) members.push_back(c);
    }
    if (members.empty()) continue;
    const int m = static_cast<int>(members.size());
    gathered.resize(static_cast<size_t>(m) * l * Dc);
    for (int i = 0; i < m; ++i) {
      std::copy_n(norm_.data() + static_cast<size_t>(plan_.chunks[members[i]].first_row + 2) * Dc,
                  l * Dc, gathered.data() + static_cast<size_t>(i) * l * Dc);
    }
    out.resize(static_cast<size_t>(m) * D);
    Gemm(gathered.data(), m, l * Dc, w.data(), D, out.data());
    for (int i = 0; i < m; ++i) {
      std::copy_n(out.data() + static_cast<size_t>(i) * D, D,
                  cx_.data() + static_cast<size_t>(members[i]) * D);
    }
  }
}

void CpuEngine::RunDecoder(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits,
                           StepStats* stats) {
  const DecoderWeights& dw = weights_.decoder;
  const int D = config_.hidden_size, V = config_.vocab_size;
  const int T = static_cast<int>(plan_.rows.size());
  std::vector<float> x(static_cast<size_t>(T) * D);
  // Inputs: F_0 = adaptive_token[l], F_{j+1} = fx_j, S = separator, tokens = embeddings.
  for (const StepPlan::Chunk& ch : plan_.chunks) {
    std::copy_n(cx_.data() + static_cast<size_t>(&ch - plan_.chunks.data()) * D, D,
                x.data() + static_cast<size_t>(ch.decoder_row) * D);
  }
  for (int t = 0; t < T; ++t) {
    const StepPlan::Row& r = plan_.rows[t];
    const SequenceState& s = *items[r.item].seq;
    float* dst = x.data() + static_cast<size_t>(t) * D;
    if (r.compressed && r.entry == 0) {
      CopyRow(dw.adaptive_token, s.chunk_size, D, dst);
    } else if (!r.compressed && r.entry == 0) {
      CopyRow(dw.separator, 0, D, dst);
    } else if (!r.compressed) {
      CopyRow(dw.embeddings, r.token, D, dst);
    }
  }

  const KvGeometry& g = pool.geometry();
  const int B = g.page_entries;
  // A fixed number of workers, not the pool's size: the splits (and the rounding of their
  // merge) are then the same whatever --threads, so a seeded request draws the same tokens on
  // any thread count. Tasks still spread over every thread of the pool.
  splits_.Build(plan_, kSplitWorkers);
  x_.swap(x);
  for (int layer = 0; layer < static_cast<int>(dw.layers.size()); ++layer) {
    const BlockWeights& b = dw.layers[layer];
    AttentionInputs(b, decoder_rope_, T, plan_.row_positions);
    const int H = b.heads, Hkv = b.kv_heads, hd = b.head_dim, qkv_rows = b.qkv_rows();
    // Write this step's keys and values into the cache (page_layout.h), then attend from it.
    for (int t = 0; t < T; ++t) {
      const StepPlan::Row& r = plan_.rows[t];
      const SequencePages& pages = items[r.item].seq->pages;
      const int32_t page = (r.compressed ? pages.compressed : pages.local)[r.entry / B];
      const float* row = qkv_.data() + static_cast<size_t>(t) * qkv_rows;
      for (int kv = 0; kv < 2; ++kv) {
        for (int kvh = 0; kvh < Hkv; ++kvh) {
          const size_t at =
              PageValueIndex(layer, kv, kvh, r.entry % B, Hkv, B, hd) * g.bytes_per_value();
          StoreKvValues(kv_dtype_, row + (H + kv * Hkv + kvh) * hd, hd, pool.page_data(page) + at);
        }
      }
    }
    attn_.resize(static_cast<size_t>(T) * H * hd);
    const auto start = std::chrono::steady_clock::now();
    attention_.Run(compute_, plan_, splits_, items, pool, layer, qkv_.data(), H, attn_.data());
    if (stats != nullptr) {
      stats->attention_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    FinishBlock(b, T, x_);
  }

  std::vector<int> want;
  for (int i = 0; i < static_cast<int>(items.size()); ++i) {
    if (items[i].want_logits) want.push_back(i);
  }
  if (want.empty()) return;
  const int n = static_cast<int>(want.size());
  std::vector<float> h(static_cast<size_t>(n) * D);
  for (int k = 0; k < n; ++k) {
    RmsNorm(x_.data() + static_cast<size_t>(plan_.logit_row[want[k]]) * D, dw.norm.data(), 1, D,
            static_cast<float>(config_.norm_eps), h.data() + static_cast<size_t>(k) * D);
  }
  std::vector<float> out(static_cast<size_t>(n) * V);
  Gemm(h.data(), n, D, dw.lm_head.data(), V, out.data());
  for (int k = 0; k < n; ++k) {
    std::copy_n(out.data() + static_cast<size_t>(k) * V, V,
                logits.data() + static_cast<size_t>(want[k]) * V);
  }
}

absl::Status CpuEngine::Step(absl::Span<const StepItem> items, KvPool& pool,
                             absl::Span<SampledToken> tokens, StepStats* stats) {
  if (tokens.size() < items.size()) {
    return absl::InvalidArgumentError("tokens has fewer entries than items");
  }
  if (absl::Status s = ValidateStepSampling(items); !s.ok()) return s;
  logits_.resize(items.size() * static_cast<size_t>(config_.vocab_size));
  if (absl::Status s = StepLogits(items, pool, absl::MakeSpan(logits_), stats); !s.ok()) return s;
  sampler_.Sample(items, absl::MakeSpan(logits_), config_.vocab_size, tokens);
  return absl::OkStatus();
}

absl::Status CpuEngine::StepLogits(absl::Span<const StepItem> items, KvPool& pool,
                                   absl::Span<float> logits, StepStats* stats) {
  if (items.empty()) return absl::OkStatus();
  if (logits.size() < items.size() * static_cast<size_t>(config_.vocab_size)) {
    return absl::InvalidArgumentError("logits buffer is smaller than items * vocab_size");
  }
  const KvGeometry& g = pool.geometry();
  const KvGeometry want = kv_geometry(g.page_entries);
  if (pool.arena_location() != KvArena::Location::kHost || g.layers != want.layers ||
      g.kv_heads != want.kv_heads || g.head_dim != want.head_dim || g.dtype != want.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("the CPU engine needs a host KV pool of its own geometry (kv dtype ",
                     KvDtypeName(kv_dtype_), "): make it with CreateKvPool"));
  }
  if (absl::Status s = ValidateStep(config_, items, pool); !s.ok()) return s;
  gemm_log_ = stats != nullptr ? &stats->gemms : nullptr;
  if (stats != nullptr) {
    stats->gemms.clear();
    stats->attention_seconds = 0;
    stats->attention_kv_bytes = 0;
  }
  plan_.Build(items);
  RunCompressor(items);
  RunDecoder(items, pool, logits, stats);
  for (const StepItem& it : items) {
    it.seq->cached += it.num_tokens;
    it.seq->separator_pending = false;
  }
  if (stats != nullptr) {
    stats->decoder_positions = static_cast<int>(plan_.rows.size());
    stats->compressed_chunks = static_cast<int>(plan_.chunks.size());
    stats->compressor_positions = static_cast<int>(plan_.chunk_positions.size());
    size_t keys = 0;
    for (const SplitKvPlan::Split& sp : splits_.splits) keys += sp.end - sp.begin;
    stats->attention_kv_bytes = keys * g.entry_bytes();
  }
  return absl::OkStatus();
}

}  // namespace catserve::engine
