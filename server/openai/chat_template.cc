#include "server/openai/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/openai/openai_error.h"

namespace catserve::server::openai {
namespace {

using Json = nlohmann::json;
constexpr char kFile[] = "chat_template.json";

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(kFile, ": ", what));
}

absl::StatusOr<std::string> StringAt(const Json& object, const char* key, bool required) {
  auto it = object.find(key);
  if (it == object.end()) {
    if (required) return Malformed(absl::StrCat("\"", key, "\" is missing"));
    return std::string();
  }
  if (!it->is_string()) return Malformed(absl::StrCat("\"", key, "\" must be a string"));
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(const std::string& text) {
  const Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) return Malformed("not a JSON object");
  ChatTemplate t;
  auto roles = json.find("roles");
  if (roles == json.end() || !roles->is_object() || roles->empty()) {
    return Malformed("\"roles\" must be an object naming at least one role");
  }
  for (const auto& [name, role] : roles->items()) {
    if (!role.is_object()) return Malformed(absl::StrCat("roles.", name, " must be an object"));
    absl::StatusOr<std::string> prefix = StringAt(role, "prefix", false);
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<std::string> suffix = StringAt(role, "suffix", false);
    if (!suffix.ok()) return suffix.status();
    t.roles_[name] = Role{*prefix, *suffix};
  }
  absl::StatusOr<std::string> bos = StringAt(json, "bos", false);
  if (!bos.ok()) return bos.status();
  t.bos_ = *bos;
  absl::StatusOr<std::string> prompt = StringAt(json, "generation_prompt", true);
  if (!prompt.ok()) return prompt.status();
  t.generation_prompt_ = *prompt;
  if (auto stop = json.find("stop"); stop != json.end()) {
    if (!stop->is_array()) return Malformed("\"stop\" must be a list of strings");
    for (const Json& s : *stop) {
      if (!s.is_string() || s.get<std::string>().empty()) {
        return Malformed("\"stop\" must be a list of non-empty strings");
      }
      t.stop_.push_back(s.get<std::string>());
    }
  }
  return t;
}

absl::StatusOr<std::optional<ChatTemplate>> ChatTemplate::Load(const std::string& model_dir) {
  std::ifstream in(std::filesystem::path(model_dir) / kFile);
  if (!in) return std::optional<ChatTemplate>();
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ChatTemplate> t = Parse(text.str());
  if (!t.ok()) return t.status();
  return std::optional<ChatTemplate>(*std::move(t));
}

absl::StatusOr<std::string> ChatTemplate::Render(const Json& messages) const {
  if (!messages.is_array() || messages.empty()) {
    return InvalidParam("messages", "messages must be a non-empty list of {role, content}");
  }
  std::string prompt = bos_;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return InvalidParam("messages", absl::StrCat(where, " must be an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return InvalidParam("messages", absl::StrCat(where, ".role must be a string"));
    }
    auto known = roles_.find(role->get<std::string>());
    if (known == roles_.end()) {
      std::string roles;
      for (const auto& [name, r] : roles_) absl::StrAppend(&roles, roles.empty() ? "" : ", ", name);
      return InvalidParam("messages", absl::StrCat(where, ".role '", role->get<std::string>(),
                                                   "' is not one this model knows: ", roles));
    }
    std::string content;
    auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      return InvalidParam("messages", absl::StrCat(where, ".content is missing"));
    } else if (c->is_string()) {
      content = c->get<std::string>();
    } else if (c->is_array()) {
      for (const Json& part : *c) {
        auto type = part.is_object() ? part.find("type") : part.end();
        auto text = part.is_object() ? part.find("text") : part.end();
        if (type == part.end() || *type != "text" || text == part.end() || !text->is_string()) {
          return InvalidParam("messages", absl::StrCat(where,
                                                       ".content: only text parts are supported "
                                                       "({\"type\": \"text\", \"text\": ...})"));
        }
        content += text->get<std::string>();
      }
    } else {
      return InvalidParam("messages",
                          absl::StrCat(where, ".content must be a string or a list of parts"));
    }
    absl::StrAppend(&prompt, known->second.prefix, content, known->second.suffix);
  }
  prompt += generation_prompt_;
  return prompt;
}

bool HasJinjaChatTemplate(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::exists(fs::path(model_dir) / "chat_template.jinja", error)) return true;
  std::ifstream in(fs::path(model_dir) / "tokenizer_config.json");
  if (!in) return false;
  const Json config = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  return config.is_object() && config.contains("chat_template") &&
         !config["chat_template"].is_null();
}

}  // namespace catserve::server::openai
