// LoadModel on bad model directories: each is refused with INVALID_ARGUMENT (or NOT_FOUND) and a
// message naming the file and the field or tensor at fault, before anything big is allocated.
#include "engine/model/weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/common/model_dir_copy.h"

namespace catserve::engine {
namespace {

using ::catserve::testing::ModelDirCopy;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

std::string F32(float value) {
  std::string bytes(sizeof(value), '\0');
  std::memcpy(bytes.data(), &value, sizeof(value));
  return bytes;
}

// Expects LoadModel(dir, check) to fail with `code` and every one of `words` in the message.
template <typename... Words>
void ExpectLoadFails(const ModelDirCopy& dir, WeightCheck check, absl::StatusCode code,
                     Words... words) {
  absl::StatusOr<Model> model = LoadModel(dir.path(), check);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), code) << model.status();
  EXPECT_THAT(std::string(model.status().message()), AllOf(HasSubstr(words)...));
}

TEST(LoadModelTest, LoadsBothFixturesWithTheWeightCheckOn) {
  for (const char* fixture : {"tiny", "tiny_gqa"}) {
    absl::StatusOr<Model> model = LoadModel(kFixtures / fixture, WeightCheck::kOn);
    EXPECT_TRUE(model.ok()) << fixture << ": " << model.status();
  }
}

// The fault probe: these configs aborted (bad_alloc, exit 134) or ate 15 GB before failing.
TEST(LoadModelTest, AbsurdLayerCountsFailFastNamingConfigJson) {
  for (const char* key : {"num_hidden_layers", "compressor_num_layers"}) {
    for (const char* value : {"1000000000", "100000000"}) {
      SCOPED_TRACE(absl::StrCat(key, "=", value));
      ModelDirCopy dir(kFixtures / "tiny", TestName());
      dir.SetConfig(key, value);
      const absl::Time start = absl::Now();
      ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                      dir.file("config.json").string(),
                      absl::StrCat(key, " (", value, ") must lie in [1, 1024]"));
      EXPECT_LT(absl::Now() - start, absl::Seconds(5));
    }
  }
}

TEST(LoadModelTest, EpsOutsideItsRangeNamesConfigJson) {
  ModelDirCopy dir(kFixtures / "tiny", TestName());
  dir.SetConfig("norm_eps", "1e300");
  ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                  dir.file("config.json").string(), "norm_eps (1e+300) must lie in [1e-12, 1]");
}

// Within every range, but asking for more than the weights hold: refused from the sizes alone,
// before a layer is read.
TEST(LoadModelTest, ConfigBiggerThanTheWeightsIsRefusedBeforeReading) {
  ModelDirCopy dir(kFixtures / "tiny", TestName());
  dir.SetConfig("num_hidden_layers", "1024");
  ExpectLoadFails(
      dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument, dir.file("config.json").string(),
      "the config implies",
      absl::StrCat("but ", dir.file("model.safetensors").string(), " holds 1040640 bytes"),
      "does not match the weights");
}

TEST(LoadModelTest, FewerLayersThanTheWeightsNamesTheExtraTensors) {
  ModelDirCopy dir(kFixtures / "tiny", TestName());
  dir.SetConfig("num_hidden_layers", "1");
  ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                  dir.file("model.safetensors").string(),
                  "holds tensors the config does not imply: model.layers.1.");
}

// The fault probe's corrupt model: a header length one byte short loaded with every tensor
// shifted. tiny_gqa's header is padded with spaces, as the safetensors library writes it, so the
// shortened header still parses as JSON.
TEST(LoadModelTest, HeaderLengthOneByteShortIsRefused) {
  ModelDirCopy dir(kFixtures / "tiny_gqa", TestName());
  dir.ShortenHeaderLength();
  ExpectLoadFails(dir, WeightCheck::kOff, absl::StatusCode::kInvalidArgument,
                  dir.file("model.safetensors").string(), "the last 1 bytes",
                  "belong to no tensor; the header length or data_offsets are wrong");
}

