#include "engine/cpu_paged_attention.h"

#include <algorithm>
#include <cmath>

namespace catserve::engine {

void CpuPagedAttention::Run(ThreadPool& threads, const StepPlan& plan, const SplitKvPlan& splits,
                            absl::Span<const StepItem> items, KvPool& pool, int layer,
                            const float* qkv, int heads, float* out) {
  const KvGeometry& g = pool.geometry();
  const int Hkv = g.kv_heads, hd = g.head_dim, B = g.page_entries, H = heads;
  const int group = H / Hkv, qkv_stride = (H + 2 * Hkv) * hd;
  const size_t bytes = g.bytes_per_value();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
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

  // One task per (split, kv head).
  threads.ParallelFor(num_splits * Hkv, [&](int begin, int end) {
    std::vector<float> kbuf, vbuf, p(B);
    for (int task = begin; task < end; ++task) {
      const int s = task / Hkv, kvh = task % Hkv;
      const SplitKvPlan::Split& sp = splits.splits[s];
      const int r0 = plan.item_rows[sp.item].first, r1 = plan.item_rows[sp.item].second;
      const int nq = (r1 - r0) * group;
      const size_t slot0 = split_slot_[s] + static_cast<size_t>(kvh) * nq;
      float* m = max_.data() + slot0;
      float* sum = sum_.data() + slot0;
      float* acc = acc_.data() + slot0 * hd;
      std::fill(m, m + nq, -INFINITY);
      std::fill(sum, sum + nq, 0.0f);
      std::fill(acc, acc + static_cast<size_t>(nq) * hd, 0.0f);
      const SequencePages& pages = items[sp.item].seq->pages;
      ForEachPageRun(
          sp.begin, sp.end, splits.compressed_keys[sp.item], B,
          [&](bool compressed, int entry, int n) {
            const int32_t page = (compressed ? pages.compressed : pages.local)[entry / B];
            // [layer][k or v][kv_head][slot][head_dim] within the page.
            const std::byte* k =
                pool.page_data(page) +
                (((static_cast<size_t>(layer) * 2) * Hkv + kvh) * B + entry % B) * hd * bytes;
            const std::byte* v = k + static_cast<size_t>(Hkv) * B * hd * bytes;
            const float* kf = reinterpret_cast<const float*>(k);
            const float* vf = reinterpret_cast<const float*>(v);
            if (g.dtype != KvDtype::kFp32) {
              const auto widen =
                  g.dtype == KvDtype::kBf16 ? kernels_.widen_bf16 : kernels_.widen_fp16;
              kbuf.resize(static_cast<size_t>(n) * hd);
              vbuf.resize(kbuf.size());
              widen(reinterpret_cast<const uint16_t*>(k), n * hd, kbuf.data());
              widen(reinterpret_cast<const uint16_t*>(v), n * hd, vbuf.data());
              kf = kbuf.data();
              vf = vbuf.data();
            }
            for (int t = r0; t < r1; ++t) {
              const StepPlan::Row& row = plan.rows[t];
              const int visible =
                  compressed ? row.visible_compressed : (row.compressed ? 0 : row.entry + 1);
              const int seen = std::min(n, visible - entry);
              if (seen <= 0) continue;
              for (int qg = 0; qg < group; ++qg) {
                const int qi = (t - r0) * group + qg;
                const float* q =
                    qkv + static_cast<size_t>(t) * qkv_stride + (kvh * group + qg) * hd;
                kernels_.scores(q, kf, seen, hd, scale, p.data());
                const float run_max = *std::max_element(p.data(), p.data() + seen);
                const float new_max = std::max(m[qi], run_max);
                const float keep = std::exp(m[qi] - new_max);  // 0 while m is -inf
                float run_sum = 0.0f;
                for (int j = 0; j < seen; ++j) {
                  p[j] = std::exp(p[j] - new_max);
                  run_sum += p[j];
                }
                sum[qi] = sum[qi] * keep + run_sum;
                kernels_.accumulate(keep, p.data(), vf, seen, hd,
                                    acc + static_cast<size_t>(qi) * hd);
                m[qi] = new_max;
              }
            }
          });
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
