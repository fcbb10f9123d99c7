// The CUDA engine against the fp32 CPU engine, through the bf16 oracle of
// tests/common/logits_oracle.h: per logits row, the GPU's distance to fp32 within 1.5x the
// bf16-emulating CPU engine's plus a floor, relative L2 within bf16's, greedy tokens equal to
// fp32's up to the first near-tie. The planted defects of tests/common/planted_defects.h fed to
// the GPU engine must be rejected by the same criterion (tests/engine/logits_oracle_test.cc shows
// that on the CPU engine). Every test skips where no CUDA device is present.
#include "engine/cuda/cuda_engine.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/cuda/flashinfer_decode.h"
#include "engine/generate.h"
#include "engine/load_engine.h"
#include "engine/model/safetensors.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"
#include "tests/common/interleaved_run.h"
#include "tests/common/logits_oracle.h"
#include "tests/common/planted_defects.h"
#include "tests/common/run_alone.h"
#include "tests/common/test_models.h"
#include "tests/cuda/no_device.h"
#include "tests/support/random_model.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::GreedyAgreesUntilNearTie;
using ::catserve::testing::MatchesFp32LikeBf16;
using ::catserve::testing::RunAlone;
using Rows = std::vector<std::vector<float>>;

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;
const char* const kSequences[] = {"short", "odd", "exact", "max"};

// The engines over the same weights: fp32 CPU, bf16-emulating CPU, CUDA.
struct Engines {
  std::unique_ptr<CpuEngine> cpu;
  std::unique_ptr<CpuEngine> emulated;
  std::unique_ptr<Engine> gpu;
};

class CudaFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA_DEVICE();
    dir_ = kFixtures / GetParam();
    auto cpu = CpuEngine::Load(dir_, {.threads = 2});
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    engines_.cpu = *std::move(cpu);
    engines_.emulated =
        std::make_unique<CpuEngine>(engines_.cpu->config(), engines_.cpu->weights(),
                                    EngineOptions{.threads = 2, .emulate_bf16 = true});
    auto gpu = CreateCudaEngine(engines_.cpu->config(), engines_.cpu->weights());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    engines_.gpu = *std::move(gpu);
    auto golden = TensorSet::OpenFile(dir_ / "golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = std::make_unique<TensorSet>(*std::move(golden));
  }

  std::vector<int32_t> Tokens(const std::string& seq) {
    auto t = golden_->ReadInt32("tokens." + seq);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }

  std::filesystem::path dir_;
  Engines engines_;
  std::unique_ptr<TensorSet> golden_;
};

// The oracle's rows for one sequence at chunk size l with prefill pieces of 1 and of a third.
struct OracleRows {
  Rows fp32, emulated, gpu;
};

OracleRows RunAll(const Engines& e, Engine& gpu, const std::vector<int32_t>& tokens, int l) {
  OracleRows r;
  auto append = [](Rows& to, Rows rows) { to.insert(to.end(), rows.begin(), rows.end()); };
  for (int first_piece : {1, std::max<int>(1, tokens.size() / 3)}) {
    append(r.fp32, RunAlone(*e.cpu, tokens, l, first_piece));
    append(r.emulated, RunAlone(*e.emulated, tokens, l, first_piece));
    append(r.gpu, RunAlone(gpu, tokens, l, first_piece));
  }
  return r;
}

TEST_P(CudaFixtureTest, LogitsMatchFp32LikeBf16AtEveryRowAndChunkSize) {
  for (const char* seq : kSequences) {
    const std::vector<int32_t> tokens = Tokens(seq);
    for (int l : engines_.cpu->config().chunk_sizes()) {
      const OracleRows r = RunAll(engines_, *engines_.gpu, tokens, l);
      EXPECT_TRUE(MatchesFp32LikeBf16(r.fp32, r.emulated, r.gpu)) << seq << " chunk size " << l;
    }
  }
}

TEST_P(CudaFixtureTest, RejectsPlantedDefects) {
  const ModelConfig& c = engines_.cpu->config();
  const ModelWeights& w = engines_.cpu->weights();
  const std::vector<int> sizes = c.chunk_sizes();
  const std::vector<int32_t> tokens = Tokens("odd");
  struct Defect {
    const char* name;
    ModelWeights weights;
    std::vector<int> chunk_sizes;
  };
  const std::vector<Defect> defects = {
      {"adaptive rows swapped",
       ::catserve::testing::SwapAdaptiveRows(w, c.hidden_size, c.compressor_hidden_size, sizes[0],
                                             sizes[1]),
       {sizes[0], sizes[1]}},
      {"keys one RoPE position ahead", ::catserve::testing::KeysOneRopePositionAhead(w, c), sizes},
      {"chunk index one late", ::catserve::testing::ChunkIndexOneLate(w, c.compressor_hidden_size),
       sizes},
  };
  for (const Defect& d : defects) {
    auto gpu = CreateCudaEngine(c, d.weights);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    for (int l : d.chunk_sizes) {
      const OracleRows r = RunAll(engines_, **gpu, tokens, l);
      EXPECT_FALSE(MatchesFp32LikeBf16(r.fp32, r.emulated, r.gpu))
          << d.name << ", chunk size " << l;
    }
  }
}

