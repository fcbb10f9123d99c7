#ifndef CATSERVE_ENGINE_MODEL_TOKENIZER_H_
#define CATSERVE_ENGINE_MODEL_TOKENIZER_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/sentencepiece_api.h"

namespace catserve::engine {

// SentencePiece tokenizer of a model (tokenizer.model), through libsentencepiece loaded as a
// module (see sentencepiece_api.h). Thread-safe for concurrent const calls.
class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& path);
  // A tokenizer over an already loaded SentencePieceApi: how the fuzzers (tools/fuzz/) run the
  // request path under AddressSanitizer, which refuses the module's RTLD_DEEPBIND.
  static std::unique_ptr<Tokenizer> Create(std::unique_ptr<SentencePieceApi> sp);

  int vocab_size() const;
  // Text to ids, without BOS/EOS.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;
  // Ids to text. Ids outside the vocabulary are an error; incomplete UTF-8 from byte pieces
  // decodes to U+FFFD.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const;

 private:
  explicit Tokenizer(std::unique_ptr<SentencePieceApi> sp) : sp_(std::move(sp)) {}
  std::unique_ptr<SentencePieceApi> sp_;
};

// Turns a stream of generated ids into text pieces that are always valid UTF-8: a character
// spread over several byte tokens is held back until complete. Decodes with a few tokens of left
// context so SentencePiece's word-boundary spaces come out right.
class StreamDecoder {
 public:
  // `prompt` gives the left context of the first generated token.
  StreamDecoder(const Tokenizer* tokenizer, absl::Span<const int32_t> prompt);

  // Adds one generated id; returns the text it completes (possibly empty).
  std::string Add(int32_t id);
  // Returns whatever is still held back (an incomplete character decodes to U+FFFD).
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_;
  size_t read_offset_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_TOKENIZER_H_
