#include "server/openai/completion_request.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/openai/openai_error.h"
#include "server/utf8.h"

namespace catserve::server::openai {
namespace {

using Json = nlohmann::json;

const char* KindOf(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "a list";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::number_float:
      return "a fraction";
    default:
      return "a number";
  }
}

absl::Status WrongType(absl::string_view name, const char* want, const Json& got) {
  return InvalidParam(name, absl::StrCat(name, " must be ", want, ", got ", KindOf(got)));
}

// The object's fields, read by type. A field that is absent or null reads as nullopt.
class Fields {
 public:
  explicit Fields(const Json& object) : object_(object) {}

  const Json* Find(const char* name) const {
    auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::StatusOr<std::optional<bool>> Bool(const char* name) const {
    const Json* v = Find(name);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) return WrongType(name, "true or false", *v);
    return std::optional<bool>(v->get<bool>());
  }

  absl::StatusOr<std::optional<double>> Number(const char* name) const {
    const Json* v = Find(name);
    if (v == nullptr) return std::optional<double>();
    if (!v->is_number()) return WrongType(name, "a number", *v);
    return std::optional<double>(v->get<double>());
  }

  // An integer in [lo, hi]; a number with a fraction or outside is an error.
  absl::StatusOr<std::optional<int64_t>> Int(const char* name, int64_t lo, int64_t hi) const {
    const Json* v = Find(name);
    if (v == nullptr) return std::optional<int64_t>();
    return IntValue(name, *v, lo, hi);
  }

  absl::StatusOr<std::optional<std::string>> String(const char* name) const {
    const Json* v = Find(name);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return WrongType(name, "a string", *v);
    return std::optional<std::string>(v->get<std::string>());
  }

  static absl::StatusOr<int64_t> IntValue(absl::string_view name, const Json& v, int64_t lo,
                                          int64_t hi) {
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
        return InvalidParam(name, absl::StrCat(name, " must be at most ", hi));
      }
      const int64_t x =
          v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
      if (x < lo || x > hi) {
        return InvalidParam(name, absl::StrCat(name, " must be in [", lo, ", ", hi, "], got ", x));
      }
      return x;
    }
    if (v.is_number_float()) {
      return InvalidParam(name,
                          absl::StrCat(name, " must be a whole number, got ", v.get<double>()));
    }
    return WrongType(name, "an integer", v);
  }

 private:
  const Json& object_;
};

#define CATSERVE_ASSIGN_OR_RETURN(lhs, expr)    \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// prompt: a string, a list of token ids, or a list holding one of either.
absl::Status ReadPrompt(const Json& prompt, v1::GenerateRequest* out) {
  if (prompt.is_string()) {
    out->set_text(prompt.get<std::string>());
    return absl::OkStatus();
  }
  if (!prompt.is_array()) return WrongType("prompt", "a string or a list of token ids", prompt);
  if (prompt.empty()) return InvalidParam("prompt", "prompt is empty: give text or token ids");
  if (prompt[0].is_string() || prompt[0].is_array()) {
    if (prompt.size() > 1) {
      return InvalidParam("prompt", absl::StrCat("prompt holds ", prompt.size(),
                                                 " prompts; this server takes one per request: "
                                                 "send them as separate requests"));
    }
    return ReadPrompt(prompt[0], out);
  }
  v1::TokenIds* ids = out->mutable_token_ids();
  for (size_t i = 0; i < prompt.size(); ++i) {
    const std::string name = absl::StrCat("prompt[", i, "]");
    absl::StatusOr<int64_t> id = Fields::IntValue(name, prompt[i], 0, kInt32Max);
    if (!id.ok()) return InvalidParam("prompt", id.status().message());
    ids->add_ids(static_cast<int32_t>(*id));
  }
  return absl::OkStatus();
}

// stop: a string or a list of strings.
absl::Status ReadStop(const Json& stop, v1::GenerateRequest* out) {
  if (stop.is_string()) {
    out->add_stop(stop.get<std::string>());
    return absl::OkStatus();
  }
  if (!stop.is_array()) return WrongType("stop", "a string or a list of strings", stop);
  for (size_t i = 0; i < stop.size(); ++i) {
    if (!stop[i].is_string()) return WrongType(absl::StrCat("stop[", i, "]"), "a string", stop[i]);
    out->add_stop(stop[i].get<std::string>());
  }
  return absl::OkStatus();
}

