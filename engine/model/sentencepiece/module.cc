// The loadable module behind SentencePieceApi: the only code that includes SentencePiece's
// header or links its library (see engine/sentencepiece_api.h for why).
#include <sentencepiece_processor.h>

#include "engine/model/sentencepiece_api.h"

namespace catserve::engine {
namespace {

class SentencePieceModule : public SentencePieceApi {
 public:
  std::string Load(const std::string& path) override {
    const auto status = sp_.Load(path);
    return status.ok() ? std::string() : status.ToString();
  }
  std::string Encode(const std::string& text, std::vector<int>* ids) const override {
    const auto status = sp_.Encode(text, ids);
    return status.ok() ? std::string() : status.ToString();
  }
  std::string Decode(const std::vector<int>& ids, std::string* text) const override {
    const auto status = sp_.Decode(ids, text);
    return status.ok() ? std::string() : status.ToString();
  }
  int size() const override { return sp_.GetPieceSize(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace
}  // namespace catserve::engine

extern "C" __attribute__((visibility("default"))) catserve::engine::SentencePieceApi*
catserve_create_sentencepiece() {
  return new catserve::engine::SentencePieceModule();
}
