#include "engine/cuda/split_kv_meta.h"

#include <algorithm>

#include "engine/kv/sequence.h"

namespace catserve::engine::cuda {

SplitKvMeta BuildSplitKvMeta(const StepPlan& plan, const SplitKvPlan& splits,
                             absl::Span<const StepItem> items, int group, int kv_heads) {
  SplitKvMeta meta;
  std::vector<std::pair<int32_t, int32_t>> item_pages(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const SequencePages& p = items[i].seq->pages;
    item_pages[i].first = static_cast<int32_t>(meta.page_lists.size());
    meta.page_lists.insert(meta.page_lists.end(), p.compressed.begin(), p.compressed.end());
    item_pages[i].second = static_cast<int32_t>(meta.page_lists.size());
    meta.page_lists.insert(meta.page_lists.end(), p.local.begin(), p.local.end());
  }
  meta.rows.reserve(plan.rows.size());
  for (const StepPlan::Row& r : plan.rows) {
    meta.rows.push_back({r.visible_compressed, r.compressed ? 0 : r.entry + 1,
                         item_pages[r.item].first, item_pages[r.item].second});
  }
  meta.items.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const auto [r0, r1] = plan.item_rows[i];
    const int first = splits.first_split[i], n = splits.first_split[i + 1] - first;
    meta.items.push_back({r0, r1 - r0, splits.compressed_keys[i], first, n,
                          static_cast<int32_t>(meta.partial_slots)});
    meta.partial_slots += static_cast<size_t>(n) * (r1 - r0) * group * kv_heads;
    meta.max_item_rows = std::max(meta.max_item_rows, r1 - r0);
  }
  meta.splits.reserve(splits.splits.size());
  for (const SplitKvPlan::Split& sp : splits.splits) {
    meta.splits.push_back({sp.item, sp.begin, sp.end});
  }
  return meta;
}

}  // namespace catserve::engine::cuda
