#ifndef CATSERVE_ENGINE_CUDA_SPLIT_KV_META_H_
#define CATSERVE_ENGINE_CUDA_SPLIT_KV_META_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/cuda/kernels.h"
#include "engine/step/engine.h"
#include "engine/step/split_kv_plan.h"
#include "engine/step/step_plan.h"

namespace catserve::engine::cuda {

// The host-side metadata of one step's decode attention on the device (kernels.h): every row's
// span, every item's page lists (compressed pages then local ones, concatenated over the items),
// and the split-KV plan's items and splits with the partial slots they need.
struct SplitKvMeta {
  std::vector<AttentionRow> rows;
  std::vector<int32_t> page_lists;
  std::vector<SplitKvItem> items;
  std::vector<SplitKvSplit> splits;
  size_t partial_slots = 0;  // query slots over all splits (partials: max, sum, acc)
  int max_item_rows = 0;     // the most decoder rows of one item
};

// `plan` built over `items`, `splits` over `plan`; `group` q heads per kv head.
SplitKvMeta BuildSplitKvMeta(const StepPlan& plan, const SplitKvPlan& splits,
                             absl::Span<const StepItem> items, int group, int kv_heads);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_SPLIT_KV_META_H_
