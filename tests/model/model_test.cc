// The shipped default model, models/cat-small-en: it loads through LoadEngine and
// Tokenizer::Load, and the engine's greedy continuation (GenerateAlone, temperature 0) of the
// fixed prompt in greedy_expected.txt equals the ids recorded there at chunk sizes 2 and 16.
// greedy_expected.txt is written by the PyTorch reference (tools/eval/make_model_fixture.py),
// so this also checks the C++ engine against catref on trained weights.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/generate.h"
#include "engine/load_engine.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling/sampler.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

const std::filesystem::path kModelDir = std::filesystem::path(CATSERVE_MODELS_DIR) / "cat-small-en";

struct Expected {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  int max_tokens = 0;
  std::map<int, std::vector<int32_t>> continuation;  // chunk size -> generated ids
};

std::vector<int32_t> Ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  int32_t v;
  while (in >> v) ids.push_back(v);
  return ids;
}

// Lines "key<TAB>value"; '#' starts a comment line. Keys: prompt, prompt_ids, max_tokens, l<N>.
Expected ReadExpected() {
  Expected e;
  std::ifstream in(std::filesystem::path(CATSERVE_MODEL_TEST_DIR) / "greedy_expected.txt");
  EXPECT_TRUE(in.good());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    const std::string key = line.substr(0, tab), value = line.substr(tab + 1);
    if (key == "prompt") {
      e.prompt = value;
    } else if (key == "prompt_ids") {
      e.prompt_ids = Ids(value);
    } else if (key == "max_tokens") {
      e.max_tokens = std::stoi(value);
    } else if (key.size() > 1 && key[0] == 'l') {
      e.continuation[std::stoi(key.substr(1))] = Ids(value);
    }
  }
  return e;
}

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    EngineOptions options;
    options.threads = 1;
    auto engine = LoadEngine(kModelDir, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    auto tokenizer = Tokenizer::Load(kModelDir / "tokenizer.model");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete tokenizer_;
    engine_ = nullptr;
    tokenizer_ = nullptr;
  }
  static Engine* engine_;
  static Tokenizer* tokenizer_;
};
Engine* ModelTest::engine_ = nullptr;
Tokenizer* ModelTest::tokenizer_ = nullptr;

TEST_F(ModelTest, ConfigMatchesTokenizer) {
  ASSERT_NE(engine_, nullptr);
  const ModelConfig& c = engine_->config();
  EXPECT_EQ(c.vocab_size, tokenizer_->vocab_size());
  EXPECT_EQ(c.chunk_sizes(), (std::vector<int>{1, 2, 4, 8, 16}));
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
}

TEST_F(ModelTest, PromptTokenizesAsRecorded) {
  ASSERT_NE(tokenizer_, nullptr);
  const Expected e = ReadExpected();
  auto ids = tokenizer_->Encode(e.prompt);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, e.prompt_ids);
}

TEST_F(ModelTest, GreedyContinuationMatchesReference) {
  ASSERT_NE(engine_, nullptr);
  const Expected e = ReadExpected();
  ASSERT_GT(e.max_tokens, 0);
  for (int l : {2, 16}) {
    SCOPED_TRACE(testing::Message() << "chunk size " << l);
    ASSERT_TRUE(e.continuation.count(l));
    SamplingParams greedy;
    greedy.temperature = 0;
    auto got = GenerateAlone(*engine_, e.prompt_ids, l, e.max_tokens, greedy);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, e.continuation.at(l));
    auto text = tokenizer_->Decode(*got);
    ASSERT_TRUE(text.ok());
    EXPECT_FALSE(text->empty());
  }
}

}  // namespace
}  // namespace catserve::engine
