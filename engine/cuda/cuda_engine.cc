#include "engine/cuda/cuda_engine.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/cuda/attention_routes.h"
#include "engine/cuda/cublas_library.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/device_sampler.h"
#include "engine/cuda/device_weights.h"
#include "engine/cuda/flashinfer_decode.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/prefill_attention.h"
#include "engine/cuda/split_kv_meta.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/step/split_kv_plan.h"
#include "engine/step/step_plan.h"

namespace catserve::engine {
namespace {

using cuda::AttentionRow;
using cuda::DeviceBlock;
using cuda::DeviceBuffer;
using cuda::KvSlot;
using cuda::RowSource;

constexpr int kBf16Bytes = 2;
// The most rows a decode step replayed from a CUDA graph has (a power of two).
constexpr unsigned kMaxGraphRows = 512;
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

#define CATSERVE_CUDA_RETURN_IF_ERROR(expr, what)                                           \
  do {                                                                                      \
    if (absl::Status _s = ::catserve::engine::cuda::CudaStatus((expr), (what)); !_s.ok()) { \
      return _s;                                                                            \
    }                                                                                       \
  } while (false)

#define CATSERVE_RETURN_IF_ERROR(expr)        \
  do {                                        \
    if (absl::Status _s = (expr); !_s.ok()) { \
      return _s;                              \
    }                                         \
  } while (false)

absl::Status CublasStatus(const cuda::CublasLibrary& cublas, cublasStatus_t status,
                          const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublas.status_string(status)));
}

// The pool's pages in device memory.
class CudaKvArena : public KvArena {
 public:
  explicit CudaKvArena(void* data) : data_(data) {}
  ~CudaKvArena() override { cudaFree(data_); }
  void* data() override { return data_; }
  Location location() const override { return Location::kCuda; }

 private:
  void* data_;
};

// Step metadata assembled on the host, uploaded in one copy. Each section is a run of int32.
class MetaBuilder {
 public:
  void Clear() { words_.clear(); }
  // Appends `count` values of T (a struct of int32) and returns their offset in words.
  template <typename T>
  size_t Append(const std::vector<T>& values) {
    static_assert(sizeof(T) % sizeof(int32_t) == 0);
    const size_t at = words_.size();
    words_.resize(at + values.size() * sizeof(T) / sizeof(int32_t));
    if (!values.empty()) std::memcpy(words_.data() + at, values.data(), values.size() * sizeof(T));
    return at;
  }
  // Appends bytes, padded to a whole word, and returns their offset in words.
  size_t AppendBytes(const std::vector<uint8_t>& bytes) {
    const size_t at = words_.size();
    words_.resize(at + (bytes.size() + sizeof(int32_t) - 1) / sizeof(int32_t));
    if (!bytes.empty()) std::memcpy(words_.data() + at, bytes.data(), bytes.size());
    return at;
  }
  const std::vector<int32_t>& words() const { return words_; }

 private:
  std::vector<int32_t> words_;
};

class CudaEngine : public Engine {
 public:
  CudaEngine(ModelConfig config, int device, cudaStream_t stream,
             const cuda::CublasLibrary* cublas_library, cublasHandle_t cublas,
             cuda::DeviceWeights weights, DeviceBuffer decoder_rope_cos,
             DeviceBuffer decoder_rope_sin, DeviceBuffer compressor_rope_cos,
             DeviceBuffer compressor_rope_sin, int multiprocessors, CudaAttention attention,
             bool graphs, DeviceBuffer cublas_workspace)
      : config_(std::move(config)),
        device_(device),
        multiprocessors_(multiprocessors),
        stream_(stream),
        cublas_library_(cublas_library),
        cublas_(cublas),
        w_(std::move(weights)),
        decoder_rope_cos_(std::move(decoder_rope_cos)),
        decoder_rope_sin_(std::move(decoder_rope_sin)),
        compressor_rope_cos_(std::move(compressor_rope_cos)),
        compressor_rope_sin_(std::move(compressor_rope_sin)),
        cublas_workspace_(std::move(cublas_workspace)) {
    const int group = config_.num_heads / config_.num_kv_heads;
    const bool auto_attention = attention == CudaAttention::kAuto;
    use_flashinfer_ = auto_attention && cuda::FlashInferDecodeSupports(config_.head_dim(), group);
    use_prefill_ =
        auto_attention &&
        cuda::PrefillAttentionSupports(config_.num_heads, config_.num_kv_heads, config_.head_dim());
    // A graph step's attention is FlashInfer's alone (GraphRows).
    use_graphs_ = graphs && use_flashinfer_;
  }

