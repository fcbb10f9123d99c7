// The split-KV decomposition both backends share: split boundaries, page walks and the exact
// log-sum-exp merge.
#include "engine/step/split_kv_plan.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/kv/sequence.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

struct PageRun {
  bool compressed;
  int entry;
  int count;
  bool operator==(const PageRun&) const = default;
};

std::vector<PageRun> Walk(int begin, int end, int compressed_keys, int page_entries) {
  std::vector<PageRun> runs;
  ForEachPageRun(begin, end, compressed_keys, page_entries, [&](bool c, int e, int n) {
    runs.push_back({c, e, n});
  });
  return runs;
}

TEST(ForEachPageRunTest, RunsStayInOnePageAndCrossIntoTheLocalRegion) {
  // Keys 3..13 of an item with 6 compressed keys, 4 entries a page: compressed 3 (ends page 0),
  // 4..5 (page 1), then local 0..3 (page 0) and 4 (page 1).
  EXPECT_EQ(Walk(3, 13, 6, 4),
            (std::vector<PageRun>{{true, 3, 1}, {true, 4, 2}, {false, 0, 4}, {false, 4, 3}}));
  EXPECT_TRUE(Walk(5, 5, 6, 4).empty());
  EXPECT_EQ(Walk(7, 9, 6, 4), (std::vector<PageRun>{{false, 1, 2}}));
}

TEST(ForEachPageRunTest, EveryRangeIsCoveredOnceInKeyOrder) {
  for (int page_entries : {1, 3, 4, 16}) {
    for (int compressed = 1; compressed <= 9; ++compressed) {
      for (int begin = 0; begin <= 14; ++begin) {
        for (int end = begin; end <= 14; ++end) {
          int key = begin;
          for (const PageRun& r : Walk(begin, end, compressed, page_entries)) {
            ASSERT_EQ(r.compressed, key < compressed);
            ASSERT_EQ(r.entry, r.compressed ? key : key - compressed);
            ASSERT_GT(r.count, 0);
            ASSERT_EQ(r.entry / page_entries, (r.entry + r.count - 1) / page_entries);
            key += r.count;
            if (r.compressed) {
              ASSERT_LE(key, compressed);
            }
          }
          ASSERT_EQ(key, end);
        }
      }
    }
  }
}

// A step with a decode item (chunk 4, 37 cached: 10 compressed keys, local S + 1 token + the new
// token), an item completing a chunk (rows [fx, S]) and a fresh prefill of 23 tokens.
struct Step {
  std::vector<SequenceState> seqs;
  std::vector<StepItem> items;
  StepPlan plan;
};

void MakeStep(Step& step) {
  step.seqs.resize(3);
  const int chunk[] = {4, 2, 4}, cached[] = {37, 41, 0}, fed[] = {1, 1, 23};
  for (int i = 0; i < 3; ++i) {
    step.seqs[i].chunk_size = chunk[i];
    step.seqs[i].cached = cached[i];
    step.seqs[i].tokens.assign(cached[i] + fed[i], 5);
  }
  for (int i = 0; i < 3; ++i) step.items.push_back({&step.seqs[i], fed[i], true});
  step.plan.Build(step.items);
}

TEST(SplitKvPlanTest, KeysPerItemAreWhatItsRowsSee) {
  Step step;
  MakeStep(step);
  SplitKvPlan p;
  p.BuildFixed(step.plan, 1);
  EXPECT_EQ(p.compressed_keys, (std::vector<int>{10, 22, 6}));
  EXPECT_EQ(p.local_keys, (std::vector<int>{3, 1, 4}));
}

TEST(SplitKvPlanTest, FixedSplitsCoverEveryKeyOnceIncludingEmptySplits) {
  Step step;
  MakeStep(step);
  for (int n = 1; n <= 30; ++n) {
    SplitKvPlan p;
    p.BuildFixed(step.plan, n);
    ASSERT_EQ(p.first_split.size(), 4u);
    for (int i = 0; i < 3; ++i) {
      const int keys = p.compressed_keys[i] + p.local_keys[i];
      ASSERT_EQ(p.first_split[i + 1] - p.first_split[i], n);
      int key = 0, empty = 0;
      for (int s = p.first_split[i]; s < p.first_split[i + 1]; ++s) {
        EXPECT_EQ(p.splits[s].item, i);
        EXPECT_EQ(p.splits[s].begin, key);
        EXPECT_EQ(p.splits[s].end, (s - p.first_split[i] + 1) * keys / n);
        empty += p.splits[s].begin == p.splits[s].end;
        key = p.splits[s].end;
      }
      EXPECT_EQ(key, keys);
      EXPECT_EQ(empty, std::max(0, n - keys));
    }
  }
}

