#include "engine/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A small valid config; `extra` is spliced in as further keys (later keys cannot repeat earlier
// ones, so tests that change a base key pass the whole text instead).
std::string SmallConfig(const std::string& extra = "") {
  return absl::StrCat(R"({"model_type": "cat", "vocab_size": 100, "hidden_size": 64,
      "num_hidden_layers": 4, "num_heads": 4, "max_chunk_size": 8, "min_train_chunk_size": 2,
      "max_position_embeddings": 128)",
                      extra, "}");
}

// Expects INVALID_ARGUMENT with every one of `words` in the message.
template <typename... Words>
void ExpectInvalid(const std::string& json, Words... words) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(json);
  ASSERT_FALSE(config.ok()) << json;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), AllOf(HasSubstr(words)...));
}

TEST(ParseModelConfigTest, EmptyCatConfigTakesDocumentedDefaults) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(R"({"model_type": "cat"})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 32000);
  EXPECT_EQ(config->hidden_size, 2048);
  EXPECT_EQ(config->num_hidden_layers, 24);
  EXPECT_EQ(config->num_heads, 32);
  EXPECT_EQ(config->num_kv_heads, 32);
  EXPECT_EQ(config->compressor_hidden_size, 1024);
  EXPECT_EQ(config->compressor_num_layers, 6);
  EXPECT_EQ(config->compressor_num_heads, 16);
  EXPECT_EQ(config->max_chunk_size, 16);
  EXPECT_EQ(config->min_train_chunk_size, 2);
  EXPECT_EQ(config->max_position_embeddings, 2048);
  EXPECT_EQ(config->rope_theta, 10000.0);
  EXPECT_EQ(config->norm_eps, 1e-6);
  EXPECT_EQ(config->hidden_ratio, 4.0);
  EXPECT_FALSE(config->intermediate_size.has_value());
  EXPECT_FALSE(config->qk_norm);
  EXPECT_FALSE(config->qkv_bias);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_id, 2);
  EXPECT_EQ(*config, ModelConfig());
  EXPECT_EQ(config->head_dim(), 64);
  EXPECT_EQ(config->compressor_head_dim(), 64);
  // int(2048*4*2/3) = 5461 -> 5632; int(1024*4*2/3) = 2730 -> 2816.
  EXPECT_EQ(config->decoder_intermediate_size(), 5632);
  EXPECT_EQ(config->compressor_intermediate_size(), 2816);
  EXPECT_THAT(config->chunk_sizes(), ElementsAre(2, 4, 8, 16));
}

TEST(ParseModelConfigTest, DependentDefaultsFollowTheDecoder) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_kv_heads, 4);
  EXPECT_EQ(config->compressor_hidden_size, 32);
  EXPECT_EQ(config->compressor_num_layers, 1);
  EXPECT_EQ(config->compressor_num_heads, 2);
  EXPECT_EQ(config->head_dim(), 16);
  EXPECT_EQ(config->compressor_head_dim(), 16);
}

TEST(ParseModelConfigTest, SmallDecoderClampsCompressorDefaultsToOne) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(
      R"({"model_type": "cat", "hidden_size": 8, "num_heads": 1, "num_hidden_layers": 2})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->compressor_num_layers, 1);
  EXPECT_EQ(config->compressor_num_heads, 1);
  EXPECT_EQ(config->compressor_hidden_size, 4);
}