  ~CudaEngine() override {
    cudaSetDevice(device_);
    DropGraphs();
    cublas_library_->destroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  const ModelConfig& config() const override { return config_; }
  KvGeometry kv_geometry(int page_entries) const override {
    return KvGeometryOf(config_, page_entries, KvDtype::kBf16);
  }
  int threads() const override { return 1; }

  absl::StatusOr<DeviceInfo> device_info() const override {
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp props;
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, device_),
                                  "cudaGetDeviceProperties");
    DeviceInfo info{.name = props.name, .weights_bytes = w_.bytes};
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&info.free_bytes, &info.total_bytes),
                                  "cudaMemGetInfo");
    return info;
  }

  absl::StatusOr<KvPool> CreateKvPool(int num_pages, int page_entries) const override {
    const KvGeometry g = kv_geometry(page_entries);
    if (num_pages <= 0 || page_entries <= 0) return KvPool::Create(g, num_pages, nullptr);
    const size_t bytes = static_cast<size_t>(num_pages) * g.page_bytes();
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
    void* data = nullptr;
    if (cudaMalloc(&data, bytes) != cudaSuccess) {
      cudaGetLastError();
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate a KV pool of ", num_pages, " pages (",
                       static_cast<double>(bytes) / (1 << 20), " MiB) on the GPU"));
    }
    auto arena = std::make_unique<CudaKvArena>(data);
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaMemset(data, 0, bytes), "cudaMemset (KV pool)");
    return KvPool::Create(g, num_pages, std::move(arena));
  }

  // The forward, then the draws on the device (cuda::DeviceSampler): only the tokens, and the
  // rows of items that ask for log-probabilities, cross to the host.
  absl::Status Step(absl::Span<const StepItem> items, KvPool& pool, absl::Span<SampledToken> tokens,
                    StepStats* stats) override;
  absl::Status StepLogits(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits,
                          StepStats* stats) override;

 private:
  absl::Status CheckPool(const KvPool& pool) const;
  void BuildMeta(absl::Span<const StepItem> items);
  absl::Status Upload();
  // y[rows, out] (+)= x[rows, in] W^T: bf16 inputs, fp32 output and accumulation.
  absl::Status Gemm(const uint16_t* x, int rows, int in, const uint16_t* w, int out, float* y,
                    bool accumulate);
  // y[rows, out] = bf16(x[rows, in] W^T): fp32 accumulation, the output rounded to bf16 (for a
  // consumer that reads bf16 anyway: the gate/up GEMM's, read only by SiluMul).
  absl::Status Gemm(const uint16_t* x, int rows, int in, const uint16_t* w, int out, uint16_t* y);
  absl::Status GemmEx(const uint16_t* x, int rows, int in, const uint16_t* w, int out, void* y,
                      cudaDataType_t y_type, bool accumulate);
  // The attention-free half of a block around `attend`: norm, qkv with its post-processing (and,
  // when kv.slots is set, this step's K/V into the cache in the same pass), `attend` (which reads
  // qkv_ and writes attn_), o-projection into x, then the MLP into x.
  template <typename Attend>
  absl::Status Block(const DeviceBlock& b, int rows, float* x, const int32_t* positions,
                     const float* rope_cos, const float* rope_sin, cuda::KvWrite kv, Attend attend);
  absl::Status RunCompressor();
  absl::Status RunDecoder(KvPool& pool);
  // The decoder's attention at `layer` (qkv_ to attn_), each item on its route (routes_).
  absl::Status DecoderAttention(const cuda::DeviceBlock& b, int layer, const KvGeometry& g,
                                const uint16_t* arena);
  // Runs the step up to the logits of the items that want them, rows of logits_ in want_ order.
  absl::Status Forward(absl::Span<const StepItem> items, KvPool& pool, StepStats* stats);
  // logits_ (want_.size() rows) on the device.
  absl::Status Logits();
  // Copies logits_'s rows to their items' rows of `logits` and waits for the stream.
  absl::Status CopyLogits(absl::Span<const StepItem> items, absl::Span<float> logits);

  template <typename T>
  const T* MetaAt(size_t offset) const {
    return reinterpret_cast<const T*>(meta_words_ + offset);
  }

  // CUDA graphs of decode steps. A step is replayed from a graph when it is decode only (no chunk
  // completes, one row per item, every item wants its token, every item on FlashInfer's route);
  // it then runs GraphRows(n) rows, the next power of two, padded (rows that read a separator
  // at position 0, store no K/V, see no key and whose logits nobody reads), and its FlashInfer
  // tiles padded to a power of two, so that every launch's shape is the graph's. One graph per
  // (rows, tiles), captured the second time that shape comes (RunGraph); all are dropped when a
  // buffer they read moves or the pool's page geometry changes.
  int GraphRows(absl::Span<const StepItem> items, int page_entries) const;
  // The most local pages a decoder row reads: it sees at most max_chunk_size local entries (S and
  // the tokens of an incomplete chunk).
  int LocalPagesPerRow(int page_entries) const {
    return (config_.max_chunk_size + page_entries - 1) / page_entries;
  }
  // Runs a padded step of `rows` rows from its graph: true when replayed; false when the step was
  // launched instead, the first time its shape comes (so that no kernel is first loaded inside a
  // capture), after which the graph is captured and replayed.
  absl::StatusOr<bool> RunGraph(KvPool& pool, int rows);
  void DropGraphs();
  // Appends the decoder's per-row sections and the routes' metadata to host_meta_ (rows: the
  // decoder rows the step runs).
  void AppendDecoderMeta(int rows);

  ModelConfig config_;
  int device_;
  int multiprocessors_;  // the SMs the split-KV plan spreads a long sequence over
  cudaStream_t stream_;
  const cuda::CublasLibrary* cublas_library_;
  cublasHandle_t cublas_;
  cuda::DeviceWeights w_;
  DeviceBuffer decoder_rope_cos_, decoder_rope_sin_, compressor_rope_cos_, compressor_rope_sin_;

  // Per-step plan, its host-side metadata and offsets into meta_.
  StepPlan plan_;
  SplitKvPlan splits_;
  MetaBuilder host_meta_;
  struct SizeGroup {
    int chunk_size;
    int first;  // index into the grouped chunk order (fx rows)
    int count;
  };
  std::vector<SizeGroup> groups_;
  std::vector<int32_t> want_;  // items that want logits
  size_t c_src_ = 0, c_pos_ = 0, c_first_ = 0, c_len_ = 0, fx_first_ = 0;
  size_t d_src_ = 0, d_pos_ = 0, d_slots_ = 0, d_attn_ = 0, d_pages_ = 0, logit_rows_ = 0;
  size_t d_split_items_ = 0, d_splits_ = 0, partial_slots_ = 0;
  int max_item_rows_ = 0;
  // Which kernel attends each item (attention_routes.h), and the routes' metadata in meta_.
  bool use_flashinfer_ = false, use_prefill_ = false;
  cuda::AttentionRoutes routes_;
  size_t d_prefill_items_ = 0;
  int prefill_max_rows_ = 0;
  struct FlashInferOffsets {
    size_t compressed_indptr, compressed_pages, compressed_last_len;
    size_t local_indptr, local_pages, local_last_len;
    size_t tile_request, tile_index, local_request, tile_keys, rows;
  } fi_{};
  int compressor_rows_ = 0;
  std::vector<GemmShape>* gemm_log_ = nullptr;
  // The step's decoder inputs, cache slots and logits rows (the plan's rows; padded for graphs).
  std::vector<RowSource> decoder_sources_;
  std::vector<KvSlot> slots_;
  std::vector<int32_t> logit_row_list_;
  int decoder_rows_ = 0;                 // rows the decoder runs: the plan's, or a graph's
  int logit_count_ = 0;                  // logits rows computed: want_.size(), or a graph's rows
  const int32_t* meta_words_ = nullptr;  // meta_, or graph_meta_ for a graph step
  size_t fi_tile_valid_ = 0, fi_local_valid_ = 0;
  bool graph_step_ = false;
  bool use_graphs_ = false;
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    std::vector<GemmShape> gemms;  // what the captured step logged
  };
  std::map<std::pair<int, int>, DecodeGraph> graphs_;  // by (rows, tile blocks)
  // What the graphs were captured over: the buffers they read and write and the pool's pages.
  struct GraphInputs {
    std::vector<const void*> addresses;
    int page_entries = 0;
    size_t values_per_page = 0;
    bool operator==(const GraphInputs&) const = default;
  };
  GraphInputs graph_inputs_;
  std::set<std::pair<int, int>> graph_shapes_seen_;
  DeviceBuffer graph_meta_;
  DeviceBuffer cublas_workspace_;  // cuBLAS's, so that captured GEMMs allocate nothing

  // Device scratch, grown as steps need.
  DeviceBuffer meta_, x_, cx_, norm_, qkv_, attn_, gate_up_, act_, fx_in_, fx_, logits_;
  DeviceBuffer partials_;  // split-KV partials: max[slots], sum[slots], acc[slots * head_dim]
  DeviceBuffer flashinfer_scratch_;  // FlashInferScratch: outputs and log2-sum-exps per block
  std::vector<float> host_logits_;
  cuda::PinnedBuffer logprob_rows_;  // Step's rows of the items that ask for log-probabilities
  cuda::DeviceSampler sampler_;
};

