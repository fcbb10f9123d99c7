#ifndef CATSERVE_ENGINE_STEP_SPLIT_KV_PLAN_H_
#define CATSERVE_ENGINE_STEP_SPLIT_KV_PLAN_H_

#include <algorithm>
#include <cstddef>
#include <vector>

#include "engine/step/step_plan.h"

namespace catserve::engine {

// How a step's decode attention is cut into independent pieces (split-KV), the same way on every
// backend. The keys an item's rows read are numbered in one order: its compressed entries
// 0..C-1 as keys 0..C-1, then its local entries 0..L-1 as keys C..C+L-1 (C and L: the most any
// of its rows sees). An item's K = C + L keys are cut into n contiguous splits, split s covering
// keys [s*K/n, (s+1)*K/n): a split may end mid-page, and is empty when n > K.
//
// For each kv head, a split's work scores every query of the item in that head group (all its
// rows, all q heads of the group) against each key of the split, each key read once, in key
// order, and leaves per query a partial (the CPU runs all kv heads of a split in one task, since a
// page holds a layer's keys of every kv head in one block; a GPU runs a block per split and kv
// head): m = the largest score it saw (-inf if none), sum = sum of exp(score - m) and
// acc = sum of exp(score - m) * value over the keys the query sees. MergeAttentionPartials then
// combines an item's partials in split order. A query sees compressed key e iff
// e < row.visible_compressed, and local entry e iff the row is not compressed and e <= row.entry.
struct SplitKvPlan {
  struct Split {
    int item;
    int begin;  // first key
    int end;    // one past the last key
  };

  std::vector<int> compressed_keys;  // per item: C
  std::vector<int> local_keys;       // per item: L
  std::vector<int> first_split;      // per item and one more: item i owns splits
                                     // [first_split[i], first_split[i + 1])
  std::vector<Split> splits;

  // Splits for `workers` parallel workers, one task per split: an item of K keys gets
  // clamp(K / kMinSplitKeys, 1, kTasksPerWorker * workers) splits, so a long item spreads over
  // every worker, no split is shorter than kMinSplitKeys keys (an item with fewer is one split),
  // and an item's splits, hence its results, do not depend on the other items of the step.
  void Build(const StepPlan& plan, int workers);
  // Exactly `splits_per_item` splits for every item (tests pin the merge with it).
  void BuildFixed(const StepPlan& plan, int splits_per_item);

  static constexpr int kMinSplitKeys = 256;
  static constexpr int kTasksPerWorker = 4;

 private:
  void CountKeys(const StepPlan& plan);
  void Cut(int item, int n);
};

// Calls fn(compressed, first_entry, count) for each run of keys [begin, end) of an item with
// `compressed_keys` compressed keys that lies in one page of `page_entries` entries, in key
// order: the page walk of one split (entry e of a region is slot e % page_entries of page
// pages[e / page_entries]).
template <typename Fn>
void ForEachPageRun(int begin, int end, int compressed_keys, int page_entries, Fn&& fn) {
  for (int key = begin; key < end;) {
    const bool compressed = key < compressed_keys;
    const int entry = compressed ? key : key - compressed_keys;
    const int region_end = compressed ? std::min(end, compressed_keys) : end;
    const int count = std::min(region_end - key, page_entries - entry % page_entries);
    fn(compressed, entry, count);
    key += count;
  }
}

// The exact log-sum-exp merge of `splits` partials of one query (layout above), each at
// max[s * stride], sum[s * stride] and acc[s * stride * head_dim ...]: with M the largest max,
// out = sum_s exp(max_s - M) acc_s / sum_s exp(max_s - M) sum_s, accumulated in split order and
// skipping the splits that saw no key (max -inf). At least one split must have seen a key.
void MergeAttentionPartials(const float* max, const float* sum, const float* acc, int splits,
                            size_t stride, int head_dim, float* out);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_STEP_SPLIT_KV_PLAN_H_
