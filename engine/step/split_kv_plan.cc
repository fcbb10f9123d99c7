#include "engine/step/split_kv_plan.h"

#include <cmath>

namespace catserve::engine {

void SplitKvPlan::CountKeys(const StepPlan& plan) {
  const int items = static_cast<int>(plan.item_rows.size());
  compressed_keys.assign(items, 0);
  local_keys.assign(items, 0);
  for (const StepPlan::Row& r : plan.rows) {
    compressed_keys[r.item] = std::max(compressed_keys[r.item], r.visible_compressed);
    if (!r.compressed) local_keys[r.item] = std::max(local_keys[r.item], r.entry + 1);
  }
  first_split.assign(1, 0);
  splits.clear();
}

void SplitKvPlan::Cut(int item, int n) {
  const int keys = compressed_keys[item] + local_keys[item];
  for (int s = 0; s < n; ++s) {
    splits.push_back({item, static_cast<int>(static_cast<long>(s) * keys / n),
                      static_cast<int>(static_cast<long>(s + 1) * keys / n)});
  }
  first_split.push_back(static_cast<int>(splits.size()));
}

void SplitKvPlan::Build(const StepPlan& plan, int workers) {
  CountKeys(plan);
  const int most = kTasksPerWorker * std::max(workers, 1);
  for (size_t i = 0; i < compressed_keys.size(); ++i) {
    const int keys = compressed_keys[i] + local_keys[i];
    Cut(static_cast<int>(i), std::clamp(keys / kMinSplitKeys, 1, most));
  }
}

void SplitKvPlan::BuildFixed(const StepPlan& plan, int splits_per_item) {
  CountKeys(plan);
  for (size_t i = 0; i < compressed_keys.size(); ++i) Cut(static_cast<int>(i), splits_per_item);
}

void MergeAttentionPartials(const float* max, const float* sum, const float* acc, int splits,
                            size_t stride, int head_dim, float* out) {
  float best = -INFINITY;
  for (int s = 0; s < splits; ++s) best = std::max(best, max[s * stride]);
  float total = 0.0f;
  std::fill(out, out + head_dim, 0.0f);
  for (int s = 0; s < splits; ++s) {
    const float m = max[s * stride];
    if (m == -INFINITY) continue;
    const float f = std::exp(m - best);
    total += sum[s * stride] * f;
    const float* a = acc + s * stride * head_dim;
    for (int d = 0; d < head_dim; ++d) out[d] += a[d] * f;
  }
  const float inv = 1.0f / total;
  for (int d = 0; d < head_dim; ++d) out[d] *= inv;
}

}  // namespace catserve::engine
