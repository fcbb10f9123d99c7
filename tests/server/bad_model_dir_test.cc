// The real catserve binary on bad model directories: each exits 1 (never a signal) with one
// "catserve: error:" line that names the file and the field or tensor at fault.
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/common/model_dir_copy.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

std::string Fixture(const std::string& name) {
  return absl::StrCat(CATSERVE_FIXTURES_DIR, "/", name);
}

std::string F32(float value) {
  std::string bytes(sizeof(value), '\0');
  std::memcpy(bytes.data(), &value, sizeof(value));
  return bytes;
}

struct BadModel {
  std::string name;
  std::string fixture;
  std::function<void(const ModelDirCopy&)> corrupt;
  std::string file;                  // the file the message must name, inside the copy
  std::vector<std::string> message;  // further parts of the message
};

std::vector<BadModel> BadModels() {
  auto config = [](std::string key, std::string value) {
    return [key, value](const ModelDirCopy& dir) { dir.SetConfig(key, value); };
  };
  return {
      {"layers_1e9",
       "tiny",
       config("num_hidden_layers", "1e9"),
       "config.json",
       {"num_hidden_layers (1000000000) must lie in [1, 1024]"}},
      {"layers_1e8",
       "tiny",
       config("num_hidden_layers", "100000000"),
       "config.json",
       {"num_hidden_layers (100000000) must lie in [1, 1024]"}},
      {"compressor_layers_1e9",
       "tiny",
       config("compressor_num_layers", "1000000000"),
       "config.json",
       {"compressor_num_layers (1000000000) must lie in [1, 1024]"}},
      {"vocab_1e9",
       "tiny",
       config("vocab_size", "1000000000"),
       "config.json",
       {"vocab_size (1000000000) must lie in [1, 4194304]"}},
      {"eps_1e300",
       "tiny",
       config("norm_eps", "1e300"),
       "config.json",
       {"norm_eps (1e+300) must lie in [1e-12, 1]"}},
      {"more_layers_than_weights",
       "tiny",
       config("num_hidden_layers", "1000"),
       "config.json",
       {"the config implies", "does not match the weights"}},
      {"config_not_json",
       "tiny",
       [](const ModelDirCopy& dir) { dir.Write("config.json", "{\"model_type\": \"cat\",,"); },
       "config.json",
       {"not valid JSON"}},
      {"header_one_byte_short",
       "tiny_gqa",
       [](const ModelDirCopy& dir) { dir.ShortenHeaderLength(); },
       "model.safetensors",
       {"the last 1 bytes", "belong to no tensor"}},
      {"trailing_bytes",
       "tiny",
       [](const ModelDirCopy& dir) { dir.Append("model.safetensors", std::string(8, '\0')); },
       "model.safetensors",
       {"the last 8 bytes"}},
      {"truncated",
       "tiny",
       [](const ModelDirCopy& dir) {
         const std::string bytes = dir.Read("model.safetensors");
         dir.Write("model.safetensors", bytes.substr(0, bytes.size() - 100));
       },
       "model.safetensors",
       {"is past the end of the data region", "truncated"}},
      {"empty_weights",
       "tiny",
       [](const ModelDirCopy& dir) { dir.Write("model.safetensors", ""); },
       "model.safetensors",
       {"file is 0 bytes"}},
      {"nan_weight",
       "tiny",
       [](const ModelDirCopy& dir) {
         dir.OverwriteElement("model.norm.weight", 5, F32(std::numeric_limits<float>::quiet_NaN()));
       },
       "model.safetensors",
       {"tensor model.norm.weight element 5 is NaN"}},
      {"inf_bf16_weight",
       "tiny_gqa",
       [](const ModelDirCopy& dir) {
         dir.OverwriteElement("model.embeddings.weight", 0, std::string("\x80\xff", 2));
       },
       "model.safetensors",
       {"element 0 is -inf"}},
      {"tokenizer_truncated",
       "tiny",
       [](const ModelDirCopy& dir) {
         dir.Write("tokenizer.model", dir.Read("tokenizer.model").substr(0, 3000));
       },
       "tokenizer.model",
       {"cannot load tokenizer"}},
      {"tokenizer_larger_than_vocab",
       "tiny",
       [](const ModelDirCopy& dir) {
         // cat-small-en's 4096 pieces for a model of 384 ids: text would encode to ids the
         // embedding does not have.
         std::filesystem::copy_file(Fixture("../../models/cat-small-en/tokenizer.model"),
                                    dir.file("tokenizer.model"),
                                    std::filesystem::copy_options::overwrite_existing);
       },
       "tokenizer.model",
       {"has 4096 pieces", "vocab_size is 384"}},
      {"tokenizer_missing",
       "tiny",
       [](const ModelDirCopy& dir) { std::filesystem::remove(dir.file("tokenizer.model")); },
       "tokenizer.model",
       {"does not exist"}},
  };
}

