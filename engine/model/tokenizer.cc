#include "engine/model/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace catserve::engine {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t kContextTokens = 5;
constexpr char kModuleName[] = "libcatserve_sentencepiece.so";

std::vector<std::filesystem::path> ModuleCandidates() {
  std::vector<std::filesystem::path> paths;
  if (const char* env = std::getenv("CATSERVE_SENTENCEPIECE_MODULE"); env && *env) {
    paths.emplace_back(env);
  }
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back(exe.parent_path() / kModuleName);
    paths.push_back(exe.parent_path() / ".." / "lib" / "catserve" / kModuleName);
  }
  paths.emplace_back(CATSERVE_SENTENCEPIECE_MODULE_PATH);
  return paths;
}

// Opens the module once per process; the handle stays open for the process's life.
absl::StatusOr<SentencePieceFactory> LoadFactory() {
  static const absl::StatusOr<SentencePieceFactory> factory =
      []() -> absl::StatusOr<SentencePieceFactory> {
    std::string tried;
    for (const std::filesystem::path& path : ModuleCandidates()) {
      if (!std::filesystem::exists(path)) {
        absl::StrAppend(&tried, " ", path.string());
        continue;
      }
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("cannot load the SentencePiece module ", path.string(), ": ", dlerror()));
      }
      void* symbol = dlsym(handle, kSentencePieceFactory);
      if (symbol == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat(path.string(), " has no ", kSentencePieceFactory));
      }
      return reinterpret_cast<SentencePieceFactory>(symbol);
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the SentencePiece module ", kModuleName,
                     " was not found (set CATSERVE_SENTENCEPIECE_MODULE); looked at:", tried));
  }();
  return factory;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer file ", path.string(), " does not exist"));
  }
  absl::StatusOr<SentencePieceFactory> factory = LoadFactory();
  if (!factory.ok()) return factory.status();
  std::unique_ptr<Tokenizer> tokenizer(
      new Tokenizer(std::unique_ptr<SentencePieceApi>((*factory)())));
  if (std::string error = tokenizer->sp_->Load(path.string()); !error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load tokenizer ", path.string(), ": ", error));
  }
  return tokenizer;
}

std::unique_ptr<Tokenizer> Tokenizer::Create(std::unique_ptr<SentencePieceApi> sp) {
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(sp)));
}

int Tokenizer::vocab_size() const { return sp_->size(); }

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text) const {
  std::vector<int> ids;
  if (std::string error = sp_->Encode(std::string(text), &ids); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot tokenize: ", error));
  }
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  const int n = vocab_size();
  for (int32_t id : ids) {
    if (id < 0 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the tokenizer's vocabulary [0, ", n, ")"));
    }
  }
  std::string text;
  if (std::string error = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
      !error.empty()) {
    return absl::InternalError(absl::StrCat("cannot decode: ", error));
  }
  return text;
}

StreamDecoder::StreamDecoder(const Tokenizer* tokenizer, absl::Span<const int32_t> prompt)
    : tokenizer_(tokenizer), ids_(prompt.begin(), prompt.end()) {
  read_offset_ = ids_.size();
  prefix_offset_ = read_offset_ - std::min(read_offset_, kContextTokens);
}

std::string StreamDecoder::Add(int32_t id) {
  ids_.push_back(id);
  if (tokenizer_ == nullptr) return "";
  absl::Span<const int32_t> all(ids_);
  auto prefix = tokenizer_->Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
  auto text = tokenizer_->Decode(all.subspan(prefix_offset_));
  if (!prefix.ok() || !text.ok()) return "";
  // Emit only a clean extension. While a character is incomplete its bytes decode to U+FFFD,
  // and invalid byte runs decode differently once more bytes follow, so the shorter decode need
  // not be a prefix of the longer one: then restart the window at what was already emitted
  // (costing at most the word-boundary space of the next piece) rather than cut a character.
  if (!absl::StartsWith(*text, *prefix)) {
    prefix_offset_ = read_offset_;
    return "";
  }
  if (text->size() <= prefix->size() || absl::EndsWith(*text, kReplacement)) return "";
  std::string piece = text->substr(prefix->size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return piece;
}

std::string StreamDecoder::Flush() {
  if (tokenizer_ == nullptr || read_offset_ == ids_.size()) return "";
  absl::Span<const int32_t> all(ids_);
  auto prefix = tokenizer_->Decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_));
  auto text = tokenizer_->Decode(all.subspan(prefix_offset_));
  read_offset_ = prefix_offset_ = ids_.size();
  if (!prefix.ok() || !text.ok() || text->size() <= prefix->size()) return "";
  return text->substr(prefix->size());
}

}  // namespace catserve::engine
