// The compressor's own config keys (engine/config.h) decide which tensors the loader expects and
// the shapes and epsilons its blocks run with; a config that disagrees with the weights is
// refused with the offending tensor's name.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/status/status.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "engine/model/weights.h"

namespace catserve::engine {
namespace {

using ::testing::HasSubstr;

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;

struct Loaded {
  ModelConfig config;
  TensorSet tensors;
};

Loaded Open(const std::string& model) {
  auto config = LoadModelConfig(kFixtures / model);
  EXPECT_TRUE(config.ok()) << config.status();
  auto tensors = TensorSet::OpenModelDir(kFixtures / model);
  EXPECT_TRUE(tensors.ok()) << tensors.status();
  return {*config, *std::move(tensors)};
}

TEST(CompressorSettingsTest, BlocksTakeTheCompressorsOwnShapesAndEpsilons) {
  Loaded m = Open("official_tiny");
  auto w = LoadModelWeights(m.config, m.tensors);
  ASSERT_TRUE(w.ok()) << w.status();
  const BlockWeights& c = w->compressor.layers[1];
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.kv_heads, 2);
  EXPECT_EQ(c.intermediate, 96);
  EXPECT_FLOAT_EQ(c.norm_eps, 0.3f);
  EXPECT_FLOAT_EQ(c.qk_norm_eps, 0.3f);
  EXPECT_EQ(c.q_norm.size(), 8u);
  EXPECT_TRUE(c.qkv_bias.empty());
  const BlockWeights& d = w->decoder.layers[0];
  EXPECT_EQ(d.intermediate, 256);
  EXPECT_FLOAT_EQ(d.norm_eps, 0.1f);
  EXPECT_FLOAT_EQ(d.qk_norm_eps, 0.1f);
}

TEST(CompressorSettingsTest, CompressorBiasesLoadOnlyWhenTheConfigSaysSo) {
  Loaded m = Open("fla_tiny");
  auto w = LoadModelWeights(m.config, m.tensors);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->compressor.layers[0].qkv_bias.size(), 3u * 32);
  EXPECT_FLOAT_EQ(w->decoder.layers[0].qk_norm_eps, 1e-5f);

  m.config.compressor_qkv_bias = false;
  auto extra = LoadModelWeights(m.config, m.tensors);
  ASSERT_FALSE(extra.ok());
  EXPECT_EQ(extra.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(extra.status().message()),
              HasSubstr("model.compressor.layers.0.attn.k_proj.bias"));
}

TEST(CompressorSettingsTest, MissingCompressorTensorsAreNamed) {
  Loaded m = Open("fla_tiny");
  m.config.compressor_qk_norm = true;
  auto w = LoadModelWeights(m.config, m.tensors);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("model.compressor.layers.0.attn.q_norm.weight"));

  Loaded o = Open("official_tiny");
  o.config.compressor_num_kv_heads = 4;  // the weights have 2
  w = LoadModelWeights(o.config, o.tensors);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("model.compressor.layers.0.attn.k_proj.weight"));

  o = Open("official_tiny");
  o.config.compressor_intermediate.reset();  // the rule's 256 instead of 96
  w = LoadModelWeights(o.config, o.tensors);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("model.compressor.layers.0.mlp.gate_proj.weight"));
}

}  // namespace
}  // namespace catserve::engine
