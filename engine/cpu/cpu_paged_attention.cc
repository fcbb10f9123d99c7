#include "engine/cpu/cpu_paged_attention.h"

#include <algorithm>
#include <cmath>

#include "engine/kv/page_layout.h"

namespace catserve::engine {

void CpuPagedAttention::Run(ThreadPool& threads, const StepPlan& plan, const SplitKvPlan& splits,
                            absl::Span<const StepItem> items, KvPool& pool, int layer,
                            const float* qkv, int heads, float* out) {
  const KvGeometry& g = pool.geometry();
  const int Hkv = g.kv_heads, hd = g.head_dim, B = g.page_entries, H = heads;
  const int group = H / Hkv, qkv_stride = (H + 2 * Hkv) * hd;
  const size_t bytes = g.bytes_per_value();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto attend = kernels_.attend[static_cast<int>(g.dtype)];
  const int num_splits = static_cast<int>(splits.splits.size());
  split_slot_.resize(num_splits + 1);
  split_slot_[0] = 0;
  for (int s = 0; s < num_splits; ++s) {
    const std::pair<int, int>& rows = plan.item_rows[splits.splits[s].item];
    split_slot_[s + 1] =
        split_slot_[s] + static_cast<size_t>(rows.second - rows.first) * group * Hkv;
  }
  max_.resize(split_slot_[num_splits]);
  sum_.resize(split_slot_[num_splits]);
  acc_.resize(split_slot_[num_splits] * hd);

  // One task per split, all kv heads: a page's keys of this layer for every kv head are one
  // contiguous block, and so are its values, so a task sweeps each batch of pages once.
  threads.ParallelFor(num_splits, [&](int begin, int end) {
    for (int s = begin; s < end; ++s) {
      const SplitKvPlan::Split& sp = splits.splits[s];
      const int r0 = plan.item_rows[sp.item].first, r1 = plan.item_rows[sp.item].second;
      const int nq = (r1 - r0) * group;
      const size_t slots = static_cast<size_t>(nq) * Hkv;
      float* m = max_.data() + split_slot_[s];
      float* sum = sum_.data() + split_slot_[s];
      float* acc = acc_.data() + split_slot_[s] * hd;
      std::fill(m, m + slots, -INFINITY);
      std::fill(sum, sum + slots, 0.0f);
      std::fill(acc, acc + slots * hd, 0.0f);
      const SequencePages& pages = items[sp.item].seq->pages;
      // [layer][k or v][kv_head][slot][head_dim] within a page.
      // Byte offsets within a page, by page_layout.h.
      const auto at_byte = [&](int kv, int kvh, int slot) {
        return PageValueIndex(layer, kv, kvh, slot, Hkv, B, hd) * bytes;
      };
      // The split's page runs go to attend a batch at a time (kKeysPerCall keys or kRunsPerCall
      // runs): one call per kv head and row then covers several pages, so the kernel's per-call
      // work (the query's conversion, the accumulator's load and store, the rescale) is shared by
      // them. No software prefetch: fetching the next pages' blocks ahead measured no faster than
      // the hardware prefetchers alone (docs/BENCHMARKS.md).
      struct PageRun {
        const std::byte* page;
        bool compressed;
        int entry, n;
      };
      PageRun batch[kRunsPerCall];
      int batched = 0, batched_keys = 0;
      auto flush = [&] {
        for (int kvh = 0; kvh < Hkv; ++kvh) {
          for (int t = r0; t < r1; ++t) {
            const StepPlan::Row& row = plan.rows[t];
            KvRun runs[kRunsPerCall];
            int num_runs = 0;
            for (int b = 0; b < batched; ++b) {
              const PageRun& pr = batch[b];
              const int visible =
                  pr.compressed ? row.visible_compressed : (row.compressed ? 0 : row.entry + 1);
              const int seen = std::min(pr.n, visible - pr.entry);
              if (seen <= 0) continue;
              const int slot = pr.entry % B;
              runs[num_runs++] = {pr.page + at_byte(0, kvh, slot), pr.page + at_byte(1, kvh, slot),
                                  seen};
            }
            if (num_runs == 0) continue;
            // The group's query heads, their states and their q vectors are contiguous.
            const size_t qi = static_cast<size_t>(kvh) * nq + (t - r0) * group;
            const float* q = qkv + static_cast<size_t>(t) * qkv_stride + kvh * group * hd;
            attend(q, group, runs, num_runs, hd, scale, m + qi, sum + qi, acc + qi * hd);
          }
        }
        batched = batched_keys = 0;
      };
      ForEachPageRun(sp.begin, sp.end, splits.compressed_keys[sp.item], B,
                     [&](bool compressed, int entry, int n) {
                       const std::vector<int32_t>& region =
                           compressed ? pages.compressed : pages.local;
                       batch[batched++] = {pool.page_data(region[entry / B]), compressed, entry, n};
                       batched_keys += n;
                       if (batched == kRunsPerCall || batched_keys >= kKeysPerCall) flush();
                     });
      flush();
    }
  });

  // Merge every item's splits, one task per (item, kv head).
  const int num_items = static_cast<int>(items.size());
  threads.ParallelFor(num_items * Hkv, [&](int begin, int end) {
    for (int task = begin; task < end; ++task) {
      const int item = task / Hkv, kvh = task % Hkv;
      const int r0 = plan.item_rows[item].first, r1 = plan.item_rows[item].second;
      const int nq = (r1 - r0) * group;
      const int s0 = splits.first_split[item], n = splits.first_split[item + 1] - s0;
      // Consecutive splits of one item are split_slot_ apart by the same stride.
      const size_t stride = static_cast<size_t>(nq) * Hkv;
      for (int qi = 0; qi < nq; ++qi) {
        const size_t slot = split_slot_[s0] + static_cast<size_t>(kvh) * nq + qi;
        const int t = r0 + qi / group, qg = qi % group;
        MergeAttentionPartials(max_.data() + slot, sum_.data() + slot, acc_.data() + slot * hd, n,
                               stride, hd,
                               out + (static_cast<size_t>(t) * H + kvh * group + qg) * hd);
      }
    }
  });
}

}  // namespace catserve::engine