TEST(LoadModelTest, TrailingBytesAreRefused) {
  ModelDirCopy dir(kFixtures / "tiny", TestName());
  dir.Append("model.safetensors", "junk");
  ExpectLoadFails(dir, WeightCheck::kOff, absl::StatusCode::kInvalidArgument,
                  dir.file("model.safetensors").string(), "the last 4 bytes");
}

TEST(LoadModelTest, WeightCheckRefusesNanAndInfinityNamingTensorAndElement) {
  const std::string tensor = "model.layers.1.mlp.down_proj.weight";
  const struct {
    float value;
    const char* shown;
  } cases[] = {{std::numeric_limits<float>::quiet_NaN(), "NaN"},
               {std::numeric_limits<float>::infinity(), "+inf"},
               {-std::numeric_limits<float>::infinity(), "-inf"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.shown);
    ModelDirCopy dir(kFixtures / "tiny", TestName());
    dir.OverwriteElement(tensor, 77, F32(c.value));
    for (WeightCheck check : {WeightCheck::kAuto, WeightCheck::kOn}) {
      ExpectLoadFails(dir, check, absl::StatusCode::kInvalidArgument,
                      absl::StrCat(dir.file("model.safetensors").string(), ": tensor ", tensor,
                                   " element 77 is ", c.shown),
                      "refuses NaN and infinite weights");
    }
    absl::StatusOr<Model> unchecked = LoadModel(dir.path(), WeightCheck::kOff);
    ASSERT_TRUE(unchecked.ok()) << unchecked.status();
  }
}

TEST(LoadModelTest, WeightCheckReadsBf16) {
  ModelDirCopy dir(kFixtures / "tiny_gqa", TestName());
  dir.OverwriteElement("model.compressor.wte.weight", 3, std::string("\x80\x7f", 2));  // +inf
  ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                  "tensor model.compressor.wte.weight element 3 is +inf");
}

TEST(LoadModelTest, AutoChecksModelsUnderOneGiB) {
  EXPECT_TRUE(ChecksWeights(WeightCheck::kAuto, 0));
  EXPECT_TRUE(ChecksWeights(WeightCheck::kAuto, (uint64_t{1} << 30) - 1));
  EXPECT_FALSE(ChecksWeights(WeightCheck::kAuto, uint64_t{1} << 30));
  EXPECT_TRUE(ChecksWeights(WeightCheck::kOn, uint64_t{1} << 40));
  EXPECT_FALSE(ChecksWeights(WeightCheck::kOff, 0));
}

TEST(LoadModelTest, HugeConfigIsNotReadWhole) {
  ModelDirCopy dir(kFixtures / "tiny", TestName());
  dir.Write("config.json", absl::StrCat(dir.Read("config.json"), std::string(2 << 20, ' ')));
  ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                  dir.file("config.json").string(), "larger than 1048576 bytes");
}

TEST(LoadModelTest, MissingOrUnreadableFilesNameThem) {
  {
    ModelDirCopy dir(kFixtures / "tiny", TestName());
    std::filesystem::remove(dir.file("model.safetensors"));
    ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kNotFound, dir.path().string(),
                    "holds neither model.safetensors nor model.safetensors.index.json");
  }
  {
    ModelDirCopy dir(kFixtures / "tiny", TestName());
    dir.Write("model.safetensors", "");
    ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kInvalidArgument,
                    dir.file("model.safetensors").string(), "file is 0 bytes");
  }
  {
    ModelDirCopy dir(kFixtures / "tiny", TestName());
    std::filesystem::remove(dir.file("config.json"));
    std::filesystem::create_directory(dir.file("config.json"));
    ExpectLoadFails(dir, WeightCheck::kAuto, absl::StatusCode::kFailedPrecondition,
                    dir.file("config.json").string());
  }
}

}  // namespace
}  // namespace catserve::engine