TEST_P(CudaFixtureTest, GreedyTokensEqualFp32UpToNearTies) {
  const ModelConfig& c = engines_.cpu->config();
  const SamplingParams greedy{.temperature = 0.0f};
  int compared_total = 0, generated_total = 0;
  for (const char* seq : {"short", "odd"}) {
    const std::vector<int32_t> prompt = Tokens(seq);
    for (int l : c.chunk_sizes()) {
      const int max_new = std::min<int>(40, c.max_position_embeddings - prompt.size());
      auto want = GenerateAlone(*engines_.cpu, prompt, l, max_new, greedy);
      auto got = GenerateAlone(*engines_.gpu, prompt, l, max_new, greedy);
      ASSERT_TRUE(want.ok()) << want.status();
      ASSERT_TRUE(got.ok()) << got.status();
      std::vector<int32_t> all = prompt;
      all.insert(all.end(), want->begin(), want->end() - 1);
      const Rows fp32_logits = RunAlone(*engines_.cpu, all, l, prompt.size());
      const Rows emulated_logits = RunAlone(*engines_.emulated, all, l, prompt.size());
      int compared = 0;
      EXPECT_TRUE(GreedyAgreesUntilNearTie(*want, fp32_logits, emulated_logits, *got, &compared))
          << seq << " chunk size " << l;
      compared_total += compared;
      generated_total += want->size();
    }
  }
  EXPECT_GE(2 * compared_total, generated_total) << "near-ties ended most comparisons early";
  std::cout << "greedy: compared " << compared_total << " of " << generated_total
            << " generated tokens (a near-tie decided differently ends a run's comparison)\n";
}

TEST_P(CudaFixtureTest, LoadsThroughEngineLoad) {
  auto engine = LoadEngine(dir_, {.device = Device::kCuda});
  ASSERT_TRUE(engine.ok()) << engine.status();
  const KvGeometry g = (*engine)->kv_geometry(16);
  EXPECT_EQ(g.bytes_per_value(), 2);
  EXPECT_EQ(g.page_bytes(), engines_.cpu->kv_geometry(16).page_bytes() / 2);
}

// fla_tiny (tools/make_convert_fixtures.py): compressor q/k/v biases, norm_eps 0.1 with the q/k
// norm's own 1e-5.
INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFixtureTest,
                         ::testing::Values("tiny", "tiny_gqa", "fla_tiny"));

TEST(CudaConvertedModelTest, RefusesCompressorGqaWithAStatus) {
  SKIP_WITHOUT_CUDA_DEVICE();
  // official_tiny's compressor has 4 query heads over 2 kv heads; ChunkAttention has no GQA.
  auto engine = LoadEngine(kFixtures / "official_tiny", {.device = Device::kCuda});
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(engine.status().message().find("compressor_num_kv_heads 2 < compressor_num_heads 4"),
            absl::string_view::npos)
      << engine.status();
}

// The logits of RunInterleaved's rows, in its order.
Rows InterleavedLogits(const std::vector<::catserve::testing::LogitsRow>& rows) {
  Rows out;
  for (const auto& r : rows) out.push_back(r.logits);
  return out;
}

class CudaIncrementalTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(CudaIncrementalTest, MatchesCpuUnderRaggedBatchesOfMixedChunkSizes) {
  const ModelConfig c = ::catserve::testing::TinyConfig(GetParam());
  const ModelWeights weights = RandomModelWeights(c, 7);
  auto gpu = CreateCudaEngine(c, weights);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  CpuEngine emulated(c, weights, {.threads = 2, .emulate_bf16 = true});
  CpuEngine fp32(c, weights, {.threads = 2});
  const auto cases = ::catserve::testing::MixedCases();
  const Rows want = InterleavedLogits(::catserve::testing::RunInterleaved(fp32, cases, 11));
  const Rows emu = InterleavedLogits(::catserve::testing::RunInterleaved(emulated, cases, 11));
  const Rows got = InterleavedLogits(::catserve::testing::RunInterleaved(**gpu, cases, 11));
  ASSERT_EQ(want.size(), static_cast<size_t>(::catserve::testing::ExpectedRows(cases)));
  EXPECT_TRUE(MatchesFp32LikeBf16(want, emu, got));
}

