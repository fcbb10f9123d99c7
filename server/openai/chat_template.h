// ChatTemplate: how a model directory says to lay a conversation out as one prompt.
#ifndef CATSERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_
#define CATSERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace catserve::server::openai {

// A model's chat template in catserve's own declarative form, `chat_template.json` in the model
// directory (docs/OPENAI_API.md, "Chat"):
//
//   {"roles": {"system":    {"prefix": "<|system|>\n",    "suffix": "<|end|>\n"},
//              "user":      {"prefix": "<|user|>\n",      "suffix": "<|end|>\n"},
//              "assistant": {"prefix": "<|assistant|>\n", "suffix": "<|end|>\n"}},
//    "bos": "",                                  // optional: text before the first message
//    "generation_prompt": "<|assistant|>\n",     // appended after the last message
//    "stop": ["<|end|>"]}                        // optional: stop strings every chat request gets
//
// A conversation renders as bos, then prefix + content + suffix per message, then the generation
// prompt. Roles the template does not name are refused. Jinja templates (Hugging Face's
// tokenizer_config.json `chat_template`, chat_template.jinja) are not rendered: a model that has
// only those is refused with a 400 that says so.
class ChatTemplate {
 public:
  // The template of `model_dir`: nullopt when it has no chat_template.json; INVALID_ARGUMENT
  // naming the file and the key when it is malformed.
  static absl::StatusOr<std::optional<ChatTemplate>> Load(const std::string& model_dir);
  // Parses a template from its JSON text.
  static absl::StatusOr<ChatTemplate> Parse(const std::string& json);

  // The prompt of `messages` (a JSON list of {"role", "content"}; content a string or a list of
  // {"type": "text", "text"} parts). INVALID_ARGUMENT about `messages` otherwise.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages) const;
  const std::vector<std::string>& stop() const { return stop_; }

 private:
  struct Role {
    std::string prefix;
    std::string suffix;
  };
  std::map<std::string, Role> roles_;
  std::string bos_;
  std::string generation_prompt_;
  std::vector<std::string> stop_;
};

// Whether `model_dir` carries a Jinja chat template catserve does not render.
bool HasJinjaChatTemplate(const std::string& model_dir);

}  // namespace catserve::server::openai

#endif  // CATSERVE_SERVER_OPENAI_CHAT_TEMPLATE_H_