TEST(SplitKvPlanTest, BuildSpreadsLongItemsOverWorkersAndKeepsShortOnesWhole) {
  SequenceState longer, shorter;
  longer.chunk_size = 1;
  longer.cached = 4000;
  longer.tokens.assign(4001, 5);
  shorter.chunk_size = 16;
  shorter.cached = 100;
  shorter.tokens.assign(101, 5);
  const std::vector<StepItem> items = {{&longer, 1, true}, {&shorter, 1, true}};
  StepPlan plan;
  plan.Build(items);
  SplitKvPlan p;
  // 4003 and 13 keys. One worker: at most kTasksPerWorker = 4 splits an item.
  p.Build(plan, 1);
  EXPECT_EQ(p.first_split, (std::vector<int>{0, 4, 5}));
  // Eight: at most 32, but no split under kMinSplitKeys = 256 keys: 4003 / 256 = 15.
  p.Build(plan, 8);
  EXPECT_EQ(p.first_split, (std::vector<int>{0, 15, 16}));
  // Alone, the long item splits the same way: its results do not depend on the batch.
  const std::vector<StepItem> alone = {{&longer, 1, true}};
  StepPlan alone_plan;
  alone_plan.Build(alone);
  SplitKvPlan q;
  q.Build(alone_plan, 8);
  EXPECT_EQ(q.first_split, (std::vector<int>{0, 15}));
  for (const SplitKvPlan::Split& s : p.splits) {
    if (s.item == 0) {
      EXPECT_GE(s.end - s.begin, SplitKvPlan::kMinSplitKeys);
    }
  }
}

// Partials of one query over `splits` contiguous splits of `scores`, and the direct softmax.
TEST(MergeAttentionPartialsTest, EqualsTheUnsplitSoftmaxForEverySplitCount) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  const int keys = 19, hd = 5;
  std::vector<float> score(keys), value(keys * hd);
  for (float& s : score) s = normal(rng);
  for (float& v : value) v = normal(rng);
  std::vector<double> want(hd, 0.0);
  double total = 0;
  for (int k = 0; k < keys; ++k) {
    const double p = std::exp(static_cast<double>(score[k]));
    total += p;
    for (int d = 0; d < hd; ++d) want[d] += p * value[k * hd + d];
  }
  for (int splits = 1; splits <= keys + 3; ++splits) {
    // Interleave two queries' partials to check the stride: query 0 real, query 1 garbage.
    std::vector<float> max(2 * splits, 1e30f), sum(2 * splits, 1e30f), acc(2 * splits * hd, 1e30f);
    for (int s = 0; s < splits; ++s) {
      const int b = s * keys / splits, e = (s + 1) * keys / splits;
      float m = -INFINITY;
      for (int k = b; k < e; ++k) m = std::max(m, score[k]);
      float z = 0;
      std::vector<float> a(hd, 0.0f);
      for (int k = b; k < e; ++k) {
        const float p = std::exp(score[k] - m);
        z += p;
        for (int d = 0; d < hd; ++d) a[d] += p * value[k * hd + d];
      }
      max[2 * s] = m;
      sum[2 * s] = z;
      std::copy(a.begin(), a.end(), acc.begin() + 2 * s * hd);
    }
    std::vector<float> out(hd);
    MergeAttentionPartials(max.data(), sum.data(), acc.data(), splits, 2, hd, out.data());
    for (int d = 0; d < hd; ++d) {
      EXPECT_NEAR(out[d], want[d] / total, 2e-6 * (1 + std::abs(want[d] / total)))
          << splits << " splits, d " << d;
    }
  }
}

}  // namespace
}  // namespace catserve::engine
