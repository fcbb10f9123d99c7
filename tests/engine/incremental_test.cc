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
#include "tests/common/interleaved_run.h"
#include "tests/common/test_models.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::TinyConfig;

using ::catserve::testing::InterleavedCase;
using ::catserve::testing::LogitsRow;

float MaxAbsDiff(const float* a, const float* b, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Runs all cases through one engine in shared steps (tests/common/interleaved_run.h checks the
// page accounting after every step) and checks every logits row against the reference forward.
void ExpectMatchesReference(CpuEngine& engine, const std::vector<InterleavedCase>& cases,
                            uint64_t seed) {
  const ModelConfig& c = engine.config();
  const int V = c.vocab_size;
  const auto tokens = ::catserve::testing::InterleavedTokens(cases, V, seed);
  std::vector<std::vector<float>> reference;
  for (size_t i = 0; i < cases.size(); ++i) {
    auto ref = ReferenceForward(c, engine.weights(), tokens[i], cases[i].chunk_size);
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference.push_back(*std::move(ref));
  }
  const std::vector<LogitsRow> rows = ::catserve::testing::RunInterleaved(engine, cases, seed);
  ASSERT_EQ(rows.size(), static_cast<size_t>(::catserve::testing::ExpectedRows(cases)));
  for (const LogitsRow& r : rows) {
    const float diff =
        MaxAbsDiff(r.logits.data(), reference[r.case_index].data() + r.position * V, V);
    ASSERT_LE(diff, 1e-4) << "chunk size " << cases[r.case_index].chunk_size << " row "
                          << r.position;
  }
}

class IncrementalTest : public ::testing::TestWithParam<bool> {};

TEST_P(IncrementalTest, MatchesReferenceUnderRaggedBatches) {
  const ModelConfig c = TinyConfig(GetParam());
  CpuEngine engine(c, RandomModelWeights(c, 7), EngineOptions{.threads = 2});
  ExpectMatchesReference(engine, ::catserve::testing::MixedCases(), 11);
}

TEST_P(IncrementalTest, EveryChunkSizeAloneTokenByToken) {
  const ModelConfig c = TinyConfig(GetParam());
  CpuEngine engine(c, RandomModelWeights(c, 3), EngineOptions{.threads = 1});
  for (int l : c.chunk_sizes()) {
    ExpectMatchesReference(engine, {{l, 1, 50, 0, 1}, {l, 33, 70, 0, 33}}, 5 + l);
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
