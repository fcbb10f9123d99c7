// The C++ engine against the PyTorch reference (tools/make_fixtures.py and
// tools/make_convert_fixtures.py): the reference forward and the incremental engine reproduce the
// golden logits of every fixture model at every position
// and chunk size; resized proj_fx and the tokenizer match PyTorch and Python's sentencepiece.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/model/safetensors.h"
#include "engine/model/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/common/logits_oracle.h"
#include "tests/support/reference_forward.h"

namespace catserve::engine {
namespace {

const std::filesystem::path kFixtures = CATSERVE_FIXTURES_DIR;
const char* const kSequences[] = {"short", "odd", "exact", "max"};

// NaN-aware: a NaN logit is an infinite difference, never a pass.
float MaxAbsDiff(const float* a, const float* b, size_t n) {
  return ::catserve::testing::MaxAbsDiff(absl::MakeConstSpan(a, n), absl::MakeConstSpan(b, n));
}

class FixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = kFixtures / GetParam();
    auto engine = CpuEngine::Load(dir_, {.threads = 2});
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    auto golden = TensorSet::OpenFile(dir_ / "golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = std::make_unique<TensorSet>(*std::move(golden));
  }

  std::vector<int32_t> Tokens(const std::string& seq) {
    auto t = golden_->ReadInt32("tokens." + seq);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  std::vector<float> Golden(const std::string& seq, int l, size_t rows) {
    auto g = golden_->ReadFloat(absl::StrCat("logits.", seq, ".l", l),
                                {static_cast<int64_t>(rows), engine_->config().vocab_size});
    EXPECT_TRUE(g.ok()) << g.status();
    return *g;
  }

  std::filesystem::path dir_;
  std::unique_ptr<CpuEngine> engine_;
  std::unique_ptr<TensorSet> golden_;
};

TEST_P(FixtureTest, ReferenceForwardMatchesPyTorch) {
  const int V = engine_->config().vocab_size;
  for (const char* seq : kSequences) {
    const std::vector<int32_t> tokens = Tokens(seq);
    for (int l : engine_->config().chunk_sizes()) {
      const std::vector<float> golden = Golden(seq, l, tokens.size() + 1);
      auto logits = ReferenceForward(engine_->config(), engine_->weights(), tokens, l);
      ASSERT_TRUE(logits.ok()) << logits.status();
      for (size_t row = 0; row <= tokens.size(); ++row) {
        ASSERT_LE(MaxAbsDiff(logits->data() + row * V, golden.data() + row * V, V), 1e-4)
            << seq << " chunk size " << l << " row " << row;
      }
    }
  }
}

TEST_P(FixtureTest, IncrementalEngineMatchesPyTorch) {
  const int V = engine_->config().vocab_size;
  auto pool = engine_->CreateKvPool(64, 16);
  ASSERT_TRUE(pool.ok());
  std::vector<float> logits(V);
  for (const char* seq : kSequences) {
    const std::vector<int32_t> tokens = Tokens(seq);
    for (int l : engine_->config().chunk_sizes()) {
      const std::vector<float> golden = Golden(seq, l, tokens.size() + 1);
      // Prefill a third of the sequence at once, then one token per step.
      SequenceState s;
      s.chunk_size = l;
      s.tokens = tokens;
      int n = std::max<int>(1, tokens.size() / 3);
      while (s.cached < static_cast<int>(tokens.size())) {
        ASSERT_TRUE(ReservePages(*pool, s, s.cached + n));
        StepItem item{&s, n, true};
        ASSERT_TRUE(engine_->StepLogits({&item, 1}, *pool, absl::MakeSpan(logits)).ok());
        TrimPages(*pool, s);
        ASSERT_LE(MaxAbsDiff(logits.data(), golden.data() + s.cached * V, V), 1e-4)
            << seq << " chunk size " << l << " row " << s.cached;
        n = 1;
      }
      pool->ReleaseAll(s.pages);
    }
  }
  EXPECT_EQ(pool->used_pages(), 0);
}

TEST_P(FixtureTest, ResizedProjFxMatchesPyTorchBilinear) {
  const ModelConfig& c = engine_->config();
  for (int l : c.chunk_sizes()) {
    auto golden = golden_->ReadFloat(absl::StrCat("proj_fx.l", l),
                                     {c.hidden_size, l * c.compressor_hidden_size});
    ASSERT_TRUE(golden.ok()) << golden.status();
    const std::vector<float>& ours = engine_->weights().compressor.proj_fx.at(l);
    ASSERT_EQ(ours.size(), golden->size());
    EXPECT_LE(MaxAbsDiff(ours.data(), golden->data(), ours.size()), 1e-6) << "chunk size " << l;
  }
}

TEST_P(FixtureTest, TokenizerMatchesPythonSentencePiece) {
  auto tok = Tokenizer::Load(dir_ / "tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(dir_ / "tokenizer_golden.json");
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::Struct golden;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(text.str(), &golden).ok());
  const auto& cases = golden.fields().at("cases").list_value().values();
  ASSERT_GE(cases.size(), 5);
  for (const auto& c : cases) {
    const auto& f = c.struct_value().fields();
    const std::string& input = f.at("text").string_value();
    std::vector<int32_t> expected;
    for (const auto& v : f.at("ids").list_value().values()) {
      expected.push_back(static_cast<int32_t>(v.number_value()));
    }
    auto ids = (*tok)->Encode(input);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, expected) << input;
    auto decoded = (*tok)->Decode(expected);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, f.at("decoded").string_value()) << input;
  }
}

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    const int len = c < 0x80           ? 1
                    : (c >> 5) == 0x6  ? 2
                    : (c >> 4) == 0xE  ? 3
                    : (c >> 3) == 0x1E ? 4
                                       : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += len;
  }
  return true;
}