absl::Status CudaEngine::CheckPool(const KvPool& pool) const {
  const KvGeometry& g = pool.geometry();
  const KvGeometry want = kv_geometry(g.page_entries);
  if (pool.arena_location() != KvArena::Location::kCuda || g.layers != want.layers ||
      g.kv_heads != want.kv_heads || g.head_dim != want.head_dim || g.dtype != want.dtype) {
    return absl::InvalidArgumentError(
        "the CUDA engine needs a KV pool made by its own CreateKvPool (bf16, device memory)");
  }
  return absl::OkStatus();
}

void CudaEngine::BuildMeta(absl::Span<const StepItem> items) {
  host_meta_.Clear();
  const int M = config_.max_chunk_size;

  // Compressor rows: [adaptive_tokens[l], pos_tokens[index], wte[t_0..t_{l-1}]] per chunk.
  std::vector<RowSource> c_src;
  std::vector<int32_t> c_first, c_len;
  for (const StepPlan::Chunk& ch : plan_.chunks) {
    const SequenceState& s = *items[ch.item].seq;
    const int l = s.chunk_size;
    c_src.push_back({2, l});
    c_src.push_back({1, ch.index});
    for (int r = 0; r < l; ++r) c_src.push_back({0, s.tokens[ch.index * l + r]});
    c_first.push_back(ch.first_row);
    c_len.push_back(l + 2);
  }
  compressor_rows_ = static_cast<int>(c_src.size());
  c_src_ = host_meta_.Append(c_src);
  c_pos_ = host_meta_.Append(plan_.chunk_positions);
  c_first_ = host_meta_.Append(c_first);
  c_len_ = host_meta_.Append(c_len);

  // Chunks grouped by size for the proj_fx GEMMs: fx row of chunk c is fx_row[c].
  groups_.clear();
  std::vector<int32_t> fx_first;  // first token-state row of each chunk, grouped order
  std::vector<int32_t> fx_row(plan_.chunks.size());
  for (int l = 1; l <= M; ++l) {
    const int first = static_cast<int>(fx_first.size());
    for (size_t c = 0; c < plan_.chunks.size(); ++c) {
      if (items[plan_.chunks[c].item].seq->chunk_size != l) continue;
      fx_row[c] = static_cast<int32_t>(fx_first.size());
      fx_first.push_back(plan_.chunks[c].first_row + 2);
    }
    const int count = static_cast<int>(fx_first.size()) - first;
    if (count > 0) groups_.push_back({l, first, count});
  }
  fx_first_ = host_meta_.Append(fx_first);

  // Decoder rows: inputs and positions (cache slots and page lists follow in Step).
  std::vector<RowSource> d_src(plan_.rows.size());
  std::vector<int32_t> decoder_row_chunk(plan_.rows.size(), -1);
  for (size_t c = 0; c < plan_.chunks.size(); ++c) {
    decoder_row_chunk[plan_.chunks[c].decoder_row] = static_cast<int32_t>(c);
  }
  for (size_t t = 0; t < plan_.rows.size(); ++t) {
    const StepPlan::Row& r = plan_.rows[t];
    if (r.compressed && r.entry == 0) {
      d_src[t] = {2, items[r.item].seq->chunk_size};
    } else if (r.compressed) {
      d_src[t] = {3, fx_row[decoder_row_chunk[t]]};
    } else if (r.entry == 0) {
      d_src[t] = {1, 0};
    } else {
      d_src[t] = {0, r.token};
    }
  }
  decoder_sources_ = std::move(d_src);

  want_.clear();
  for (int i = 0; i < static_cast<int>(items.size()); ++i) {
    if (items[i].want_logits) want_.push_back(i);
  }
  logit_row_list_.clear();
  for (int i : want_) logit_row_list_.push_back(plan_.logit_row[i]);
}

void CudaEngine::AppendDecoderMeta(int rows) {
  // Padding rows (graphs): a separator at position 0, no cache entry, their own logits row.
  decoder_sources_.resize(rows, RowSource{1, 0});
  std::vector<int32_t> positions = plan_.row_positions;
  positions.resize(rows, 0);
  slots_.resize(rows, KvSlot{-1, 0});
  for (int t = static_cast<int>(logit_row_list_.size()); t < logit_count_; ++t) {
    logit_row_list_.push_back(t);
  }
  d_src_ = host_meta_.Append(decoder_sources_);
  d_pos_ = host_meta_.Append(positions);
  d_slots_ = host_meta_.Append(slots_);
  logit_rows_ = host_meta_.Append(logit_row_list_);
  d_split_items_ = host_meta_.Append(routes_.split_items);
  d_splits_ = host_meta_.Append(routes_.splits);
  fi_ = {.compressed_indptr = host_meta_.Append(routes_.compressed_indptr),
         .compressed_pages = 0,
         .compressed_last_len = host_meta_.Append(routes_.compressed_last_len),
         .local_indptr = host_meta_.Append(routes_.local_indptr),
         .local_pages = host_meta_.Append(routes_.local_pages),
         .local_last_len = host_meta_.Append(routes_.local_last_len),
         .tile_request = host_meta_.Append(routes_.tile_request),
         .tile_index = host_meta_.Append(routes_.tile_index),
         .local_request = host_meta_.Append(routes_.local_request),
         .tile_keys = host_meta_.Append(std::vector<int32_t>{cuda::kFlashInferTileKeys}),
         .rows = host_meta_.Append(routes_.flashinfer_rows)};
  fi_tile_valid_ = host_meta_.AppendBytes(routes_.tile_valid);
  fi_local_valid_ = host_meta_.AppendBytes(routes_.local_valid);
  // Last, so that a graph step's other sections keep their offsets however many pages it reads.
  fi_.compressed_pages = host_meta_.Append(routes_.compressed_pages);
}