INSTANTIATE_TEST_SUITE_P(Models, CudaIncrementalTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gqa" : "Mha"; });

// FlashInfer's decode (head_dim 64 or 128) and the tensor-core prefill (items of 16 rows or more)
// on the same models with heads of 64 (MHA, and GQA groups of 2), under both attention settings,
// with sequences long enough at chunk 1 and 2 (600 tokens) that a row's compressed keys span three
// of FlashInfer's tiles and a prompt's prefill is one item of 300 rows.
class CudaWideHeadsTest : public ::testing::TestWithParam<std::tuple<bool, CudaAttention>> {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(CudaWideHeadsTest, MatchesCpuUnderRaggedBatchesOfMixedChunkSizes) {
  const auto [gqa, attention] = GetParam();
  ModelConfig c = ::catserve::testing::TinyConfig(gqa);
  c.hidden_size = 256;  // 4 heads of 64
  c.max_position_embeddings = 640;
  const ModelWeights weights = RandomModelWeights(c, 13);
  auto gpu = CreateCudaEngine(c, weights, {.device = Device::kCuda, .cuda_attention = attention});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  CpuEngine emulated(c, weights, {.threads = 2, .emulate_bf16 = true});
  CpuEngine fp32(c, weights, {.threads = 2});
  std::vector<::catserve::testing::InterleavedCase> cases = ::catserve::testing::MixedCases();
  cases.push_back({1, 300, 600, 0, 300});
  cases.push_back({2, 560, 600, 2, 600});
  cases.push_back({4, 17, 400, 1, 17});
  const Rows want = InterleavedLogits(::catserve::testing::RunInterleaved(fp32, cases, 17));
  const Rows emu = InterleavedLogits(::catserve::testing::RunInterleaved(emulated, cases, 17));
  const Rows got = InterleavedLogits(::catserve::testing::RunInterleaved(**gpu, cases, 17));
  ASSERT_EQ(want.size(), static_cast<size_t>(::catserve::testing::ExpectedRows(cases)));
  EXPECT_TRUE(MatchesFp32LikeBf16(want, emu, got));
}

INSTANTIATE_TEST_SUITE_P(Models, CudaWideHeadsTest,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(CudaAttention::kAuto,
                                                              CudaAttention::kSplitKv)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Gqa" : "Mha") +
                                  (std::get<1>(info.param) == CudaAttention::kAuto ? "Auto"
                                                                                   : "SplitKv");
                         });

// Decode steps replayed from CUDA graphs against the same steps run launch by launch: sequences
// at chunk 8 (most steps complete no chunk) decode on two engines over the same weights, graphs
// on and off. Five rows pad to a graph of eight; at step 30 one sequence leaves (a graph of
// four); at step 31 a sequence with a 300-token prompt joins, whose prefill grows the engine's
// scratch, so the graphs captured before are dropped and captured anew. Rows differ only by the
// GEMMs' algorithm for the padded row counts; every row must also pass the oracle.
class CudaGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_CUDA_DEVICE();
    if (!cuda::FlashInferDecodeSupports(64, 2)) {
      GTEST_SKIP() << "graphs need FlashInfer's decode, which this build lacks";
    }
  }
};

