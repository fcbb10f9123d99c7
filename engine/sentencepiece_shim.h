#ifndef CATSERVE_ENGINE_SENTENCEPIECE_SHIM_H_
#define CATSERVE_ENGINE_SENTENCEPIECE_SHIM_H_

#include <memory>
#include <string>
#include <vector>

namespace catserve::engine {

// Debian's sentencepiece_processor.h declares its own `absl::string_view` alias, which clashes
// with Abseil's when both headers meet in one translation unit. This shim keeps the
// SentencePiece header in its own .cc behind a std-only interface; use Tokenizer instead.
class SentencePieceShim {
 public:
  SentencePieceShim();
  ~SentencePieceShim();

  // Each returns an empty string on success, else SentencePiece's error message.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;
  int size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_SENTENCEPIECE_SHIM_H_
