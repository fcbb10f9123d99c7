// Incremental, batched decoding must equal the reference full forward at every position, for
// every chunk size, with sequences of different chunk sizes and lengths sharing steps.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <utility>

#include "engine/cpu/cpu_engine.h"
#include "gtest/gtest.h"
#include "tests/common/interleaved_run.h"
#include "tests/common/logits_oracle.h"
#include "tests/common/test_models.h"
#include "tests/support/random_model.h"
#include "tests/support/reference_forward.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::TinyConfig;

using ::catserve::testing::InterleavedCase;
using ::catserve::testing::LogitsRow;

// NaN-aware: a NaN logit is an infinite difference, never a pass.
float MaxAbsDiff(const float* a, const float* b, int n) {
  return ::catserve::testing::MaxAbsDiff(absl::MakeConstSpan(a, n), absl::MakeConstSpan(b, n));
}

// Runs all cases through one engine in shared steps (tests/common/interleaved_run.h checks the
// page accounting after every step) and checks every logits row against the reference forward.
// Returns the largest difference seen.
float ExpectMatchesReference(CpuEngine& engine, const std::vector<InterleavedCase>& cases,
                             uint64_t seed, float tolerance = 1e-4f) {
  const ModelConfig& c = engine.config();
  const int V = c.vocab_size;
  const auto tokens = ::catserve::testing::InterleavedTokens(cases, V, seed);
  std::vector<std::vector<float>> reference;
  for (size_t i = 0; i < cases.size(); ++i) {
    auto ref = ReferenceForward(c, engine.weights(), tokens[i], cases[i].chunk_size);
    EXPECT_TRUE(ref.ok()) << ref.status();
    if (!ref.ok()) return INFINITY;
    reference.push_back(*std::move(ref));
  }
  const std::vector<LogitsRow> rows = ::catserve::testing::RunInterleaved(engine, cases, seed);
  EXPECT_EQ(rows.size(), static_cast<size_t>(::catserve::testing::ExpectedRows(cases)));
  float largest = 0;
  for (const LogitsRow& r : rows) {
    const float diff =
        MaxAbsDiff(r.logits.data(), reference[r.case_index].data() + r.position * V, V);
    EXPECT_LE(diff, tolerance) << "chunk size " << cases[r.case_index].chunk_size << " row "
                               << r.position;
    largest = std::max(largest, diff);
  }
  return largest;
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

// 16-bit KV rounds every cached key and value to nearest even (relative error <= 2^-9 for bf16,
// 2^-12 for fp16); everything else is the fp32 engine. On the tiny models, with logits of
// magnitude up to ~5, the largest logit moved by 0.0074 (MHA) and 0.065 (GQA, q/k norms) with
// bf16 and 0.0013 / 0.0076 with fp16 (8x less, the 3 bits more); the bounds leave ~1.5x margin.
// More than the fp32 tolerance must move, so the format really is in use.
constexpr float kBf16KvBound = 0.1f, kFp16KvBound = 0.015f;

TEST_P(IncrementalTest, SixteenBitKvStaysWithinItsBound) {
  const ModelConfig c = TinyConfig(GetParam());
  for (auto [dtype, bound] :
       {std::pair{KvDtype::kBf16, kBf16KvBound}, std::pair{KvDtype::kFp16, kFp16KvBound}}) {
    CpuEngine engine(c, RandomModelWeights(c, 7), EngineOptions{.threads = 2, .kv_dtype = dtype});
    const float largest =
        ExpectMatchesReference(engine, ::catserve::testing::MixedCases(), 11, bound);
    EXPECT_GT(largest, 1e-4f) << KvDtypeName(dtype);
    std::printf("%s KV: largest logit difference %g\n", KvDtypeName(dtype), largest);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, IncrementalTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gqa" : "Mha"; });

// The tiny models' head size (16) takes the kernels' composed path; these take the fused AVX2
// kernel (head size 32) with GQA groups of 2 and of 4 (one tile each), through the whole engine.
// (Wider random models move logits by more than the 1e-4 tolerance on the composed path too.)
TEST(FusedHeadSizeTest, GroupedQueryHeadsMatchReference) {
  for (int kv_heads : {2, 1}) {
    ModelConfig c = TinyConfig(true);
    c.hidden_size = 128;  // 4 heads of 32
    c.num_kv_heads = kv_heads;
    SCOPED_TRACE(::testing::Message() << "4 heads over " << kv_heads << " kv heads");
    CpuEngine engine(c, RandomModelWeights(c, 9), EngineOptions{.threads = 2});
    ExpectMatchesReference(engine, ::catserve::testing::MixedCases(), 13);
  }
}

// The logits of a long context (more keys than one split takes) are the same bits on one compute
// thread and on three: the split-KV plan and the GEMMs' rows do not depend on the thread count,
// so a seeded request draws the same tokens on any machine size.
TEST(EngineStepTest, LogitsDoNotDependOnTheThreadCount) {
  ModelConfig c = TinyConfig(true);
  c.max_position_embeddings = 4096;
  const ModelWeights weights = RandomModelWeights(c, 4);
  std::vector<std::vector<float>> logits;
  for (int threads : {1, 3}) {
    CpuEngine engine(c, weights, EngineOptions{.threads = threads});
    absl::StatusOr<KvPool> pool = engine.CreateKvPool(512, 16);
    ASSERT_TRUE(pool.ok());
    SequenceState s;
    s.chunk_size = 1;  // 3000 compressed keys: several splits
    for (int t = 0; t < 3000; ++t) s.tokens.push_back(3 + (t * 37) % 90);
    ASSERT_TRUE(ReservePages(*pool, s, 3000));
    std::vector<float> row(c.vocab_size);
    StepItem item{&s, 3000, true};
    ASSERT_TRUE(engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(row)).ok());
    // One decode step on top, which reads the 3000-key cache through the split attention.
    s.tokens.push_back(7);
    ASSERT_TRUE(ReservePages(*pool, s, 3001));
    item = {&s, 1, true};
    ASSERT_TRUE(engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(row)).ok());
    logits.push_back(row);
    pool->ReleaseAll(s.pages);
  }
  EXPECT_EQ(logits[0], logits[1]);
}

TEST(EngineStepTest, RejectsAPoolOfAnotherKvDtype) {
  const ModelConfig c = TinyConfig(false);
  CpuEngine engine(c, RandomModelWeights(c, 1), EngineOptions{.threads = 1});
  KvGeometry g = engine.kv_geometry(16);
  g.dtype = KvDtype::kBf16;
  absl::StatusOr<KvPool> pool = KvPool::Create(g, 2);
  ASSERT_TRUE(pool.ok());
  SequenceState s;
  s.chunk_size = 4;
  s.tokens = {5, 6};
  ASSERT_TRUE(ReservePages(*pool, s, 2));
  std::vector<float> logits(c.vocab_size);
  StepItem item{&s, 2, true};
  const absl::Status st = engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "the CPU engine needs a host KV pool of its own geometry (kv dtype fp32): make it with "
            "CreateKvPool");
  EXPECT_EQ(s.cached, 0);
  pool->ReleaseAll(s.pages);
}

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
  absl::Status st = engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token id 1000"), std::string::npos) << st;
  EXPECT_EQ(s.cached, 0);

  s.tokens = {5, 6, 7};
  s.chunk_size = 3;
  st = engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("chunk size 3"), std::string::npos) << st;

  s.chunk_size = 4;
  SequenceState unreserved;
  unreserved.chunk_size = 4;
  unreserved.tokens = {5};
  StepItem bare{&unreserved, 1, true};
  st = engine.StepLogits({&bare, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  pool->ReleaseAll(s.pages);
  EXPECT_EQ(pool->used_pages(), 0);
}

}  // namespace
}  // namespace catserve::engine
