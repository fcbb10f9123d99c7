// The bf16 oracle of tests/common/logits_oracle.h on the CPU, without a GPU: the bf16-emulating
// CPU engine plays the candidate. A legitimate bf16 variant (weights rounded to bf16, the rest
// fp32) passes; every planted defect (tests/common/planted_defects.h) fed to the emulating engine
// is rejected, by the logits criterion at every chunk size it touches and by the greedy one. The
// CUDA tests run the same criterion and the same defects on the GPU engine.
#include "tests/common/logits_oracle.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/generate.h"
#include "engine/kv/bf16.h"
#include "engine/model/safetensors.h"
#include "gtest/gtest.h"
#include "tests/common/planted_defects.h"
#include "tests/common/run_alone.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::AfterStep;
using ::catserve::testing::GreedyAgreesUntilNearTie;
using ::catserve::testing::MatchesFp32LikeBf16;
using ::catserve::testing::RunAlone;
using Rows = std::vector<std::vector<float>>;

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;
constexpr int kGreedyTokens = 40;

ModelWeights WeightsRoundedToBf16(ModelWeights w) {
  auto round = [](std::vector<float>& v) {
    std::transform(v.begin(), v.end(), v.begin(), RoundToBf16);
  };
  round(w.compressor.wte);
  round(w.compressor.pos_tokens);
  round(w.compressor.adaptive_tokens);
  for (auto& [l, p] : w.compressor.proj_fx) round(p);
  round(w.decoder.embeddings);
  round(w.decoder.separator);
  round(w.decoder.adaptive_token);
  round(w.decoder.lm_head);
  for (auto* layers : {&w.compressor.layers, &w.decoder.layers}) {
    for (BlockWeights& b : *layers) {
      round(b.qkv);
      round(b.o);
      round(b.gate_up);
      round(b.down);
    }
  }
  return w;
}

class LogitsOracleTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = LoadModel(kFixtures / GetParam());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    fp32_ = std::make_unique<CpuEngine>(model_.config, model_.weights, EngineOptions{.threads = 2});
    emulated_ = Emulating(model_.weights);
    auto golden = TensorSet::OpenFile(kFixtures / GetParam() / "golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    auto tokens = golden->ReadInt32("tokens.odd");
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    tokens_ = *tokens;
  }

  std::unique_ptr<CpuEngine> Emulating(ModelWeights weights) const {
    return std::make_unique<CpuEngine>(model_.config, std::move(weights),
                                       EngineOptions{.threads = 2, .emulate_bf16 = true});
  }

  // The oracle over `tokens_` at chunk size l (first piece 1 and a third of the sequence),
  // with `candidate` (and `after_step` on the candidate's pool) in place of the GPU.
  ::testing::AssertionResult Check(Engine& candidate, int l,
                                   const AfterStep& after_step = nullptr) {
    Rows fp32, emulated, got;
    auto append = [](Rows& to, Rows rows) { to.insert(to.end(), rows.begin(), rows.end()); };
    for (int first_piece : {1, std::max<int>(1, tokens_.size() / 3)}) {
      append(fp32, RunAlone(*fp32_, tokens_, l, first_piece));
      append(emulated, RunAlone(*emulated_, tokens_, l, first_piece));
      append(got, RunAlone(candidate, tokens_, l, first_piece, after_step));
    }
    return MatchesFp32LikeBf16(fp32, emulated, got);
  }

  // Greedy generation (kGreedyTokens) of `candidate` against fp32's, from the first half of the
  // sequence.
  ::testing::AssertionResult CheckGreedy(Engine& candidate, int l, int* compared) {
    const std::vector<int32_t> prompt(tokens_.begin(), tokens_.begin() + tokens_.size() / 2);
    const int max_new = kGreedyTokens;
    const SamplingParams greedy{.temperature = 0.0f};
    auto want = GenerateAlone(*fp32_, prompt, l, max_new, greedy);
    auto got = GenerateAlone(candidate, prompt, l, max_new, greedy);
    if (!want.ok() || !got.ok()) return ::testing::AssertionFailure() << "generation failed";
    std::vector<int32_t> all = prompt;
    all.insert(all.end(), want->begin(), want->end());
    all.pop_back();
    const Rows fp32_logits = RunAlone(*fp32_, all, l, prompt.size());
    const Rows emulated_logits = RunAlone(*emulated_, all, l, prompt.size());
    return GreedyAgreesUntilNearTie(*want, fp32_logits, emulated_logits, *got, compared);
  }

  // The greedy check catches a defect at one of `sizes` at least (at the others the defect may
  // first show at a near-tie, where the comparison ends).
  ::testing::AssertionResult GreedyRejectsSomewhere(Engine& defective,
                                                    const std::vector<int>& sizes) {
    for (int l : sizes) {
      int compared = 0;
      if (!CheckGreedy(defective, l, &compared)) return ::testing::AssertionSuccess() << "at " << l;
    }
    return ::testing::AssertionFailure() << "the greedy check accepted the defect at every size";
  }

  Model model_;
  std::unique_ptr<CpuEngine> fp32_;
  std::unique_ptr<CpuEngine> emulated_;
  std::vector<int32_t> tokens_;
};

