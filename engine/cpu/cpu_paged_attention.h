#ifndef CATSERVE_ENGINE_CPU_CPU_PAGED_ATTENTION_H_
#define CATSERVE_ENGINE_CPU_CPU_PAGED_ATTENTION_H_

#include <vector>

#include "absl/types/span.h"
#include "engine/kernels/attention_kernels.h"
#include "engine/kernels/thread_pool.h"
#include "engine/kv/kv_pool.h"
#include "engine/step/engine.h"
#include "engine/step/split_kv_plan.h"
#include "engine/step/step_plan.h"

namespace catserve::engine {

// The decoder's attention of one layer of a step on the CPU: every row of the step attends to the
// compressed and local entries it sees in a host KvPool of any dtype, split-KV as `splits` says
// (split_kv_plan.h: one task per split, all kv heads, then the exact merge). 16-bit keys and
// values are widened to fp32 as the kernels load them; all arithmetic is fp32. Holds its scratch
// across calls; one thread calls Run at a time.
class CpuPagedAttention {
 public:
  explicit CpuPagedAttention(const AttentionKernels& kernels = BestAttentionKernels())
      : kernels_(kernels) {}

  // qkv: the step's rows, each [q heads | k heads | v heads] x head_dim; out: [rows, heads *
  // head_dim]. Reads layer `layer` of the pool.
  void Run(ThreadPool& threads, const StepPlan& plan, const SplitKvPlan& splits,
           absl::Span<const StepItem> items, KvPool& pool, int layer, const float* qkv, int heads,
           float* out);

 private:
  // A split's page runs go to one attend call per kv head and row until they hold kKeysPerCall keys
  // (the AVX2 kernel's piece) or kRunsPerCall runs.
  static constexpr int kKeysPerCall = 64, kRunsPerCall = 8;

  const AttentionKernels& kernels_;
  // Per split: offset of its first query slot (slots of a split: kv head major, then rows of its
  // item, then q heads of the group).
  std::vector<size_t> split_slot_;
  std::vector<float> max_, sum_, acc_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_CPU_CPU_PAGED_ATTENTION_H_
