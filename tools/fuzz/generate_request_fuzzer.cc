// Fuzzes request validation the way the server meets it: bytes off the wire parsed as a
// catserve.v1.GenerateRequest, then RequestParser::Parse (server/request_parser.cc) with the
// tiny fixture's config and the daemon's default limits and tiers. A rejected request must be
// INVALID_ARGUMENT; an accepted one must satisfy every limit.
//
// The tokenizer is a byte-level stand-in (one id per byte): AddressSanitizer refuses the
// SentencePiece module's RTLD_DEEPBIND, and SentencePiece itself is not ours to fuzz.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "catserve/v1/generation.pb.h"
#include "engine/model/config.h"
#include "engine/model/sentencepiece_api.h"
#include "engine/model/tokenizer.h"
#include "google/protobuf/stubs/logging.h"
#include "server/request_parser.h"
#include "tools/fuzz/fuzz_check.h"

namespace {

using catserve::engine::ModelConfig;

constexpr int kFirstByteId = 3;  // ids 0..2 are pad, bos, eos

class ByteTokenizer : public catserve::engine::SentencePieceApi {
 public:
  std::string Load(const std::string&) override { return ""; }
  std::string Encode(const std::string& text, std::vector<int>* ids) const override {
    for (unsigned char c : text) ids->push_back(kFirstByteId + c);
    return "";
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    for (int id : ids) {
      if (id >= kFirstByteId) text->push_back(static_cast<char>(id - kFirstByteId));
    }
    return "";
  }
  int size() const override { return kFirstByteId + 256; }
};

// tests/fixtures/tiny/config.json's sizes.
constexpr char kConfig[] = R"({"model_type": "cat", "vocab_size": 384, "hidden_size": 64,
    "num_hidden_layers": 2, "num_heads": 4, "compressor_hidden_size": 32,
    "compressor_num_layers": 1, "compressor_num_heads": 2, "max_chunk_size": 16,
    "min_train_chunk_size": 1, "max_position_embeddings": 128})";

struct Fixture {
  // libprotobuf logs an ERROR line per string field with invalid UTF-8; the fuzzer sends many.
  Fixture() { google::protobuf::SetLogHandler(nullptr); }

  ModelConfig config = *catserve::engine::ParseModelConfig(kConfig);
  std::unique_ptr<catserve::engine::Tokenizer> tokenizer =
      catserve::engine::Tokenizer::Create(std::make_unique<ByteTokenizer>());
  // What ServingDaemon sets up with the default flags.
  catserve::server::ServingLimits limits{
      .max_prompt_tokens = 127,
      .max_prompt_bytes = 127 * catserve::server::kPromptBytesPerToken,
      .max_new_tokens = 127,
      .max_context = 128};
  catserve::server::RequestParser parser{
      tokenizer.get(),
      config,
      limits,
      8,
      {{"quality", {2, 2}}, {"balanced", {8, 16}}, {"throughput", {16, 16}}}};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixture* const fixture = new Fixture();
  catserve::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<catserve::server::ParsedGeneration> parsed =
      fixture->parser.Parse(request, absl::InfiniteFuture(), /*random_seed=*/7);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!parsed.status().message().empty());
    // What the client sent is echoed as an excerpt only (server/utf8.h Excerpt).
    FUZZ_CHECK(parsed.status().message().size() <= 1024);
    return 0;
  }
  const catserve::scheduler::GenerationRequest& r = parsed->request;
  const ModelConfig& c = fixture->config;
  FUZZ_CHECK(!r.prompt.empty());
  FUZZ_CHECK(static_cast<int>(r.prompt.size()) <= fixture->limits.max_prompt_tokens);
  for (int32_t id : r.prompt) FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  for (int32_t id : r.stop_token_ids) FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  FUZZ_CHECK(r.max_new_tokens >= 1 && r.max_new_tokens <= fixture->limits.max_new_tokens);
  FUZZ_CHECK(static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens <=
             fixture->limits.max_context);
  FUZZ_CHECK(c.serves_chunk_size(r.chunk_size));
  for (const std::string& stop : parsed->stop_strings) FUZZ_CHECK(!stop.empty());
  return 0;
}
