#ifndef CATSERVE_ENGINE_STEP_ENGINE_H_
#define CATSERVE_ENGINE_STEP_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"
#include "engine/sampling/sampler.h"

namespace catserve::engine {

enum class Device { kCpu, kCuda };

// CUDA only: which kernels run the decoder's attention (engine/cuda/attention_routes.h). kAuto:
// FlashInfer's decode for decode rows and the tensor-core prefill for long items where they take
// the model's heads, catserve's split-KV kernel for the rest; kSplitKv: the split-KV kernel for
// every item (the kernel the oracle tests first proved).
enum class CudaAttention { kAuto, kSplitKv };

struct EngineOptions {
  int threads = 0;  // CPU compute threads; <= 0: one per hardware thread
  // CPU only: host threads Step draws a batch's tokens on; <= 1: the step's own thread.
  int sampling_threads = 1;
  Device device = Device::kCpu;
  CudaAttention cuda_attention = CudaAttention::kAuto;
  // CUDA only: replay decode steps from CUDA graphs, one per (rows, tiles) shape (cuda_engine.cc,
  // GraphRows); only where FlashInfer's decode takes the model's heads.
  bool cuda_graphs = true;
  // CPU only, for testing the CUDA backend: round weights, every GEMM input and every cached K/V
  // to bf16 where the CUDA backend stores bf16, so the CPU computes what the GPU should (it implies
  // kv_dtype bf16).
  bool emulate_bf16 = false;
  // Whether LoadEngine refuses a model with NaN or infinite weights (see WeightCheck).
  WeightCheck check_weights = WeightCheck::kAuto;
  // CPU only: how the KV pool stores keys and values (kv_dtype.h); fp32 keeps the CPU engine equal
  // to the reference forward. The CUDA backend always stores bf16.
  KvDtype kv_dtype = KvDtype::kFp32;
};

// One sequence's share of a step: advance its cache over its next `num_tokens` tokens
// (seq->tokens[seq->cached, seq->cached + num_tokens)). A prompt's prefill is one item with many
// tokens (or several items over several steps); a decode step is one item with the one sampled
// token, which becomes [fx, S] plus a compressor call when it completes a chunk.
struct StepItem {
  SequenceState* seq = nullptr;
  int num_tokens = 0;
  // Whether the item's last position predicts a token: its logits from StepLogits, a token drawn
  // with `sampling` from Step. False for a prefill piece that is not the prompt's last.
  bool want_logits = true;
  // What Step draws with (required there when want_logits): the request's sampling settings, the
  // index of this draw in its stream (its generated-token count; engine/sampling/draw.h), and how
  // many log-probabilities to return: -1 none, 0 the chosen token's, 1..kMaxTopLogprobs also
  // that many most likely alternatives.
  const SamplingParams* sampling = nullptr;
  uint64_t draw = 0;
  int logprobs = -1;
};

// A linear layer's shape: y[rows, out] = x[rows, in] W^T.
struct GemmShape {
  int rows;
  int in;
  int out;
};

// Where an engine runs and what memory it holds, for the daemon's sizing, log and metrics.
struct DeviceInfo {
  std::string name;          // "cpu", or the GPU's name
  size_t weights_bytes = 0;  // device memory the weights take; 0 on the CPU (not tracked)
  size_t free_bytes = 0;     // device memory free now; 0 on the CPU
  size_t total_bytes = 0;    // device memory in all; 0 on the CPU
};

// Counts of the work a step did, for metrics and benchmarks.
struct StepStats {
  int decoder_positions = 0;
  int compressed_chunks = 0;
  int compressor_positions = 0;
  std::vector<GemmShape> gemms;  // every GEMM of the step, in order (to time them alone)
  // CPU engine only (0 elsewhere): wall time of the decoder's attention over all layers, and the
  // KV bytes it read (each key and value an attention task reads, counted once per task).
  double attention_seconds = 0;
  size_t attention_kv_bytes = 0;
  // CUDA engine only (0 elsewhere): bytes the step copied from the device to the host (tokens,
  // log-probability rows, or every logits row for StepLogits).
  size_t device_to_host_bytes = 0;
  // CUDA engine only: whether the step was replayed from a CUDA graph (EngineOptions::cuda_graphs).
  bool from_graph = false;
};

// The incremental, batched CAT decoding (docs/CAT_MODEL.md) behind one interface, whatever the
// backend: CpuEngine (fp32, BLAS; the oracle) or CudaEngine (bf16 weights and KV on one GPU).
// Thread compatible: one thread calls Step at a time. LoadEngine (engine/load_engine.h) builds one.
class Engine {
 public:
  virtual ~Engine() = default;

  virtual const ModelConfig& config() const = 0;
  // Page geometry of the pools this engine uses, with `page_entries` entries a page.
  virtual KvGeometry kv_geometry(int page_entries) const = 0;
  // CPU compute threads the engine uses.
  virtual int threads() const = 0;
  // The CPU unless a backend says otherwise. Queries the device each call.
  virtual absl::StatusOr<DeviceInfo> device_info() const;

  // A pool of `num_pages` pages of kv_geometry(page_entries) in the memory this engine's Step
  // reads (host memory for the CPU, device memory for CUDA).
  virtual absl::StatusOr<KvPool> CreateKvPool(int num_pages, int page_entries) const;

  // Advances every item's sequence and draws the next token of each item with want_logits into
  // tokens[i] (tokens has one entry per item; the others are left as they are), next to the
  // model: only tokens and the log-probabilities asked for leave the engine. Each sequence
  // appears at most once; its pages must already cover KvEntriesAfter(cached + num_tokens), in a
  // pool made by this engine's CreateKvPool. On success every item's seq->cached grows by
  // num_tokens. Errors (invalid token, unserved chunk size, too few pages, length past
  // max_position_embeddings, a pool of the wrong kind, invalid sampling settings) leave every
  // sequence unchanged. INTERNAL is reserved for a device that can no longer compute (a sticky
  // CUDA error): the scheduler then fails every request and the daemon exits.
  virtual absl::Status Step(absl::Span<const StepItem> items, KvPool& pool,
                            absl::Span<SampledToken> tokens, StepStats* stats = nullptr) = 0;

  // The same step, returning raw logits instead of tokens: the next-token logits of item i in
  // logits[i * vocab_size ...] (only for items with want_logits; `sampling` is not read). For
  // the oracle tests and tools that need the distribution itself; serving uses Step.
  virtual absl::Status StepLogits(absl::Span<const StepItem> items, KvPool& pool,
                                  absl::Span<float> logits, StepStats* stats = nullptr) = 0;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_STEP_ENGINE_H_