TEST(ParseModelConfigTest, ExplicitValuesOverrideDefaults) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig(R"(,
      "num_kv_heads": 2, "compressor_hidden_size": 48, "compressor_num_layers": 3,
      "compressor_num_heads": 3, "rope_theta": 500000, "norm_eps": 1e-5, "hidden_ratio": 2.5,
      "qk_norm": true, "qkv_bias": true, "tie_word_embeddings": true, "pad_token_id": 3,
      "bos_token_id": 4, "eos_token_id": 99, "dim_fx": 64)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_kv_heads, 2);
  EXPECT_EQ(config->compressor_hidden_size, 48);
  EXPECT_EQ(config->compressor_num_layers, 3);
  EXPECT_EQ(config->compressor_num_heads, 3);
  EXPECT_EQ(config->rope_theta, 500000.0);
  EXPECT_EQ(config->norm_eps, 1e-5);
  EXPECT_EQ(config->hidden_ratio, 2.5);
  EXPECT_TRUE(config->qk_norm);
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->pad_token_id, 3);
  EXPECT_EQ(config->bos_token_id, 4);
  EXPECT_EQ(config->eos_token_id, 99);
}

TEST(ParseModelConfigTest, NullMeansDefaultAndUnknownKeysAreIgnored) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig(R"(,
      "pad_token_id": null, "num_kv_heads": null, "intermediate_size": null,
      "architectures": ["CATForCausalLM"], "fuse_norm": true, "torch_dtype": "bfloat16",
      "initializer_range": 0.02, "use_staircase_attention": {"nested": [1, 2]})"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_EQ(config->num_kv_heads, 4);
  EXPECT_FALSE(config->intermediate_size.has_value());
}

TEST(ParseModelConfigTest, IntermediateRuleUsesEachMlpsOwnWidth) {
  // Decoder width 64, ratio 4: 256*ceil(int(64*4*2/3)/256) = 256*ceil(170/256) = 256.
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->decoder_intermediate_size(), 256);
  EXPECT_EQ(config->compressor_intermediate_size(), 256);

  // Width 768 ratio 4: int(2048.0) = 2048 exactly; compressor 384 -> 1024.
  config = ParseModelConfig(
      R"({"model_type": "cat", "hidden_size": 768, "num_heads": 12, "vocab_size": 100})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->decoder_intermediate_size(), 2048);
  EXPECT_EQ(config->compressor_intermediate_size(), 1024);

  // Width 1000 ratio 3: int(2000.0) = 2000 -> 2048; compressor 500 -> int(1000.0) -> 1024.
  config = ParseModelConfig(R"({"model_type": "cat", "hidden_size": 1000, "num_heads": 10,
      "num_kv_heads": 5, "compressor_num_heads": 5, "hidden_ratio": 3, "vocab_size": 100})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->decoder_intermediate_size(), 2048);
  EXPECT_EQ(config->compressor_intermediate_size(), 1024);
}

TEST(ParseModelConfigTest, ExplicitIntermediateSizeAppliesToBothMlps) {
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig(SmallConfig(R"(, "intermediate_size": 96)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->decoder_intermediate_size(), 96);
  EXPECT_EQ(config->compressor_intermediate_size(), 96);
}

TEST(ParseModelConfigTest, CompressorSettingsDefaultToWhatTheCompressorHadBefore) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig(R"(,
      "norm_eps": 1e-4, "qk_norm_eps": 0.25, "qk_norm": true, "qkv_bias": true,
      "intermediate_size": 96)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->qk_norm_eps, 0.25);
  EXPECT_FALSE(config->compressor_num_kv_heads.has_value());
  EXPECT_EQ(config->compressor_kv_heads(), config->compressor_num_heads);
  EXPECT_EQ(config->compressor_intermediate_size(), 96);
  EXPECT_EQ(config->compressor_eps(), 1e-4);
  EXPECT_EQ(config->compressor_qk_eps(), 0.25);
  EXPECT_FALSE(config->compressor_qk_norm);
  EXPECT_FALSE(config->compressor_qkv_bias);
  EXPECT_EQ(ModelConfig().qk_norm_eps, 1e-5);
}

