// Incremental, batched decoding must equal the reference full forward at every position, for
// every chunk size, with sequences of different chunk sizes and lengths sharing steps.
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "engine/cpu_engine.h"
#include "engine/random_model.h"
#include "engine/reference_forward.h"
#include "gtest/gtest.h"
#include "tests/common/test_models.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::TinyConfig;

struct Case {
  int chunk_size;
  int prompt;
  int total;
  int join_step;
  int piece;  // longest prefill piece per step
};

float MaxAbsDiff(const float* a, const float* b, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Runs all cases through one engine in shared steps and checks every logits row against the
// reference forward. Also checks page accounting after every step.
void RunInterleaved(CpuEngine& engine, const std::vector<Case>& cases, uint64_t seed) {
  const ModelConfig& c = engine.config();
  const int V = c.vocab_size;
  absl::StatusOr<KvPool> pool = KvPool::Create(engine.kv_geometry(4), 4096);
  ASSERT_TRUE(pool.ok());
  std::mt19937 rng(seed);
  struct Live {
    Case spec;
    SequenceState seq;
    std::vector<int32_t> all_tokens;
    std::vector<float> reference;
    bool done = false;
  };
  std::vector<Live> live(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    live[i].spec = cases[i];
    live[i].seq.chunk_size = cases[i].chunk_size;
    std::uniform_int_distribution<int32_t> tok(3, V - 1);
    for (int t = 0; t < cases[i].total; ++t) live[i].all_tokens.push_back(tok(rng));
    auto ref = ReferenceForward(c, engine.weights(), live[i].all_tokens, cases[i].chunk_size);
    ASSERT_TRUE(ref.ok()) << ref.status();
    live[i].reference = *std::move(ref);
  }
  std::vector<float> logits;
  int checked = 0;
  for (int step = 0;; ++step) {
    std::vector<StepItem> items;
    std::vector<Live*> owners;
    bool any_left = false;
    for (Live& l : live) {
      if (l.done) continue;
      any_left = true;
      if (step < l.spec.join_step) continue;
      const int cached = l.seq.cached;
      int n = cached < l.spec.prompt ? std::min(l.spec.piece, l.spec.prompt - cached) : 1;
      for (int k = 0; k < n; ++k) l.seq.tokens.push_back(l.all_tokens[cached + k]);
      ASSERT_TRUE(ReservePages(*pool, l.seq, cached + n));
      items.push_back({&l.seq, n, cached + n >= l.spec.prompt});
      owners.push_back(&l);
    }
    if (!any_left) break;
    if (items.empty()) continue;
    logits.assign(items.size() * V, 0.0f);
    ASSERT_TRUE(engine.Step(items, *pool, absl::MakeSpan(logits)).ok());
    int expected_pages = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      Live& l = *owners[i];
      TrimPages(*pool, l.seq);
      const int row = l.seq.cached;
      if (items[i].want_logits) {
        const float diff = MaxAbsDiff(logits.data() + i * V, l.reference.data() + row * V, V);
        ASSERT_LE(diff, 1e-4) << "chunk size " << l.spec.chunk_size << " row " << row;
        ++checked;
      }
      if (l.seq.cached == l.spec.total) {
        pool->ReleaseAll(l.seq.pages);
        l.done = true;
      }
    }
    for (Live& l : live) {
      if (l.done || l.seq.cached == 0) continue;
      const KvEntries e = KvEntriesAfter(l.seq.cached, l.seq.chunk_size);
      expected_pages += pool->PagesFor(e.compressed) + pool->PagesFor(e.local);
    }
    ASSERT_EQ(pool->used_pages(), expected_pages) << "step " << step;
  }
  EXPECT_EQ(pool->used_pages(), 0);
  int expected_checks = 0;
  for (const Case& k : cases) expected_checks += k.total - k.prompt + 1;
  EXPECT_EQ(checked, expected_checks);
}

std::vector<Case> MixedCases() {
  return {
      {1, 7, 40, 0, 3},     {2, 13, 60, 1, 64}, {4, 1, 33, 0, 1},       {8, 37, 90, 3, 8},
      {16, 48, 127, 2, 16}, {16, 5, 64, 5, 2},  {8, 16, 41, 0, 64},     {4, 64, 100, 7, 20},
      {2, 2, 19, 9, 1},     {1, 30, 55, 4, 7},  {16, 127, 128, 0, 128}, {8, 100, 128, 1, 33},
  };
}

class IncrementalTest : public ::testing::TestWithParam<bool> {};

TEST_P(IncrementalTest, MatchesReferenceUnderRaggedBatches) {
  const ModelConfig c = TinyConfig(GetParam());
  CpuEngine engine(c, RandomModelWeights(c, 7), EngineOptions{.threads = 2});
  RunInterleaved(engine, MixedCases(), 11);
}

TEST_P(IncrementalTest, EveryChunkSizeAloneTokenByToken) {
  const ModelConfig c = TinyConfig(GetParam());
  CpuEngine engine(c, RandomModelWeights(c, 3), EngineOptions{.threads = 1});
  for (int l : c.chunk_sizes()) {
    RunInterleaved(engine, {{l, 1, 50, 0, 1}, {l, 33, 70, 0, 33}}, 5 + l);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, IncrementalTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gqa" : "Mha"; });

TEST(EngineStepTest, RejectsBadItemsWithoutChangingState) {
  const ModelConfig c = TinyConfig(false);
  CpuEngine engine(c, RandomModelWeights(c, 1), EngineOptions{.threads = 1});
  absl::StatusOr<KvPool> pool = KvPool::Create(engine.kv_geometry(16), 8);
  ASSERT_TRUE(pool.ok());
  SequenceState s;
  s.chunk_size = 4;
  s.tokens = {5, 6, 1000};
  ASSERT_TRUE(ReservePages(*pool, s, 3));
  std::vector<float> logits(c.vocab_size);
  StepItem item{&s, 3, true};
  absl::Status st = engine.Step({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token id 1000"), std::string::npos) << st;
  EXPECT_EQ(s.cached, 0);

  s.tokens = {5, 6, 7};
  s.chunk_size = 3;
  st = engine.Step({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("chunk size 3"), std::string::npos) << st;

  s.chunk_size = 4;
  SequenceState unreserved;
  unreserved.chunk_size = 4;
  unreserved.tokens = {5};
  StepItem bare{&unreserved, 1, true};
  st = engine.Step({&bare, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  pool->ReleaseAll(s.pages);
  EXPECT_EQ(pool->used_pages(), 0);
}

}  // namespace
}  // namespace catserve::engine