// A field catserve does not implement, accepted only at its neutral value (`neutral_number` for
// a number; false, empty or absent otherwise).
absl::Status OnlyNeutral(const Fields& fields, const char* name, double neutral_number,
                         const char* why) {
  const Json* v = fields.Find(name);
  if (v == nullptr) return absl::OkStatus();
  const bool neutral = (v->is_number() && v->get<double>() == neutral_number) ||
                       (v->is_boolean() && !v->get<bool>()) ||
                       (v->is_string() && v->get<std::string>().empty()) ||
                       (v->is_object() && v->empty()) || (v->is_array() && v->empty());
  if (neutral) return absl::OkStatus();
  return InvalidParam(name, absl::StrCat(name, " is not supported: ", why));
}

}  // namespace

int JsonDepth(absl::string_view json, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : json) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

namespace {

// The body as a JSON object, or why it is not one.
absl::StatusOr<Json> ParseBody(absl::string_view body) {
  if (JsonDepth(body, kMaxJsonDepth) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(absl::StrCat("the body nests lists and objects deeper than ",
                                                   kMaxJsonDepth, " levels; flatten it"));
  }
  Json json = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(
        "the body is not valid JSON; send a JSON object with Content-Type: application/json");
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the body must be a JSON object, got ", KindOf(json)));
  }
  return json;
}

absl::Status CheckModel(const Fields& fields, absl::string_view model_name) {
  CATSERVE_ASSIGN_OR_RETURN(model, fields.String("model"));
  if (model.has_value() && !model->empty() && *model != model_name) {
    return absl::NotFoundError(absl::StrCat("model '", Excerpt(*model),
                                            "' is not served here; this server serves '",
                                            model_name, "' (GET /v1/models)"));
  }
  return absl::OkStatus();
}