TEST(ParseModelConfigTest, CompressorSettingsOfItsOwn) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig(R"(,
      "compressor_num_heads": 4, "compressor_num_kv_heads": 2,
      "compressor_intermediate_size": 80, "intermediate_size": 96, "compressor_norm_eps": 0.3,
      "compressor_qk_norm": true, "compressor_qk_norm_eps": 0.125,
      "compressor_qkv_bias": true)"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->compressor_kv_heads(), 2);
  EXPECT_EQ(config->compressor_intermediate_size(), 80);
  EXPECT_EQ(config->decoder_intermediate_size(), 96);
  EXPECT_EQ(config->compressor_eps(), 0.3);
  EXPECT_EQ(config->norm_eps, 1e-6);
  EXPECT_TRUE(config->compressor_qk_norm);
  EXPECT_EQ(config->compressor_qk_eps(), 0.125);
  EXPECT_TRUE(config->compressor_qkv_bias);
  EXPECT_FALSE(config->qk_norm);
  EXPECT_FALSE(config->qkv_bias);
}

TEST(ParseModelConfigTest, RejectsBadCompressorSettings) {
  ExpectInvalid(SmallConfig(R"(, "compressor_num_heads": 4, "compressor_num_kv_heads": 3)"),
                "compressor_num_kv_heads (3) must divide compressor_num_heads (4)");
  ExpectInvalid(SmallConfig(R"(, "compressor_num_kv_heads": 0)"),
                "compressor_num_kv_heads (0) must lie in [1, 1024]");
  ExpectInvalid(SmallConfig(R"(, "compressor_intermediate_size": 0)"),
                "compressor_intermediate_size (0) must lie in [1, 1048576]");
  ExpectInvalid(SmallConfig(R"(, "compressor_norm_eps": 0)"),
                "compressor_norm_eps (0) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "qk_norm_eps": -1)"), "qk_norm_eps (-1) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "compressor_qk_norm_eps": 0)"),
                "compressor_qk_norm_eps (0) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "compressor_qk_norm": 1)"), "compressor_qk_norm",
                "must be true or false");
  ExpectInvalid(SmallConfig(R"(, "compressor_norm_eps": "1e-5")"), "compressor_norm_eps",
                "must be a number");
}

TEST(ParseModelConfigTest, ChunkSizesArePowersOfTwoFromMinToMax) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(SmallConfig());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->chunk_sizes(), ElementsAre(2, 4, 8));
  EXPECT_TRUE(config->serves_chunk_size(2));
  EXPECT_TRUE(config->serves_chunk_size(4));
  EXPECT_TRUE(config->serves_chunk_size(8));
  EXPECT_FALSE(config->serves_chunk_size(1));
  EXPECT_FALSE(config->serves_chunk_size(3));
  EXPECT_FALSE(config->serves_chunk_size(6));
  EXPECT_FALSE(config->serves_chunk_size(16));
  EXPECT_FALSE(config->serves_chunk_size(0));
  EXPECT_FALSE(config->serves_chunk_size(-2));

  config =
      ParseModelConfig(R"({"model_type": "cat", "min_train_chunk_size": 1, "max_chunk_size": 1})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(config->chunk_sizes(), ElementsAre(1));
}

TEST(ParseModelConfigTest, RejectsUnparseableJson) {
  ExpectInvalid(R"({"model_type": "cat",)", "config.json", "not valid JSON");
  ExpectInvalid("", "config.json", "not valid JSON");
}

TEST(ParseModelConfigTest, RejectsNonObject) {
  ExpectInvalid(R"(["model_type", "cat"])", "config.json", "must be a JSON object");
}

TEST(ParseModelConfigTest, RejectsMissingOrWrongModelType) {
  ExpectInvalid(R"({"hidden_size": 64})", "model_type", "missing", "\"cat\"");
  ExpectInvalid(R"({"model_type": "llama"})", "model_type", "\"llama\"", "must be \"cat\"");
  ExpectInvalid(R"({"model_type": 7})", "model_type", "(7)", "must be \"cat\"");
}