TEST_F(CudaGraphTest, DecodeStepsFromGraphsMatchEagerSteps) {
  ModelConfig c = ::catserve::testing::TinyConfig(true);
  c.hidden_size = 256;  // 4 heads of 64 over 2 kv heads: FlashInfer's route, so graphs apply
  c.max_position_embeddings = 640;
  const ModelWeights weights = RandomModelWeights(c, 23);
  auto graphs = CreateCudaEngine(c, weights, {.device = Device::kCuda, .cuda_graphs = true});
  auto eager = CreateCudaEngine(c, weights, {.device = Device::kCuda, .cuda_graphs = false});
  ASSERT_TRUE(graphs.ok()) << graphs.status();
  ASSERT_TRUE(eager.ok()) << eager.status();
  CpuEngine emulated(c, weights, {.threads = 2, .emulate_bf16 = true});
  CpuEngine fp32(c, weights, {.threads = 2});
  Engine* engines[] = {graphs->get(), eager->get(), &emulated, &fp32};
  const int V = c.vocab_size, kSeqs = 6, kSteps = 70, kLeaves = 4, kJoins = 5;
  const int leave_step = 30, join_step = 31;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> token(3, V - 1);
  std::vector<int> prompt(kSeqs);
  std::vector<std::vector<int32_t>> tokens(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    prompt[i] = i == kJoins ? 300 : 40 + 3 * i;
    for (int t = 0; t < prompt[i] + kSteps; ++t) tokens[i].push_back(token(rng));
  }
  Rows rows[4];
  int replayed[4] = {0, 0, 0, 0};
  for (int e = 0; e < 4; ++e) {
    absl::StatusOr<KvPool> pool = engines[e]->CreateKvPool(256, 16);
    ASSERT_TRUE(pool.ok()) << pool.status();
    std::vector<SequenceState> seqs(kSeqs);
    for (int i = 0; i < kSeqs; ++i) {
      seqs[i].chunk_size = 8;
      seqs[i].tokens = tokens[i];
    }
    for (int step = 0; step <= kSteps; ++step) {
      std::vector<StepItem> items;
      for (int i = 0; i < kSeqs; ++i) {
        SequenceState& s = seqs[i];
        const bool active = i == kJoins ? step >= join_step : i != kLeaves || step < leave_step;
        if (!active) continue;
        const int n = s.cached == 0 ? prompt[i] : 1;  // the prompt, then a token a step
        ASSERT_TRUE(ReservePages(*pool, s, s.cached + n));
        items.push_back({&s, n, true});
      }
      std::vector<float> logits(items.size() * V);
      StepStats stats;
      ASSERT_TRUE(engines[e]->StepLogits(items, *pool, absl::MakeSpan(logits), &stats).ok());
      replayed[e] += stats.from_graph ? 1 : 0;
      for (size_t k = 0; k < items.size(); ++k) {
        rows[e].emplace_back(logits.begin() + k * V, logits.begin() + (k + 1) * V);
      }
      for (SequenceState& s : seqs) TrimPages(*pool, s);
      if (step == leave_step - 1) pool->ReleaseAll(seqs[kLeaves].pages);
    }
    for (int i = 0; i < kSeqs; ++i) {
      if (i != kLeaves) pool->ReleaseAll(seqs[i].pages);
    }
    EXPECT_EQ(pool->used_pages(), 0);
  }
  // About 3 steps in 8 complete no chunk; each shape's first step is launched, not replayed.
  EXPECT_GE(replayed[0], kSteps / 5);
  EXPECT_EQ(replayed[1], 0);
  ASSERT_EQ(rows[0].size(), rows[1].size());
  for (size_t r = 0; r < rows[0].size(); ++r) {
    float scale = 0, diff = 0;
    for (int v = 0; v < V; ++v) {
      scale = std::max(scale, std::abs(rows[1][r][v]));
      diff = std::max(diff, std::abs(rows[0][r][v] - rows[1][r][v]));
    }
    ASSERT_LE(diff, 1e-2f * scale) << "row " << r;
  }
  EXPECT_TRUE(MatchesFp32LikeBf16(rows[3], rows[2], rows[0]));
}

class CudaPoolTest : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_F(CudaPoolTest, EachEngineRefusesTheOthersPool) {
  const ModelConfig c = ::catserve::testing::TinyConfig(false);
  const ModelWeights weights = RandomModelWeights(c, 1);
  CpuEngine cpu(c, weights, {.threads = 1});
  auto gpu = CreateCudaEngine(c, weights);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto host_pool = cpu.CreateKvPool(8, 16);
  auto device_pool = (*gpu)->CreateKvPool(8, 16);
  ASSERT_TRUE(host_pool.ok() && device_pool.ok());
  EXPECT_EQ(device_pool->arena_location(), KvArena::Location::kCuda);
  EXPECT_EQ(device_pool->total_bytes(), host_pool->total_bytes() / 2);
  SequenceState s;
  s.chunk_size = 4;
  s.tokens = {5, 6, 7};
  std::vector<float> logits(c.vocab_size);
  StepItem item{&s, 3, true};
  ASSERT_TRUE(ReservePages(*host_pool, s, 3));
  EXPECT_EQ((*gpu)->StepLogits({&item, 1}, *host_pool, absl::MakeSpan(logits)).code(),
            absl::StatusCode::kInvalidArgument);
  host_pool->ReleaseAll(s.pages);
  ASSERT_TRUE(ReservePages(*device_pool, s, 3));
  EXPECT_EQ(cpu.StepLogits({&item, 1}, *device_pool, absl::MakeSpan(logits)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.cached, 0);
  device_pool->ReleaseAll(s.pages);
}

TEST_F(CudaPoolTest, RejectsBadItemsWithoutChangingState) {
  const ModelConfig c = ::catserve::testing::TinyConfig(false);
  auto gpu = CreateCudaEngine(c, RandomModelWeights(c, 1));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto pool = (*gpu)->CreateKvPool(8, 16);
  ASSERT_TRUE(pool.ok());
  SequenceState s;
  s.chunk_size = 4;
  s.tokens = {5, 6, 1000};
  ASSERT_TRUE(ReservePages(*pool, s, 3));
  std::vector<float> logits(c.vocab_size);
  StepItem item{&s, 3, true};
  absl::Status st = (*gpu)->StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token id 1000"), std::string::npos) << st;
  EXPECT_EQ(s.cached, 0);
  pool->ReleaseAll(s.pages);
  EXPECT_EQ(pool->used_pages(), 0);
}

}  // namespace
}  // namespace catserve::engine