TEST_P(FixtureTest, StreamDecoderEmitsValidUtf8PiecesThatAddUp) {
  auto tok = Tokenizer::Load(dir_ / "tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string prompt_text = "The cat said:";
  auto prompt = (*tok)->Encode(prompt_text);
  ASSERT_TRUE(prompt.ok());
  for (const std::string text : {"naïve café — 東京", " 🐈 cats 😺 🚀", " Ünïcödé ÀÉÎ 日本語"}) {
    auto ids = (*tok)->Encode(prompt_text + text);
    ASSERT_TRUE(ids.ok());
    std::vector<int32_t> generated(ids->begin() + prompt->size(), ids->end());
    StreamDecoder stream(tok->get(), *prompt);
    std::string joined;
    int held = 0;
    for (int32_t id : generated) {
      const std::string piece = stream.Add(id);
      EXPECT_TRUE(IsValidUtf8(piece)) << "piece of " << text;
      if (piece.empty()) ++held;
      joined += piece;
    }
    joined += stream.Flush();
    auto all = (*tok)->Decode(*ids);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(prompt_text + joined, *all);
    if (text.find("🐈") != std::string::npos) {
      // Emoji are not in the fixture vocabulary: they come as byte pieces, held until complete.
      EXPECT_GT(held, 0) << text;
    }
  }
}

TEST_P(FixtureTest, StreamDecoderStaysValidOnInvalidByteRuns) {
  // A model may emit byte tokens that never form a character; pieces must stay valid UTF-8.
  auto tok = Tokenizer::Load(dir_ / "tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("a🐈b");
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> bytes;  // the emoji's four byte tokens
  for (int32_t id : *ids) {
    auto piece = (*tok)->Decode({id});
    if (piece.ok() && *piece == "\xEF\xBF\xBD") bytes.push_back(id);
  }
  ASSERT_EQ(bytes.size(), 4u);
  const std::vector<int32_t> stream = {bytes[0], bytes[1], bytes[2], (*ids)[0], bytes[3],
                                       bytes[0], bytes[1], bytes[2], bytes[3],  (*ids)[0]};
  StreamDecoder decoder(tok->get(), {});
  for (int32_t id : stream) EXPECT_TRUE(IsValidUtf8(decoder.Add(id)));
  EXPECT_TRUE(IsValidUtf8(decoder.Flush()));
}

INSTANTIATE_TEST_SUITE_P(Models, FixtureTest, ::testing::Values("tiny", "tiny_gqa"));
// Models written by tools/convert from random checkpoints in the official and the fla layout
// (tools/make_convert_fixtures.py): their own q/k-norm and compressor epsilons, compressor GQA,
// MLP width and q/k norm (official), compressor q/k/v biases (fla), a padded vocabulary.
INSTANTIATE_TEST_SUITE_P(ConvertedModels, FixtureTest,
                         ::testing::Values("official_tiny", "fla_tiny"));

}  // namespace
}  // namespace catserve::engine
