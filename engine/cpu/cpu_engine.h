#ifndef CATSERVE_ENGINE_CPU_CPU_ENGINE_H_
#define CATSERVE_ENGINE_CPU_CPU_ENGINE_H_

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cpu/cpu_paged_attention.h"
#include "engine/cpu/host_step_sampler.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/kernels/thread_pool.h"
#include "engine/kv/kv_pool.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"
#include "engine/step/engine.h"
#include "engine/step/split_kv_plan.h"
#include "engine/step/step_plan.h"

namespace catserve::engine {

// The CAT model on the CPU in fp32 over a host KvPool that stores options.kv_dtype (fp32: the
// reference backend; bf16/fp16: half the KV bytes): the embedded default. Uses its own compute
// pool inside Step; the decode attention is split-KV (split_kv_plan.h, cpu_paged_attention.h).
class CpuEngine : public Engine {
 public:
  // The workers the decode attention's split-KV plan is cut for (SplitKvPlan::Build): up to
  // kTasksPerWorker * 8 = 32 splits of at least 256 keys per item, whatever the thread count.
  static constexpr int kSplitWorkers = 8;

  // LoadModel(model_dir), then the engine over it (what LoadEngine does for Device::kCpu).
  static absl::StatusOr<std::unique_ptr<CpuEngine>> Load(const std::filesystem::path& model_dir,
                                                         const EngineOptions& options = {});
  CpuEngine(ModelConfig config, ModelWeights weights, const EngineOptions& options);

  const ModelConfig& config() const override { return config_; }
  const ModelWeights& weights() const { return weights_; }
  KvGeometry kv_geometry(int page_entries) const override;
  int threads() const override { return compute_.size(); }

  // The forward, then the draws on the host sampling threads (EngineOptions::sampling_threads).
  absl::Status Step(absl::Span<const StepItem> items, KvPool& pool, absl::Span<SampledToken> tokens,
                    StepStats* stats = nullptr) override;
  absl::Status StepLogits(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits,
                          StepStats* stats = nullptr) override;

 private:
  void RunCompressor(absl::Span<const StepItem> items);
  void RunDecoder(absl::Span<const StepItem> items, KvPool& pool, absl::Span<float> logits,
                  StepStats* stats);
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

  const bool emulate_bf16_;
  const KvDtype kv_dtype_;
  HostStepSampler sampler_;
  std::vector<float> logits_;  // Step's rows, reused across steps

  // Per-step plan and scratch, reused across steps.
  StepPlan plan_;
  SplitKvPlan splits_;
  CpuPagedAttention attention_;
  std::vector<GemmShape>* gemm_log_ = nullptr;
  std::vector<float> x_, norm_, qkv_, attn_, proj_, gate_up_, act_, cx_, rounded_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_CPU_CPU_ENGINE_H_