TEST(ParseModelConfigTest, RejectsStringWhereNumberExpected) {
  ExpectInvalid(SmallConfig(R"(, "num_kv_heads": "2")"), "num_kv_heads", "\"2\"",
                "must be an integer");
  ExpectInvalid(SmallConfig(R"(, "rope_theta": "1e4")"), "rope_theta", "\"1e4\"",
                "must be a number");
}

TEST(ParseModelConfigTest, RejectsNonIntegerForInt) {
  ExpectInvalid(SmallConfig(R"(, "num_kv_heads": 2.5)"), "num_kv_heads", "2.5",
                "must be an integer");
  ExpectInvalid(SmallConfig(R"(, "intermediate_size": 1e12)"), "intermediate_size", "1e+12",
                "outside the 32-bit integer range");
  ExpectInvalid(SmallConfig(R"(, "eos_token_id": [2, 3])"), "eos_token_id", "a list",
                "must be an integer");
}

TEST(ParseModelConfigTest, RejectsNonBoolForBool) {
  ExpectInvalid(SmallConfig(R"(, "qk_norm": 1)"), "qk_norm", "(1)", "must be true or false");
  ExpectInvalid(SmallConfig(R"(, "tie_word_embeddings": "true")"), "tie_word_embeddings",
                "must be true or false");
}

TEST(ParseModelConfigTest, RejectsNonPositiveSizes) {
  for (const char* field :
       {"vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "num_kv_heads",
        "compressor_hidden_size", "compressor_num_layers", "compressor_num_heads", "max_chunk_size",
        "min_train_chunk_size", "max_position_embeddings", "intermediate_size"}) {
    SCOPED_TRACE(field);
    ExpectInvalid(absl::StrCat(R"({"model_type": "cat", ")", field, R"(": 0})"), field,
                  "(0) must lie in [1, ");
    ExpectInvalid(absl::StrCat(R"({"model_type": "cat", ")", field, R"(": -4})"), field,
                  "(-4) must lie in [1, ");
  }
}

// Sizes that fit an int but no real model: refused by the config alone, before any allocation
// (the fault probe's 1e9 layers aborted with bad_alloc, 1e8 layers ate memory for minutes).
TEST(ParseModelConfigTest, RejectsAbsurdSizes) {
  const std::pair<const char*, const char*> cases[] = {
      {"vocab_size", "(4194305) must lie in [1, 4194304]"},
      {"hidden_size", "(65537) must lie in [1, 65536]"},
      {"num_hidden_layers", "(1025) must lie in [1, 1024]"},
      {"num_heads", "(1025) must lie in [1, 1024]"},
      {"num_kv_heads", "(1025) must lie in [1, 1024]"},
      {"compressor_hidden_size", "(65537) must lie in [1, 65536]"},
      {"compressor_num_layers", "(1025) must lie in [1, 1024]"},
      {"compressor_num_heads", "(1025) must lie in [1, 1024]"},
      {"max_chunk_size", "(1025) must lie in [1, 1024]"},
      {"min_train_chunk_size", "(1025) must lie in [1, 1024]"},
      {"max_position_embeddings", "(1048577) must lie in [1, 1048576]"},
      {"intermediate_size", "(1048577) must lie in [1, 1048576]"},
  };
  for (const auto& [field, rule] : cases) {
    SCOPED_TRACE(field);
    const std::string value = std::string(rule).substr(1, std::string(rule).find(')') - 1);
    ExpectInvalid(absl::StrCat(R"({"model_type": "cat", ")", field, "\": ", value, "}"),
                  absl::StrCat("config.json: ", field, " ", rule));
  }
  ExpectInvalid(SmallConfig(R"(, "compressor_num_layers": 1000000000)"),
                "config.json: compressor_num_layers (1000000000) must lie in [1, 1024]");
  ExpectInvalid(R"({"model_type": "cat", "num_hidden_layers": 1e9})",
                "config.json: num_hidden_layers (1000000000) must lie in [1, 1024]");
  ExpectInvalid(R"({"model_type": "cat", "num_hidden_layers": 1e8})",
                "config.json: num_hidden_layers (100000000) must lie in [1, 1024]");
  ExpectInvalid(R"({"model_type": "cat", "num_hidden_layers": 1e10})",
                "config.json: num_hidden_layers (1e+10) is outside the 32-bit integer range");
}