absl::Status CudaEngine::Upload() {
  const std::vector<int32_t>& words = host_meta_.words();
  CATSERVE_RETURN_IF_ERROR(meta_.Reserve(std::max<size_t>(words.size(), 1) * sizeof(int32_t)));
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(meta_.data(), words.data(), words.size() * sizeof(int32_t),
                      cudaMemcpyHostToDevice, stream_),
      "cudaMemcpyAsync (step metadata)");
  meta_words_ = meta_.as<int32_t>();
  return absl::OkStatus();
}

absl::Status CudaEngine::Gemm(const uint16_t* x, int rows, int in, const uint16_t* w, int out,
                              float* y, bool accumulate) {
  return GemmEx(x, rows, in, w, out, y, CUDA_R_32F, accumulate);
}

absl::Status CudaEngine::Gemm(const uint16_t* x, int rows, int in, const uint16_t* w, int out,
                              uint16_t* y) {
  return GemmEx(x, rows, in, w, out, y, CUDA_R_16BF, false);
}

absl::Status CudaEngine::GemmEx(const uint16_t* x, int rows, int in, const uint16_t* w, int out,
                                void* y, cudaDataType_t y_type, bool accumulate) {
  if (rows == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Row-major y[rows, out] = x[rows, in] W^T is column-major y^T[out, rows] = W[in, out]^T x^T.
  CATSERVE_RETURN_IF_ERROR(CublasStatus(
      *cublas_library_,
      cublas_library_->gemm_ex(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w,
                               CUDA_R_16BF, in, x, CUDA_R_16BF, in, &beta, y, y_type, out,
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "cublasGemmEx"));
  if (gemm_log_ != nullptr) gemm_log_->push_back({rows, in, out});
  return absl::OkStatus();
}

template <typename Attend>
absl::Status CudaEngine::Block(const DeviceBlock& b, int rows, float* x, const int32_t* positions,
                               const float* rope_cos, const float* rope_sin, cuda::KvWrite kv,
                               Attend attend) {
  const int W = b.width, I = b.intermediate, qkv_rows = b.qkv_rows();
  const float eps = b.norm_eps;
  uint16_t* norm = norm_.as<uint16_t>();
  float* qkv = qkv_.as<float>();
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::RmsNormToBf16(x, nullptr, rows, W, b.attn_norm.as<float>(), eps, norm, stream_),
      "RmsNorm");
  CATSERVE_RETURN_IF_ERROR(Gemm(norm, rows, W, b.qkv.as<uint16_t>(), qkv_rows, qkv, false));
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::QkvPostprocess(qkv, rows, b.heads, b.kv_heads, b.head_dim, b.qkv_bias.as<float>(),
                           b.q_norm.as<float>(), b.k_norm.as<float>(), b.qk_norm_eps, positions,
                           rope_cos, rope_sin, kv, stream_),
      "QkvPostprocess");
  CATSERVE_RETURN_IF_ERROR(attend());
  CATSERVE_RETURN_IF_ERROR(
      Gemm(attn_.as<uint16_t>(), rows, b.heads * b.head_dim, b.o.as<uint16_t>(), W, x, true));
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::RmsNormToBf16(x, nullptr, rows, W, b.mlp_norm.as<float>(), eps, norm, stream_),
      "RmsNorm");
  // gate/up in bf16: SiluMul reads it once, so fp32 would only double its bytes.
  CATSERVE_RETURN_IF_ERROR(
      Gemm(norm, rows, W, b.gate_up.as<uint16_t>(), 2 * I, gate_up_.as<uint16_t>()));
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::SiluMul(gate_up_.as<uint16_t>(), rows, I, act_.as<uint16_t>(), stream_), "SiluMul");
  return Gemm(act_.as<uint16_t>(), rows, I, b.down.as<uint16_t>(), W, x, true);
}

