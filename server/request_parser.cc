#include "server/request_parser.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/sampling/sampler.h"
#include "server/utf8.h"

namespace catserve::server {
namespace {

using scheduler::InvalidField;

}  // namespace

RequestParser::RequestParser(const engine::Tokenizer* tokenizer, const engine::ModelConfig& config,
                             const ServingLimits& limits, int default_chunk_size,
                             std::map<std::string, Tier> tiers)
    : tokenizer_(tokenizer),
      config_(config),
      limits_(limits),
      default_chunk_size_(default_chunk_size),
      tiers_(std::move(tiers)) {}

absl::StatusOr<int> RequestParser::ResolveChunkSize(const v1::GenerateRequest& request) const {
  if (request.chunk_size() != 0 && !request.tier().empty()) {
    return InvalidField(
        "tier", absl::StrCat("set chunk_size or tier, not both (got chunk_size ",
                             request.chunk_size(), " and tier '", Excerpt(request.tier()), "')"));
  }
  if (!request.tier().empty()) {
    auto it = tiers_.find(request.tier());
    if (it == tiers_.end()) {
      return InvalidField(
          "tier",
          absl::StrCat("unknown tier '", Excerpt(request.tier()), "'; tiers: ",
                       tiers_.empty()
                           ? std::string("none")
                           : absl::StrJoin(tiers_, ", ", [](std::string* out, const auto& t) {
                               absl::StrAppend(out, t.first, "=", FormatTier(t.second));
                             })));
    }
    return it->second.chunk_size;
  }
  if (request.chunk_size() == 0) return default_chunk_size_;
  return request.chunk_size();
}

absl::StatusOr<std::vector<int32_t>> RequestParser::Prompt(
    const v1::GenerateRequest& request) const {
  std::vector<int32_t> prompt;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) {
        return InvalidField("text", "prompt is empty: set text or token_ids");
      }
      if (static_cast<int64_t>(request.text().size()) > limits_.max_prompt_bytes) {
        return InvalidField(
            "text", absl::StrCat("the prompt text has ", request.text().size(),
                                 " bytes, more than this server reads (", limits_.max_prompt_bytes,
                                 "; --max_prompt_bytes); shorten it"));
      }
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(request.text());
      if (!ids.ok()) {
        return InvalidField("text", absl::StrCat("cannot tokenize text: ", ids.status().message()));
      }
      if (ids->empty())
        return InvalidField("text", "prompt text encodes to no tokens; give some text");
      prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return InvalidField("token_ids", "prompt is empty: set text or token_ids");
      prompt.assign(ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return InvalidField("text", "prompt is empty: set text or token_ids");
  }
  return prompt;
}

absl::StatusOr<ParsedGeneration> RequestParser::Parse(const v1::GenerateRequest& request,
                                                      absl::Time deadline,
                                                      uint64_t random_seed) const {
  ParsedGeneration parsed;
  scheduler::GenerationRequest& out = parsed.request;

  // Everything cheap first: the prompt (tokenizing a text) comes last.
  if (request.max_tokens() > limits_.max_new_tokens) {
    return InvalidField("max_tokens", absl::StrCat("max_tokens ", request.max_tokens(),
                                                   " is more than the limit of ",
                                                   limits_.max_new_tokens, "; lower it"));
  }
  out.max_new_tokens = request.max_tokens();

  const v1::SamplingParams& s = request.sampling();
  out.sampling.temperature = s.has_temperature() ? s.temperature() : 1.0f;
  out.sampling.top_k = s.top_k();
  out.sampling.top_p = s.has_top_p() ? s.top_p() : 1.0f;
  out.sampling.min_p = s.min_p();
  out.sampling.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0f;
  out.sampling.seed = s.has_seed() ? s.seed() : random_seed;

  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).empty()) {
      return InvalidField("stop", absl::StrCat("stop[", i, "] is empty; remove it"));
    }
  }
  parsed.stop_strings.assign(request.stop().begin(), request.stop().end());
  out.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  out.ignore_eos = request.ignore_eos();

  absl::StatusOr<int> chunk_size = ResolveChunkSize(request);
  if (!chunk_size.ok()) return chunk_size.status();
  out.chunk_size = *chunk_size;
  out.coarsest_chunk_size = request.coarsest_chunk_size();
  if (out.coarsest_chunk_size == 0 && !request.tier().empty()) {
    out.coarsest_chunk_size = tiers_.at(request.tier()).coarsest_chunk_size;
  }
  out.priority = request.priority();
  out.deadline = deadline;
  out.top_logprobs = request.top_logprobs();
  out.want_logprobs = request.logprobs() || request.top_logprobs() > 0;

  absl::StatusOr<std::vector<int32_t>> prompt = Prompt(request);
  if (!prompt.ok()) return prompt.status();
  out.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(out.prompt.size());
  if (prompt_tokens > limits_.max_prompt_tokens) {
    return InvalidField(
        "prompt", absl::StrCat("the prompt has ", prompt_tokens, " tokens, more than the limit of ",
                               limits_.max_prompt_tokens, "; shorten it"));
  }
  if (absl::Status st = scheduler::ValidateRequest(config_, out); !st.ok()) return st;
  return parsed;
}

}  // namespace catserve::server
