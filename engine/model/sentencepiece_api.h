#ifndef CATSERVE_ENGINE_MODEL_SENTENCEPIECE_API_H_
#define CATSERVE_ENGINE_MODEL_SENTENCEPIECE_API_H_

#include <memory>
#include <string>
#include <vector>

namespace catserve::engine {

// The SentencePiece library, reached through a loadable module.
//
// Why a module: Debian's libsentencepiece carries its own copy of protobuf-lite 3.14 with
// exported symbols, while gRPC brings libprotobuf 3.21. Linked into one program the two copies
// interpose each other's symbols and SentencePiece aborts at load ("compiled against 3.14.0").
// This header is std-only on purpose: the module includes it next to SentencePiece's header.
// The module (engine/sentencepiece/module.cc, built as libcatserve_sentencepiece.so) is opened
// with RTLD_LOCAL | RTLD_DEEPBIND, so SentencePiece binds to its own protobuf copy and nothing
// else sees it. Only virtual calls cross the boundary, so no symbol is looked up by name but
// the factory.
class SentencePieceApi {
 public:
  virtual ~SentencePieceApi() = default;
  // Each returns an empty string on success, else SentencePiece's error message.
  virtual std::string Load(const std::string& path) = 0;
  virtual std::string Encode(const std::string& text, std::vector<int>* ids) const = 0;
  virtual std::string Decode(const std::vector<int>& ids, std::string* text) const = 0;
  virtual int size() const = 0;
};

// The factory the module exports, by this C name.
inline constexpr char kSentencePieceFactory[] = "catserve_create_sentencepiece";
using SentencePieceFactory = SentencePieceApi* (*)();

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_SENTENCEPIECE_API_H_
