#ifndef CATSERVE_ENGINE_ENGINE_H_
#define CATSERVE_ENGINE_ENGINE_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/config.h"
#include "engine/cpu_ops.h"
#include "engine/kv_pool.h"
#include "engine/sequence.h"
#include "engine/thread_pool.h"
#include "engine/weights.h"

namespace catserve::engine {

struct EngineOptions {
  int threads = 0;  // compute threads; <= 0: one per hardware thread
};

// One sequence's share of a step: advance its cache over its next `num_tokens` tokens
// (seq->tokens[seq->cached, seq->cached + num_tokens)). A prompt's prefill is one item with many
// tokens (or several items over several steps); a decode step is one item with the one sampled
// token, which becomes [fx, S] plus a compressor call when it completes a chunk.
struct StepItem {
  SequenceState* seq = nullptr;
  int num_tokens = 0;
  bool want_logits = true;  // false for a prefill piece that is not the prompt's last
};

// A linear layer's shape: y[rows, out] = x[rows, in] W^T.
struct GemmShape {
  int rows;
  int in;
  int out;
};

// Counts of the work a step did, for metrics and benchmarks.
struct StepStats {
  int decoder_positions = 0;
  int compressed_chunks = 0;
  int compressor_positions = 0;
  std::vector<GemmShape> gemms;  // every GEMM of the step, in order (to time them alone)
};

// The CAT model on the CPU in fp32: the incremental, batched decoding of cat-model.md. Thread
// compatible: one thread calls Step at a time (it uses the engine's compute pool internally).
class Engine {
 public:
  // Loads config.json, the safetensors weights and checks them against each other.
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const std::filesystem::path& model_dir,
                                                      const EngineOptions& options = {});
  Engine(ModelConfig config, ModelWeights weights, const EngineOptions& options);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Page geometry for a KvPool this engine can use, with `page_entries` entries a page.
  KvGeometry kv_geometry(int page_entries) const;
  int threads() const { return compute_.size(); }

  // Advances every item's sequence and writes the next-token logits of item i to
  // logits[i * vocab_size ...] (only for items with want_logits). Each sequence appears at most
  // once; its pages must already cover KvEntriesAfter(cached + num_tokens). On success every
  // item's seq->cached grows by num_tokens. Errors (invalid token, unserved chunk size, too few
  // pages, length past max_position_embeddings) leave every sequence unchanged.
  absl::Status Step(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits,
                    StepStats* stats = nullptr);

 private:
  // One decoder position of a step.
  struct Row {
    int item;
    bool compressed;  // an F entry (position 0) rather than S or a token
    int entry;        // compressed index or local slot
    int pos;          // RoPE position
    int visible_compressed;
  };
  // One chunk to compress in this step, feeding decoder row `row`.
  struct Chunk {
    int item;
    int index;
    int first_row;  // its first compressor row
    int decoder_row;
  };

  absl::Status Validate(absl::Span<const StepItem> items, const KvPool& pool) const;
  void Plan(absl::Span<const StepItem> items);
  void RunCompressor(absl::Span<const StepItem> items);
  void RunDecoder(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits);
  // A linear layer through BLAS, logged in gemm_log_ when a caller asked for stats.
  void Gemm(const float* x, int rows, int in, const float* w, int out, float* y);
  void AttentionInputs(const BlockWeights& b, const RopeTable& rope, int rows,
                       const std::vector<int>& positions);
  void FinishBlock(const BlockWeights& b, int rows, std::vector<float>& x);

  ModelConfig config_;
  ModelWeights weights_;
  ThreadPool compute_;
  RopeTable decoder_rope_;
  RopeTable compressor_rope_;

  // Per-step plan and scratch, reused across steps.
  std::vector<Row> rows_;
  std::vector<int> row_positions_;
  std::vector<Chunk> chunks_;
  std::vector<int> chunk_positions_;
  std::vector<int> logit_row_;                  // per item: its last decoder row
  std::vector<std::pair<int, int>> item_rows_;  // per item: its decoder rows [first, end)
  std::vector<GemmShape>* gemm_log_ = nullptr;
  std::vector<float> x_, norm_, qkv_, attn_, proj_, gate_up_, act_, cx_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_ENGINE_H_