TEST(ParseModelConfigTest, AcceptsTheLargestSizes) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(R"({"model_type": "cat",
      "vocab_size": 4194304, "hidden_size": 65536, "num_hidden_layers": 1024, "num_heads": 1024,
      "num_kv_heads": 1024, "compressor_hidden_size": 65536, "compressor_num_layers": 1024,
      "compressor_num_heads": 1024, "max_chunk_size": 1024, "min_train_chunk_size": 1024,
      "max_position_embeddings": 1048576, "intermediate_size": 1048576})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim(), 64);
}

TEST(ParseModelConfigTest, RejectsHeadsNotDividingHidden) {
  ExpectInvalid(R"({"model_type": "cat", "hidden_size": 64, "num_heads": 5})",
                "config.json: num_heads (5) must divide hidden_size (64)");
}

TEST(ParseModelConfigTest, RejectsKvHeadsNotDividingHeads) {
  ExpectInvalid(SmallConfig(R"(, "num_kv_heads": 3)"),
                "num_kv_heads (3) must divide num_heads (4)");
}

TEST(ParseModelConfigTest, RejectsOddHeadDim) {
  ExpectInvalid(R"({"model_type": "cat", "hidden_size": 36, "num_heads": 4})", "head_dim",
                "(36 / 4 = 9)", "even", "RoPE");
}

TEST(ParseModelConfigTest, RejectsCompressorHeadsNotDividingCompressorHidden) {
  ExpectInvalid(SmallConfig(R"(, "compressor_num_heads": 5)"),
                "compressor_num_heads (5) must divide compressor_hidden_size (32)");
}

TEST(ParseModelConfigTest, RejectsOddCompressorHeadDim) {
  ExpectInvalid(SmallConfig(R"(, "compressor_hidden_size": 36, "compressor_num_heads": 4)"),
                "compressor head dim", "(36 / 4 = 9)", "even", "RoPE");
}

TEST(ParseModelConfigTest, RejectsChunkSizesNotPowersOfTwo) {
  ExpectInvalid(R"({"model_type": "cat", "max_chunk_size": 12})", "max_chunk_size (12)",
                "power of two");
  ExpectInvalid(R"({"model_type": "cat", "min_train_chunk_size": 3})", "min_train_chunk_size (3)",
                "power of two");
}

TEST(ParseModelConfigTest, RejectsMinChunkAboveMax) {
  ExpectInvalid(R"({"model_type": "cat", "min_train_chunk_size": 32, "max_chunk_size": 16})",
                "min_train_chunk_size (32) must be <= max_chunk_size (16)");
}

TEST(ParseModelConfigTest, RejectsPositionsBelowMaxChunk) {
  ExpectInvalid(R"({"model_type": "cat", "max_position_embeddings": 8, "max_chunk_size": 16})",
                "max_position_embeddings (8) must be >= max_chunk_size (16)");
}

TEST(ParseModelConfigTest, RejectsTokenIdsOutsideVocab) {
  ExpectInvalid(SmallConfig(R"(, "eos_token_id": 100)"), "eos_token_id (100)",
                "[0, vocab_size) = [0, 100)");
  ExpectInvalid(SmallConfig(R"(, "bos_token_id": -1)"), "bos_token_id (-1)", "[0, 100)");
  ExpectInvalid(SmallConfig(R"(, "pad_token_id": 250)"), "pad_token_id (250)", "[0, 100)");
  // The default bos (1) and eos (2) do not fit a vocabulary of 2.
  ExpectInvalid(R"({"model_type": "cat", "vocab_size": 2})", "eos_token_id (2)", "[0, 2)");
}

