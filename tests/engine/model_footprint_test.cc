// ComputeModelFootprint against what the loader really reads and holds: the parameters of each
// fixture equal the elements of its safetensors file, and loaded_bytes equals the fp32 vectors of
// the loaded ModelWeights; CheckModelFootprint's two refusals.
#include "engine/model/model_footprint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <climits>
#include <filesystem>
#include <string>

#include "engine/model/safetensors.h"
#include "engine/model/weights.h"

namespace catserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;

uint64_t Floats(const BlockWeights& b) {
  uint64_t n = 0;
  for (const std::vector<float>* v : {&b.attn_norm, &b.qkv, &b.qkv_bias, &b.q_norm, &b.k_norm, &b.o,
                                      &b.mlp_norm, &b.gate_up, &b.down}) {
    n += v->size();
  }
  return n;
}

// Every float a loaded model holds.
uint64_t Floats(const ModelWeights& w) {
  uint64_t n = w.compressor.wte.size() + w.compressor.pos_tokens.size() +
               w.compressor.adaptive_tokens.size() + w.compressor.norm.size() +
               w.decoder.embeddings.size() + w.decoder.separator.size() +
               w.decoder.adaptive_token.size() + w.decoder.norm.size() + w.decoder.lm_head.size();
  for (const auto& [l, proj] : w.compressor.proj_fx) n += proj.size();
  for (const BlockWeights& b : w.compressor.layers) n += Floats(b);
  for (const BlockWeights& b : w.decoder.layers) n += Floats(b);
  return n;
}

class FixtureFootprintTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureFootprintTest, MatchesTheFileAndTheLoadedWeights) {
  const std::filesystem::path dir = kFixtures / GetParam();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<ModelFootprint> footprint = ComputeModelFootprint(*config);
  ASSERT_TRUE(footprint.ok()) << footprint.status();

  absl::StatusOr<TensorSet> tensors = TensorSet::OpenModelDir(dir);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  uint64_t elements = 0;
  for (const std::string& name : tensors->names()) {
    const TensorInfo* t = tensors->Find(name);
    elements += t->nbytes / DTypeSize(t->dtype);
  }
  EXPECT_EQ(footprint->parameters, elements);

  absl::StatusOr<Model> model = LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(footprint->loaded_bytes, Floats(model->weights) * sizeof(float));
  EXPECT_GT(footprint->loaded_bytes, footprint->parameters * sizeof(float));  // resized proj_fx
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureFootprintTest, ::testing::Values("tiny", "tiny_gqa"));

TEST(ModelFootprintTest, TiedEmbeddingsAreOneParameterTensorHeldTwice) {
  absl::StatusOr<ModelConfig> untied = LoadModelConfig(kFixtures / "tiny");
  ASSERT_TRUE(untied.ok()) << untied.status();
  ModelConfig tied = *untied;
  tied.tie_word_embeddings = true;
  const ModelFootprint a = *ComputeModelFootprint(*untied);
  const ModelFootprint b = *ComputeModelFootprint(tied);
  EXPECT_EQ(a.parameters - b.parameters, uint64_t{384} * 64);  // lm_head [V, D]
  EXPECT_EQ(a.loaded_bytes, b.loaded_bytes);
}

TEST(ModelFootprintTest, OverflowIsAnErrorNotAWrap) {
  ModelConfig c;  // a hand-built config, past every range ParseModelConfig enforces
  c.hidden_size = 1 << 30;
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.intermediate_size = INT_MAX;
  c.num_hidden_layers = INT_MAX;
  absl::StatusOr<ModelFootprint> footprint = ComputeModelFootprint(c);
  ASSERT_FALSE(footprint.ok());
  EXPECT_EQ(footprint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(footprint.status().message()), HasSubstr("overflow 64 bits"));

  c = ModelConfig();
  c.num_kv_heads = 0;
  EXPECT_EQ(ComputeModelFootprint(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelFootprintTest, CheckRefusesWeightsSmallerThanTheConfig) {
  const ModelFootprint f{.parameters = 1000, .loaded_bytes = 5000};
  EXPECT_TRUE(CheckModelFootprint(f, 2000, 5000, "m/config.json", "m/model.safetensors").ok());
  EXPECT_TRUE(CheckModelFootprint(f, 4000, 5000, "m/config.json", "m/model.safetensors").ok());
  const absl::Status s = CheckModelFootprint(f, 1999, 5000, "m/config.json", "m/model.safetensors");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("m/config.json: the config implies 1000 parameters, at least 2000 "
                              "bytes of weights, but m/model.safetensors holds 1999 bytes"),
                    HasSubstr("does not match the weights")));
}

TEST(ModelFootprintTest, CheckRefusesAModelBiggerThanMemory) {
  const ModelFootprint f{.parameters = 1 << 20, .loaded_bytes = uint64_t{6} << 20};
  const absl::Status s = CheckModelFootprint(f, 4 << 20, 5 << 20, "m/config.json", "m");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("m/config.json: the model takes 6 MiB of memory once loaded (fp32) but "
                        "this machine has 5 MiB"));
}

}  // namespace
}  // namespace catserve::engine