absl::Status CudaEngine::RunCompressor() {
  if (plan_.chunks.empty()) return absl::OkStatus();
  const int Dc = config_.compressor_hidden_size, D = config_.hidden_size;
  const int rows = compressor_rows_;
  const int chunks = static_cast<int>(plan_.chunks.size());
  float* cx = cx_.as<float>();
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::GatherRows(MetaAt<RowSource>(c_src_), rows, Dc, w_.wte.as<uint16_t>(),
                       w_.pos_tokens.as<uint16_t>(), w_.adaptive_tokens.as<uint16_t>(), nullptr, cx,
                       stream_),
      "GatherRows (compressor)");
  for (const DeviceBlock& b : w_.compressor_layers) {
    CATSERVE_RETURN_IF_ERROR(Block(
        b, rows, cx, MetaAt<int32_t>(c_pos_), compressor_rope_cos_.as<float>(),
        compressor_rope_sin_.as<float>(), cuda::KvWrite{}, [&]() -> absl::Status {
          return cuda::CudaStatus(
              cuda::ChunkAttention(qkv_.as<float>(), MetaAt<int32_t>(c_first_),
                                   MetaAt<int32_t>(c_len_), chunks, config_.max_chunk_size + 2,
                                   b.heads, b.head_dim, attn_.as<uint16_t>(), stream_),
              "ChunkAttention");
        }));
  }
  uint16_t* norm = norm_.as<uint16_t>();
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::RmsNormToBf16(cx, nullptr, rows, Dc, w_.compressor_norm.as<float>(),
                          static_cast<float>(config_.compressor_eps()), norm, stream_),
      "RmsNorm (compressor)");
  // fx = W_l [h_2; ...; h_{l+1}] per chunk; chunks of one size share one GEMM.
  for (const SizeGroup& g : groups_) {
    const int width = g.chunk_size * Dc;
    CATSERVE_CUDA_RETURN_IF_ERROR(
        cuda::GatherBf16(norm, MetaAt<int32_t>(fx_first_) + g.first, g.count, Dc, width,
                         fx_in_.as<uint16_t>(), stream_),
        "GatherBf16 (proj_fx input)");
    CATSERVE_RETURN_IF_ERROR(Gemm(fx_in_.as<uint16_t>(), g.count, width,
                                  w_.proj_fx.at(g.chunk_size).as<uint16_t>(), D,
                                  fx_.as<float>() + static_cast<size_t>(g.first) * D, false));
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::RunDecoder(KvPool& pool) {
  const int D = config_.hidden_size;
  const int T = decoder_rows_;
  const KvGeometry& g = pool.geometry();
  uint16_t* arena = static_cast<uint16_t*>(pool.arena_data());
  float* x = x_.as<float>();
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::GatherRows(MetaAt<RowSource>(d_src_), T, D, w_.embeddings.as<uint16_t>(),
                       w_.separator.as<uint16_t>(), w_.adaptive_token.as<uint16_t>(),
                       fx_.as<float>(), x, stream_),
      "GatherRows (decoder)");
  for (int layer = 0; layer < static_cast<int>(w_.layers.size()); ++layer) {
    const DeviceBlock& b = w_.layers[layer];
    CATSERVE_RETURN_IF_ERROR(Block(
        b, T, x, MetaAt<int32_t>(d_pos_), decoder_rope_cos_.as<float>(),
        decoder_rope_sin_.as<float>(),
        // This step's keys and values go into the cache with the qkv post-processing, before
        // attention, which reads them from the cache.
        cuda::KvWrite{MetaAt<KvSlot>(d_slots_), layer, g.page_entries, g.values_per_page(), arena},
        [&]() { return DecoderAttention(b, layer, g, arena); }));
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::DecoderAttention(const DeviceBlock& b, int layer, const KvGeometry& g,
                                          const uint16_t* arena) {
  const float* qkv = qkv_.as<float>();
  uint16_t* out = attn_.as<uint16_t>();
  if (!routes_.split_items.empty()) {
    float* partials = partials_.as<float>();
    const cuda::SplitKvPartials p{partials, partials + partial_slots_,
                                  partials + 2 * partial_slots_};
    CATSERVE_CUDA_RETURN_IF_ERROR(
        cuda::SplitKvAttention(qkv, b.heads, b.kv_heads, b.head_dim, MetaAt<AttentionRow>(d_attn_),
                               MetaAt<cuda::SplitKvItem>(d_split_items_),
                               static_cast<int>(routes_.split_items.size()), max_item_rows_,
                               MetaAt<cuda::SplitKvSplit>(d_splits_),
                               static_cast<int>(routes_.splits.size()), MetaAt<int32_t>(d_pages_),
                               layer, g.page_entries, g.values_per_page(), arena, p, out, stream_),
        "SplitKvAttention");
  }
  if (!routes_.prefill_items.empty()) {
    CATSERVE_CUDA_RETURN_IF_ERROR(
        cuda::PrefillAttention(qkv, b.heads, b.kv_heads, b.head_dim, MetaAt<AttentionRow>(d_attn_),
                               MetaAt<cuda::PrefillItem>(d_prefill_items_),
                               static_cast<int>(routes_.prefill_items.size()), prefill_max_rows_,
                               MetaAt<int32_t>(d_pages_), layer, g.page_entries,
                               g.values_per_page(), arena, out, stream_),
        "PrefillAttention");
  }
  if (!routes_.flashinfer_rows.empty()) {
    const cuda::FlashInferDecodeMeta meta{
        .decoder_rows = decoder_rows_,
        .compressed_indptr = MetaAt<int32_t>(fi_.compressed_indptr),
        .compressed_pages = MetaAt<int32_t>(fi_.compressed_pages),
        .compressed_last_len = MetaAt<int32_t>(fi_.compressed_last_len),
        .local_indptr = MetaAt<int32_t>(fi_.local_indptr),
        .local_pages = MetaAt<int32_t>(fi_.local_pages),
        .local_last_len = MetaAt<int32_t>(fi_.local_last_len),
        .tile_request = MetaAt<int32_t>(fi_.tile_request),
        .tile_index = MetaAt<int32_t>(fi_.tile_index),
        .tiles = static_cast<int>(routes_.tile_request.size()),
        .local_request = MetaAt<int32_t>(fi_.local_request),
        .locals = static_cast<int>(routes_.local_request.size()),
        .tile_keys = MetaAt<int32_t>(fi_.tile_keys),
        .rows = MetaAt<cuda::FlashInferRow>(fi_.rows),
        .num_rows = static_cast<int>(routes_.flashinfer_rows.size()),
        .tile_valid = graph_step_ ? MetaAt<bool>(fi_tile_valid_) : nullptr,
        .local_valid = graph_step_ ? MetaAt<bool>(fi_local_valid_) : nullptr};
    const cuda::FlashInferScratch s = cuda::FlashInferScratchAt(
        flashinfer_scratch_.as<float>(), meta.tiles, meta.locals, b.heads, b.head_dim);
    CATSERVE_CUDA_RETURN_IF_ERROR(
        cuda::FlashInferDecode(qkv, b.heads, b.kv_heads, b.head_dim, meta, layer, g.page_entries,
                               g.values_per_page(), arena, s, out, stream_),
        "FlashInferDecode");
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::Logits() {
  const int D = config_.hidden_size, V = config_.vocab_size;
  const int n = logit_count_;
  if (n == 0) return absl::OkStatus();
  uint16_t* h = norm_.as<uint16_t>();
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cuda::RmsNormToBf16(x_.as<float>(), MetaAt<int32_t>(logit_rows_), n, D, w_.norm.as<float>(),
                          static_cast<float>(config_.norm_eps), h, stream_),
      "RmsNorm (final)");
  return Gemm(h, n, D, w_.lm_head_data(), V, logits_.as<float>(), false);
}

absl::Status CudaEngine::CopyLogits(absl::Span<const StepItem> items, absl::Span<float> logits) {
  const int V = config_.vocab_size;
  const int n = static_cast<int>(want_.size());
  if (n == 0) return absl::OkStatus();
  // Every item wants logits in the common case: its rows land in place.
  const bool in_place = n == static_cast<int>(items.size());
  float* dst = logits.data();
  if (!in_place) {
    host_logits_.resize(static_cast<size_t>(n) * V);
    dst = host_logits_.data();
  }
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, logits_.data(), static_cast<size_t>(n) * V * sizeof(float),
                      cudaMemcpyDeviceToHost, stream_),
      "cudaMemcpyAsync (logits)");
  CATSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "step");
  if (!in_place) {
    for (int k = 0; k < n; ++k) {
      std::copy_n(host_logits_.data() + static_cast<size_t>(k) * V, V,
                  logits.data() + static_cast<size_t>(want_[k]) * V);
    }
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::StepLogits(absl::Span<const StepItem> items, KvPool& pool,
                                    absl::Span<float> logits, StepStats* stats) {
  if (items.empty()) return absl::OkStatus();
  if (logits.size() < items.size() * static_cast<size_t>(config_.vocab_size)) {
    return absl::InvalidArgumentError("logits buffer is smaller than items * vocab_size");
  }
  CATSERVE_RETURN_IF_ERROR(CheckPool(pool));
  CATSERVE_RETURN_IF_ERROR(ValidateStep(config_, items, pool));
  CATSERVE_RETURN_IF_ERROR(Forward(items, pool, stats));
  CATSERVE_RETURN_IF_ERROR(CopyLogits(items, logits));
  for (const StepItem& it : items) {
    it.seq->cached += it.num_tokens;
    it.seq->separator_pending = false;
  }
  if (stats != nullptr) {
    stats->device_to_host_bytes = want_.size() * static_cast<size_t>(config_.vocab_size) * 4;
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::Step(absl::Span<const StepItem> items, KvPool& pool,
                              absl::Span<SampledToken> tokens, StepStats* stats) {
  if (items.empty()) return absl::OkStatus();
  if (tokens.size() < items.size()) {
    return absl::InvalidArgumentError("tokens has fewer entries than items");
  }
  CATSERVE_RETURN_IF_ERROR(CheckPool(pool));
  CATSERVE_RETURN_IF_ERROR(ValidateStep(config_, items, pool));
  CATSERVE_RETURN_IF_ERROR(ValidateStepSampling(items));
  CATSERVE_RETURN_IF_ERROR(Forward(items, pool, stats));
  const int V = config_.vocab_size;
  const size_t n = want_.size();
  std::vector<SamplingParams> params(n);
  std::vector<std::vector<int32_t>> contexts(n);
  std::vector<uint64_t> draws(n);
  for (size_t k = 0; k < n; ++k) {
    const StepItem& it = items[want_[k]];
    params[k] = *it.sampling;
    if (it.sampling->repetition_penalty != 1.0f) contexts[k] = it.seq->tokens;
    draws[k] = it.draw;
  }
  // Log-probabilities are of the raw rows: copied before the sampler's penalty (which works on a
  // scratch copy, but the order keeps that a detail of the sampler).
  std::vector<int> logprob_rows;
  for (size_t k = 0; k < n; ++k) {
    if (items[want_[k]].logprobs >= 0) logprob_rows.push_back(static_cast<int>(k));
  }
  CATSERVE_RETURN_IF_ERROR(
      logprob_rows_.Reserve(logprob_rows.size() * static_cast<size_t>(V) * sizeof(float)));
  for (size_t j = 0; j < logprob_rows.size(); ++j) {
    CATSERVE_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(logprob_rows_.as<float>() + j * V,
                        logits_.as<float>() + static_cast<size_t>(logprob_rows[j]) * V,
                        V * sizeof(float), cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync (logprob rows)");
  }
  absl::StatusOr<std::vector<int32_t>> drawn =
      sampler_.Sample(logits_.as<float>(), static_cast<int>(n), V, params, contexts, draws,
                      stream_);  // synchronises the stream
  if (!drawn.ok()) return drawn.status();
  for (size_t k = 0; k < n; ++k) {
    SampledToken& out = tokens[want_[k]];
    out.token = (*drawn)[k];
    out.logprob = 0.0f;
    out.top.clear();
  }
  for (size_t j = 0; j < logprob_rows.size(); ++j) {
    const int item = want_[logprob_rows[j]];
    const absl::Span<const float> row(logprob_rows_.as<float>() + j * V, V);
    const float lse = LogSumExp(row);
    SampledToken& out = tokens[item];
    out.top = TopLogprobs(row, items[item].logprobs, lse);
    out.logprob = row[out.token] - lse;
  }
  for (const StepItem& it : items) {
    it.seq->cached += it.num_tokens;
    it.seq->separator_pending = false;
  }
  if (stats != nullptr) {
    stats->device_to_host_bytes =
        n * sizeof(int32_t) + logprob_rows.size() * static_cast<size_t>(V) * sizeof(float);
  }
  return absl::OkStatus();
}

absl::Status CudaEngine::Forward(absl::Span<const StepItem> items, KvPool& pool, StepStats* stats) {
  CATSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
  gemm_log_ = stats != nullptr ? &stats->gemms : nullptr;
  if (gemm_log_ != nullptr) gemm_log_->clear();
  plan_.Build(items);
  BuildMeta(items);

  // Cache slots need the pool's page size; the decode attention's spans, page lists and
  // split-KV plan (the same decomposition the CPU uses, one worker per SM) go up with them.
  const int B = pool.geometry().page_entries;
  slots_.resize(plan_.rows.size());
  for (size_t t = 0; t < plan_.rows.size(); ++t) {
    const StepPlan::Row& r = plan_.rows[t];
    const SequencePages& p = items[r.item].seq->pages;
    const std::vector<int32_t>& region = r.compressed ? p.compressed : p.local;
    slots_[t] = {region[r.entry / B], r.entry % B};
  }
  splits_.Build(plan_, multiprocessors_);
  const cuda::SplitKvMeta attention = cuda::BuildSplitKvMeta(
      plan_, splits_, items, config_.num_heads / config_.num_kv_heads, config_.num_kv_heads);
  d_attn_ = host_meta_.Append(attention.rows);
  d_pages_ = host_meta_.Append(attention.page_lists);
  partial_slots_ = attention.partial_slots;
  routes_ = cuda::RouteAttention(
      plan_, attention,
      {.flashinfer = use_flashinfer_, .prefill = use_prefill_, .page_entries = B});
  max_item_rows_ = routes_.split_max_item_rows;
  std::vector<cuda::SplitKvItem> prefill_split_items;
  for (int32_t i : routes_.prefill_items) prefill_split_items.push_back(attention.items[i]);
  const std::vector<cuda::PrefillItem> prefill =
      cuda::PrefillItemsFor(prefill_split_items, attention.rows);
  prefill_max_rows_ = 0;
  for (const cuda::PrefillItem& p : prefill) {
    prefill_max_rows_ = std::max(prefill_max_rows_, p.rows);
  }
  d_prefill_items_ = host_meta_.Append(prefill);

  // A decode step that a graph can run is padded to the graph's rows and tile blocks.
  const int graph_rows = GraphRows(items, B);
  graph_step_ = graph_rows > 0;
  decoder_rows_ = graph_step_ ? graph_rows : static_cast<int>(plan_.rows.size());
  logit_count_ = graph_step_ ? graph_rows : static_cast<int>(want_.size());
  if (graph_step_) {
    // A graph reads only the decoder's sections, at offsets every step of its shape shares.
    host_meta_.Clear();
    const int tiles = static_cast<int>(routes_.tile_request.size());
    cuda::PadForGraph(routes_, graph_rows,
                      static_cast<int>(std::bit_ceil(static_cast<unsigned>(std::max(tiles, 1)))),
                      graph_rows * LocalPagesPerRow(B));
  }
  AppendDecoderMeta(decoder_rows_);

  // Scratch for the widest of compressor and decoder.
  const ModelConfig& c = config_;
  const size_t T = decoder_rows_, Rc = compressor_rows_;
  const size_t chunks = plan_.chunks.size();
  const size_t D = c.hidden_size, Dc = c.compressor_hidden_size;
  const size_t qkv_d = static_cast<size_t>(c.num_heads + 2 * c.num_kv_heads) * c.head_dim();
  const size_t qkv_c = 3 * Dc;
  const size_t inter = std::max(c.decoder_intermediate_size(), c.compressor_intermediate_size());
  const size_t rows = std::max(T, Rc);
  const size_t want = logit_count_;
  CATSERVE_RETURN_IF_ERROR(x_.Reserve(T * D * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(cx_.Reserve(std::max<size_t>(Rc, 1) * Dc * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(norm_.Reserve(std::max(T * D, Rc * Dc) * kBf16Bytes));
  CATSERVE_RETURN_IF_ERROR(qkv_.Reserve(std::max(T * qkv_d, Rc * qkv_c) * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(attn_.Reserve(std::max(T * D, Rc * Dc) * kBf16Bytes));
  CATSERVE_RETURN_IF_ERROR(gate_up_.Reserve(rows * 2 * inter * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(act_.Reserve(rows * inter * kBf16Bytes));
  CATSERVE_RETURN_IF_ERROR(
      fx_in_.Reserve(std::max<size_t>(chunks, 1) * c.max_chunk_size * Dc * kBf16Bytes));
  CATSERVE_RETURN_IF_ERROR(fx_.Reserve(std::max<size_t>(chunks, 1) * D * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(
      logits_.Reserve(std::max<size_t>(want, 1) * c.vocab_size * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(
      partials_.Reserve(std::max<size_t>(partial_slots_, 1) * (2 + c.head_dim()) * sizeof(float)));
  CATSERVE_RETURN_IF_ERROR(flashinfer_scratch_.Reserve(
      std::max<size_t>(
          cuda::FlashInferScratchFloats(routes_.tile_request.size(), routes_.local_request.size(),
                                        c.num_heads, c.head_dim()),
          1) *
      sizeof(float)));

  bool replayed = false, ran = false;
  if (graph_step_) {
    const absl::StatusOr<bool> graph = RunGraph(pool, graph_rows);
    if (graph.ok()) {
      replayed = *graph;
      ran = true;
    } else {
      // The step is launched instead (its padded metadata means the same), and graphs stay off
      // for this engine: a graph that cannot be captured is not worth failing steps for.
      std::fprintf(stderr, "CUDA graphs turned off: %s\n",
                   std::string(graph.status().message()).c_str());
      use_graphs_ = false;
      DropGraphs();
      cudaGetLastError();
    }
  }
  if (!ran) {
    CATSERVE_RETURN_IF_ERROR(Upload());
    CATSERVE_RETURN_IF_ERROR(RunCompressor());
    CATSERVE_RETURN_IF_ERROR(RunDecoder(pool));
    CATSERVE_RETURN_IF_ERROR(Logits());
  }
  if (want_.empty()) {
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "step");
  }
  if (stats != nullptr) {
    stats->decoder_positions = static_cast<int>(plan_.rows.size());
    stats->from_graph = replayed;
    stats->compressed_chunks = static_cast<int>(chunks);
    stats->compressor_positions = static_cast<int>(Rc);
  }
  return absl::OkStatus();
}

int CudaEngine::GraphRows(absl::Span<const StepItem> items, int page_entries) const {
  if (!use_graphs_ || !plan_.chunks.empty() || plan_.rows.size() != items.size()) return 0;
  if (!routes_.split_items.empty() || !routes_.prefill_items.empty()) return 0;
  for (const StepItem& it : items) {
    if (!it.want_logits || it.num_tokens != 1) return 0;
  }
  const unsigned rows = std::bit_ceil(static_cast<unsigned>(items.size()));
  if (rows > kMaxGraphRows) return 0;
  // PadForGraph's bound on the local page list (it holds by the model's shape; checked all the
  // same, as a list longer than the bound would be cut).
  if (routes_.local_pages.size() > rows * LocalPagesPerRow(page_entries)) return 0;
  return static_cast<int>(rows);
}

void CudaEngine::DropGraphs() {
  for (auto& [key, graph] : graphs_) cudaGraphExecDestroy(graph.exec);
  graphs_.clear();
}

absl::StatusOr<bool> CudaEngine::RunGraph(KvPool& pool, int rows) {
  // The metadata goes to its own buffer, at the offsets every graph step of these shapes shares
  // (only the compressed page list, last, varies in length); it grows by doubling.
  const std::vector<int32_t>& words = host_meta_.words();
  const size_t bytes = words.size() * sizeof(int32_t);
  if (graph_meta_.bytes() < bytes) {
    CATSERVE_RETURN_IF_ERROR(graph_meta_.Reserve(2 * bytes));
  }
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(graph_meta_.data(), words.data(), bytes, cudaMemcpyHostToDevice, stream_),
      "cudaMemcpyAsync (graph step metadata)");
  meta_words_ = graph_meta_.as<int32_t>();
  // A graph holds the addresses and page geometry it was captured with: all go when any changed.
  const KvGeometry& g = pool.geometry();
  GraphInputs inputs{.addresses = {graph_meta_.data(), x_.data(), norm_.data(), qkv_.data(),
                                   attn_.data(), gate_up_.data(), act_.data(), logits_.data(),
                                   flashinfer_scratch_.data(), pool.arena_data()},
                     .page_entries = g.page_entries,
                     .values_per_page = g.values_per_page()};
  if (!(inputs == graph_inputs_)) {
    DropGraphs();
    graph_inputs_ = std::move(inputs);
  }
  const std::pair<int, int> key{rows, static_cast<int>(routes_.tile_request.size())};
  auto found = graphs_.find(key);
  if (found == graphs_.end() && graph_shapes_seen_.insert(key).second) {
    CATSERVE_RETURN_IF_ERROR(RunDecoder(pool));
    CATSERVE_RETURN_IF_ERROR(Logits());
    return false;
  }
  if (found == graphs_.end()) {
    std::vector<GemmShape> gemms;
    std::vector<GemmShape>* log = gemm_log_;
    gemm_log_ = &gemms;
    CATSERVE_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                                  "cudaStreamBeginCapture");
    absl::Status captured = RunDecoder(pool);
    if (captured.ok()) captured = Logits();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    gemm_log_ = log;
    if (!captured.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      CATSERVE_RETURN_IF_ERROR(captured);
      return cuda::CudaStatus(ended, "cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CATSERVE_CUDA_RETURN_IF_ERROR(instantiated, "cudaGraphInstantiate");
    found = graphs_.emplace(key, DecodeGraph{exec, std::move(gemms)}).first;
  }
  CATSERVE_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(found->second.exec, stream_), "cudaGraphLaunch");
  if (gemm_log_ != nullptr) *gemm_log_ = found->second.gemms;
  return true;
}

absl::Status CheckShapes(const ModelConfig& c) {
  const int group = c.num_heads / c.num_kv_heads;
  if (c.head_dim() > cuda::kMaxHeadDim || c.compressor_head_dim() > cuda::kMaxHeadDim ||
      group > cuda::kMaxGroup) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the CUDA backend takes head_dim <= ", cuda::kMaxHeadDim,
        " and GQA groups <= ", cuda::kMaxGroup, "; this model has head_dim ", c.head_dim(),
        ", compressor head_dim ", c.compressor_head_dim(), ", group ", group));
  }
  if (c.compressor_kv_heads() != c.compressor_num_heads) {
    return absl::FailedPreconditionError(
        absl::StrCat("the CUDA backend's compressor attention takes no GQA; this model has "
                     "compressor_num_kv_heads ",
                     c.compressor_kv_heads(), " < compressor_num_heads ", c.compressor_num_heads,
                     " (serve it with the CPU backend)"));
  }
  return absl::OkStatus();
}

absl::Status UploadRope(const RopeTable& rope, DeviceBuffer& cos, DeviceBuffer& sin) {
  CATSERVE_RETURN_IF_ERROR(cos.Upload(rope.cos_table()));
  return sin.Upload(rope.sin_table());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> CreateCudaEngine(const ModelConfig& config,
                                                         const ModelWeights& weights,
                                                         const EngineOptions& options) {
  int devices = 0;
  if (cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device: ", e != cudaSuccess ? cudaGetErrorString(e) : "none found"));
  }
  CATSERVE_RETURN_IF_ERROR(CheckShapes(config));
  const int device = 0;
  CATSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), "cudaSetDevice");
  int multiprocessors = 0;
  CATSERVE_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device),
      "cudaDeviceGetAttribute (multiprocessors)");
  absl::StatusOr<cuda::DeviceWeights> w = cuda::UploadWeights(config, weights);
  if (!w.ok()) return w.status();
  DeviceBuffer dcos, dsin, ccos, csin;
  const int max_pos = config.max_chunk_size + 2;
  CATSERVE_RETURN_IF_ERROR(
      UploadRope(RopeTable(config.head_dim(), config.rope_theta, max_pos), dcos, dsin));
  CATSERVE_RETURN_IF_ERROR(
      UploadRope(RopeTable(config.compressor_head_dim(), config.rope_theta, max_pos), ccos, csin));
  absl::StatusOr<const cuda::CublasLibrary*> library = cuda::LoadCublas();
  if (!library.ok()) return library.status();
  cudaStream_t stream = nullptr;
  CATSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                "cudaStreamCreate");
  cublasHandle_t cublas = nullptr;
  // cuBLAS's workspace is ours (the size NVIDIA advises for Hopper), so that GEMMs captured into
  // a CUDA graph allocate nothing.
  DeviceBuffer workspace;
  absl::Status s = workspace.Reserve(kCublasWorkspaceBytes);
  if (s.ok()) s = CublasStatus(**library, (*library)->create(&cublas), "cublasCreate");
  if (s.ok())
    s = CublasStatus(**library, (*library)->set_stream(cublas, stream), "cublasSetStream");
  if (s.ok()) {
    s = CublasStatus(**library,
                     (*library)->set_workspace(cublas, workspace.data(), kCublasWorkspaceBytes),
                     "cublasSetWorkspace");
  }
  if (!s.ok()) {
    if (cublas != nullptr) (*library)->destroy(cublas);
    cudaStreamDestroy(stream);
    return s;
  }
  return std::unique_ptr<Engine>(
      new CudaEngine(config, device, stream, *library, cublas, *std::move(w), std::move(dcos),
                     std::move(dsin), std::move(ccos), std::move(csin), multiprocessors,
                     options.cuda_attention, options.cuda_graphs, std::move(workspace)));
}

}  // namespace catserve::engine