TEST(ParseModelConfigTest, RejectsEpsAndThetaOutsideTheirRanges) {
  ExpectInvalid(SmallConfig(R"(, "norm_eps": 0)"), "norm_eps (0) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "norm_eps": -1e-6)"), "norm_eps (-1e-06) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "norm_eps": 1e300)"),
                "config.json: norm_eps (1e+300) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "norm_eps": 1e-30)"), "norm_eps (1e-30) must lie in [1e-12, 1]");
  ExpectInvalid(SmallConfig(R"(, "rope_theta": 0)"), "rope_theta (0) must lie in [1, 1e+12]");
  ExpectInvalid(SmallConfig(R"(, "rope_theta": 1e13)"),
                "rope_theta (1e+13) must lie in [1, 1e+12]");
  EXPECT_TRUE(ParseModelConfig(SmallConfig(R"(, "norm_eps": 0.1, "rope_theta": 1e12)")).ok());
  EXPECT_TRUE(ParseModelConfig(SmallConfig(R"(, "norm_eps": 1e-12, "rope_theta": 1)")).ok());
}

TEST(ParseModelConfigTest, RejectsBadHiddenRatio) {
  ExpectInvalid(SmallConfig(R"(, "hidden_ratio": 0)"),
                "hidden_ratio (0) must lie in [0.015625, 64]");
  ExpectInvalid(SmallConfig(R"(, "hidden_ratio": 1e12)"), "hidden_ratio (1e+12) must lie in");
  // int(64 * (1/64) * 2 / 3) = 0: no MLP at all.
  ExpectInvalid(SmallConfig(R"(, "hidden_ratio": 0.015625)"),
                "hidden_ratio (0.015625) with hidden_size (64) gives an MLP width of 0");
  // Width 64 at ratio 64: int(64 * 64 * 2 / 3) = 2730 -> 2816, fine; width 65536 is not.
  EXPECT_TRUE(ParseModelConfig(SmallConfig(R"(, "hidden_ratio": 64)")).ok());
  ExpectInvalid(R"({"model_type": "cat", "hidden_size": 65536, "num_heads": 1024,
      "hidden_ratio": 64})",
                "hidden_ratio (64) with hidden_size (65536) gives an MLP width of 2796288, "
                "outside [1, 1048576]");
  // An explicit intermediate_size makes the ratio irrelevant to the width.
  EXPECT_TRUE(ParseModelConfig(R"({"model_type": "cat", "hidden_size": 65536, "num_heads": 1024,
      "hidden_ratio": 64, "intermediate_size": 256})")
                  .ok());
}

TEST(ParseModelConfigTest, AcceptsDimFxEqualToHiddenAndRejectsOtherwise) {
  EXPECT_TRUE(ParseModelConfig(SmallConfig(R"(, "dim_fx": 64)")).ok());
  ExpectInvalid(SmallConfig(R"(, "dim_fx": 32)"), "dim_fx (32) must equal hidden_size (64)");
  ExpectInvalid(SmallConfig(R"(, "dim_fx": "64")"), "dim_fx", "must be an integer");
}

class LoadModelConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("catserve_config_test_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(LoadModelConfigTest, ReadsConfigJsonFromModelDir) {
  std::ofstream(dir_ / "config.json") << SmallConfig();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir_);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 64);
  EXPECT_EQ(config->vocab_size, 100);
}

TEST_F(LoadModelConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir_);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("config.json"));
}

TEST_F(LoadModelConfigTest, InvalidFileNamesItsPath) {
  std::ofstream(dir_ / "config.json") << R"({"model_type": "cat", "num_heads": 5})";
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir_);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()),
              AllOf(HasSubstr((dir_ / "config.json").string()), HasSubstr("num_heads (5)")));
}

}  // namespace
}  // namespace catserve::engine