// Every field but the prompt (and, for chat, the messages and logprobs).
absl::Status ReadGenerationFields(const Fields& fields, bool chat, CompletionRequest* out) {
  v1::GenerateRequest& g = out->generate;
  // Chat's newer name for max_tokens.
  CATSERVE_ASSIGN_OR_RETURN(max_completion_tokens,
                            fields.Int("max_completion_tokens", 1, kInt32Max));
  CATSERVE_ASSIGN_OR_RETURN(max_tokens, fields.Int("max_tokens", 1, kInt32Max));
  const int64_t default_tokens = chat ? 256 : 16;
  g.set_max_tokens(
      static_cast<int32_t>(max_completion_tokens.value_or(max_tokens.value_or(default_tokens))));

  v1::SamplingParams* sampling = g.mutable_sampling();
  CATSERVE_ASSIGN_OR_RETURN(temperature, fields.Number("temperature"));
  if (temperature.has_value()) sampling->set_temperature(static_cast<float>(*temperature));
  CATSERVE_ASSIGN_OR_RETURN(top_p, fields.Number("top_p"));
  if (top_p.has_value()) sampling->set_top_p(static_cast<float>(*top_p));
  CATSERVE_ASSIGN_OR_RETURN(min_p, fields.Number("min_p"));
  if (min_p.has_value()) sampling->set_min_p(static_cast<float>(*min_p));
  CATSERVE_ASSIGN_OR_RETURN(penalty, fields.Number("repetition_penalty"));
  if (penalty.has_value()) sampling->set_repetition_penalty(static_cast<float>(*penalty));
  // vLLM's top_k: -1 (or 0) is off.
  CATSERVE_ASSIGN_OR_RETURN(top_k, fields.Int("top_k", -1, kInt32Max));
  if (top_k.has_value() && *top_k > 0) sampling->set_top_k(static_cast<int32_t>(*top_k));
  CATSERVE_ASSIGN_OR_RETURN(seed, fields.Int("seed", std::numeric_limits<int64_t>::min(),
                                             std::numeric_limits<int64_t>::max()));
  if (seed.has_value()) sampling->set_seed(static_cast<uint64_t>(*seed));

  if (const Json* stop = fields.Find("stop"); stop != nullptr) {
    if (absl::Status s = ReadStop(*stop, &g); !s.ok()) return s;
  }
  if (const Json* ids = fields.Find("stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "a list of token ids", *ids);
    for (size_t i = 0; i < ids->size(); ++i) {
      absl::StatusOr<int64_t> id =
          Fields::IntValue(absl::StrCat("stop_token_ids[", i, "]"), (*ids)[i], 0, kInt32Max);
      if (!id.ok()) return InvalidParam("stop_token_ids", id.status().message());
      g.add_stop_token_ids(static_cast<int32_t>(*id));
    }
  }
  CATSERVE_ASSIGN_OR_RETURN(ignore_eos, fields.Bool("ignore_eos"));
  g.set_ignore_eos(ignore_eos.value_or(false));

  if (chat) {
    // Chat: logprobs is a boolean, top_logprobs the alternatives.
    CATSERVE_ASSIGN_OR_RETURN(logprobs, fields.Bool("logprobs"));
    CATSERVE_ASSIGN_OR_RETURN(top, fields.Int("top_logprobs", 0, 20));
    if (top.has_value() && !logprobs.value_or(false)) {
      return InvalidParam("top_logprobs", "top_logprobs needs logprobs: true");
    }
    if (logprobs.value_or(false)) out->logprobs = static_cast<int>(top.value_or(0));
  } else {
    CATSERVE_ASSIGN_OR_RETURN(logprobs, fields.Int("logprobs", 0, 20));
    if (logprobs.has_value()) out->logprobs = static_cast<int>(*logprobs);
  }
  if (out->logprobs >= 0) {
    g.set_logprobs(true);
    g.set_top_logprobs(out->logprobs);
  }

  CATSERVE_ASSIGN_OR_RETURN(chunk_size, fields.Int("chunk_size", 0, kInt32Max));
  g.set_chunk_size(static_cast<int32_t>(chunk_size.value_or(0)));
  CATSERVE_ASSIGN_OR_RETURN(tier, fields.String("tier"));
  if (tier.has_value()) g.set_tier(*tier);
  CATSERVE_ASSIGN_OR_RETURN(coarsest, fields.Int("coarsest_chunk_size", 0, kInt32Max));
  g.set_coarsest_chunk_size(static_cast<int32_t>(coarsest.value_or(0)));
  // vLLM runs the lower priority value first; catserve.v1 admits the higher first.
  CATSERVE_ASSIGN_OR_RETURN(priority, fields.Int("priority", -kInt32Max, kInt32Max));
  g.set_priority(static_cast<int32_t>(-priority.value_or(0)));

  CATSERVE_ASSIGN_OR_RETURN(stream, fields.Bool("stream"));
  out->stream = stream.value_or(false);
  if (const Json* options = fields.Find("stream_options"); options != nullptr) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    if (!out->stream) {
      return InvalidParam("stream_options", "stream_options is only allowed with stream: true");
    }
    CATSERVE_ASSIGN_OR_RETURN(usage, Fields(*options).Bool("include_usage"));
    out->include_usage = usage.value_or(false);
  }

  struct Unsupported {
    const char* name;
    double neutral;
    const char* why;
  };
  for (const Unsupported& u : {
           Unsupported{"n", 1, "one choice per request; send n requests (with different seeds)"},
           Unsupported{"best_of", 1, "one choice per request; send separate requests"},
           Unsupported{"echo", 0, "the prompt is not repeated; prepend it yourself"},
           Unsupported{"suffix", 0, "insertion is not supported by CAT models"},
           Unsupported{"presence_penalty", 0, "use repetition_penalty"},
           Unsupported{"frequency_penalty", 0, "use repetition_penalty"},
           Unsupported{"logit_bias", 0, "token biases are not supported"},
           Unsupported{"tools", 0, "this server does not call tools"},
           Unsupported{"functions", 0, "this server does not call functions"},
       }) {
    if (absl::Status s = OnlyNeutral(fields, u.name, u.neutral, u.why); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body,
                                                         absl::string_view model_name) {
  CATSERVE_ASSIGN_OR_RETURN(json, ParseBody(body));
  const Fields fields(json);
  if (absl::Status s = CheckModel(fields, model_name); !s.ok()) return s;
  CompletionRequest out;
  const Json* prompt = fields.Find("prompt");
  if (prompt == nullptr) return InvalidParam("prompt", "prompt is missing: give text or token ids");
  if (absl::Status s = ReadPrompt(*prompt, &out.generate); !s.ok()) return s;
  if (absl::Status s = ReadGenerationFields(fields, /*chat=*/false, &out); !s.ok()) return s;
  return out;
}

absl::StatusOr<CompletionRequest> ParseChatRequest(absl::string_view body,
                                                   absl::string_view model_name,
                                                   const ChatTemplate& chat_template) {
  CATSERVE_ASSIGN_OR_RETURN(json, ParseBody(body));
  const Fields fields(json);
  if (absl::Status s = CheckModel(fields, model_name); !s.ok()) return s;
  CompletionRequest out;
  out.chat = true;
  const Json* messages = fields.Find("messages");
  if (messages == nullptr) {
    return InvalidParam("messages", "messages is missing: give a list of {role, content}");
  }
  CATSERVE_ASSIGN_OR_RETURN(prompt, chat_template.Render(*messages));
  out.generate.set_text(prompt);
  if (absl::Status s = ReadGenerationFields(fields, /*chat=*/true, &out); !s.ok()) return s;
  for (const std::string& stop : chat_template.stop()) out.generate.add_stop(stop);
  return out;
}

}  // namespace catserve::server::openai

#undef CATSERVE_ASSIGN_OR_RETURN