TEST_P(LogitsOracleTest, AcceptsBf16RoundingAtEveryChunkSize) {
  auto weights_only = std::make_unique<CpuEngine>(
      model_.config, WeightsRoundedToBf16(model_.weights), EngineOptions{.threads = 2});
  int compared_total = 0, generated_total = 0;
  for (int l : model_.config.chunk_sizes()) {
    EXPECT_TRUE(Check(*emulated_, l)) << "chunk size " << l;
    EXPECT_TRUE(Check(*weights_only, l)) << "chunk size " << l;
    int compared = 0;
    EXPECT_TRUE(CheckGreedy(*weights_only, l, &compared)) << "chunk size " << l;
    EXPECT_TRUE(CheckGreedy(*emulated_, l, &compared)) << "chunk size " << l;
    compared_total += compared;
    generated_total += kGreedyTokens;
  }
  // Near-ties decided differently end few comparisons early: the greedy check sees most tokens.
  EXPECT_GE(2 * compared_total, generated_total);
}

TEST_P(LogitsOracleTest, RejectsSwappedAdaptiveRows) {
  const std::vector<int> sizes = model_.config.chunk_sizes();
  ASSERT_GE(sizes.size(), 2u);
  const int a = sizes[0], b = sizes[1];
  auto defective = Emulating(::catserve::testing::SwapAdaptiveRows(
      model_.weights, model_.config.hidden_size, model_.config.compressor_hidden_size, a, b));
  for (int l : {a, b}) EXPECT_FALSE(Check(*defective, l)) << "chunk size " << l;
  EXPECT_TRUE(Check(*defective, sizes.back())) << "an untouched chunk size";
  EXPECT_TRUE(GreedyRejectsSomewhere(*defective, {a, b}));
}

TEST_P(LogitsOracleTest, RejectsKeysOneRopePositionAhead) {
  auto defective =
      Emulating(::catserve::testing::KeysOneRopePositionAhead(model_.weights, model_.config));
  for (int l : model_.config.chunk_sizes())
    EXPECT_FALSE(Check(*defective, l)) << "chunk size " << l;
  EXPECT_TRUE(GreedyRejectsSomewhere(*defective, model_.config.chunk_sizes()));
}

TEST_P(LogitsOracleTest, RejectsChunkIndexOneLate) {
  auto defective = Emulating(
      ::catserve::testing::ChunkIndexOneLate(model_.weights, model_.config.compressor_hidden_size));
  for (int l : model_.config.chunk_sizes())
    EXPECT_FALSE(Check(*defective, l)) << "chunk size " << l;
  EXPECT_TRUE(GreedyRejectsSomewhere(*defective, model_.config.chunk_sizes()));
}

TEST_P(LogitsOracleTest, RejectsSwappedLocalSlots) {
  for (int l : model_.config.chunk_sizes()) {
    // At l = 1 there is never a second local entry; at l = 2 the next token completes the chunk,
    // so nothing reads the swapped entries.
    if (l <= 2) continue;
    EXPECT_FALSE(Check(*emulated_, l, ::catserve::testing::SwapFirstTwoLocalSlots()))
        << "chunk size " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LogitsOracleTest, ::testing::Values("tiny", "tiny_gqa"));

}  // namespace
}  // namespace catserve::engine