// One "catserve: error:" line and nothing after it; everything before it is a startup line.
void ExpectOneErrorLine(const std::string& log, const std::vector<std::string>& parts) {
  std::vector<std::string> errors;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(line, "catserve: ")) << line;
    if (absl::StartsWith(line, "catserve: error: ")) errors.emplace_back(line);
  }
  ASSERT_EQ(errors.size(), 1u) << log;
  EXPECT_TRUE(absl::EndsWith(log, errors[0] + "\n")) << log;
  for (const std::string& part : parts) {
    EXPECT_TRUE(absl::StrContains(errors[0], part)) << "missing '" << part << "' in " << errors[0];
  }
}

TEST(BadModelDirTest, EachExitsOneWithOneLineNamingFileAndField) {
  for (const BadModel& bad : BadModels()) {
    SCOPED_TRACE(bad.name);
    ModelDirCopy dir(Fixture(bad.fixture), bad.name);
    bad.corrupt(dir);
    ASSERT_FALSE(::testing::Test::HasFatalFailure());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Spawn({"--model_dir=" + dir.path().string()});
    ASSERT_TRUE(server.ok()) << server.status();
    const std::optional<int> exit_code = (*server)->WaitForExit(absl::Seconds(30));
    const std::string log = (*server)->WaitForLog(absl::Seconds(10));
    ASSERT_TRUE(exit_code.has_value()) << "still running: " << log;
    EXPECT_EQ(*exit_code, 1) << log;
    std::vector<std::string> parts = bad.message;
    parts.push_back(dir.file(bad.file).string());
    ExpectOneErrorLine(log, parts);
  }
}

// --check_weights=false serves a model the default check refuses; a bad value is a flag error.
TEST(BadModelDirTest, CheckWeightsFlag) {
  ModelDirCopy dir(Fixture("tiny"), "check_weights_flag");
  dir.OverwriteElement("model.norm.weight", 5, F32(std::numeric_limits<float>::infinity()));
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--model_dir=" + dir.path().string(), "--check_weights=false"});
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->Signal(SIGTERM);
  EXPECT_EQ((*server)->WaitForExit(absl::Seconds(30)), 0);

  for (const char* check : {"auto", "true"}) {
    server = ServerProcess::Spawn(
        {"--model_dir=" + dir.path().string(), absl::StrCat("--check_weights=", check)});
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->WaitForExit(absl::Seconds(60)), 1);
    ExpectOneErrorLine((*server)->WaitForLog(absl::Seconds(10)),
                       {"tensor model.norm.weight element 5 is +inf"});
  }

  server = ServerProcess::Spawn({"--check_weights=maybe"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ((*server)->WaitForExit(absl::Seconds(60)), 1);
  ExpectOneErrorLine((*server)->WaitForLog(absl::Seconds(10)),
                     {"--check_weights=maybe: must be auto, true or false"});
}

}  // namespace
}  // namespace catserve::testing
