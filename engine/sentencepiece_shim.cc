#include "engine/sentencepiece_shim.h"

#include <sentencepiece_processor.h>

namespace catserve::engine {

struct SentencePieceShim::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceShim::SentencePieceShim() : impl_(std::make_unique<Impl>()) {}
SentencePieceShim::~SentencePieceShim() = default;

std::string SentencePieceShim::Load(const std::string& path) {
  const auto status = impl_->sp.Load(path);
  return status.ok() ? std::string() : status.ToString();
}

std::string SentencePieceShim::Encode(const std::string& text, std::vector<int>* ids) const {
  const auto status = impl_->sp.Encode(text, ids);
  return status.ok() ? std::string() : status.ToString();
}

std::string SentencePieceShim::Decode(const std::vector<int>& ids, std::string* text) const {
  const auto status = impl_->sp.Decode(ids, text);
  return status.ok() ? std::string() : status.ToString();
}

int SentencePieceShim::size() const { return impl_->sp.GetPieceSize(); }

}  // namespace catserve::engine
