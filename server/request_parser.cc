#include "server/request_parser.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/sampler.h"
#include "server/utf8.h"

namespace catserve::server {
namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status CheckTokenId(int32_t id, int vocab_size, absl::string_view field, int index) {
  if (id >= 0 && id < vocab_size) return absl::OkStatus();
  return Invalid(absl::StrCat(field, "[", index, "] = ", id, " is not a token id of this model (",
                              "the vocabulary is [0, ", vocab_size, "))"));
}

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
    return Invalid(absl::StrCat("set chunk_size or tier, not both (got chunk_size ",
                                request.chunk_size(), " and tier '", Excerpt(request.tier()),
                                "')"));
  }
  if (!request.tier().empty()) {
    auto it = tiers_.find(request.tier());
    if (it == tiers_.end()) {
      return Invalid(absl::StrCat(
          "unknown tier '", Excerpt(request.tier()), "'; tiers: ",
          tiers_.empty() ? std::string("none")
                         : absl::StrJoin(tiers_, ", ", [](std::string* out, const auto& t) {
                             absl::StrAppend(out, t.first, "=", FormatTier(t.second));
                           })));
    }
    return it->second.chunk_size;
  }
  if (request.chunk_size() == 0) return default_chunk_size_;
  if (!config_.serves_chunk_size(request.chunk_size())) {
    return Invalid(absl::StrCat("chunk_size ", request.chunk_size(),
                                " is not served by this model; served chunk sizes: ",
                                absl::StrJoin(config_.chunk_sizes(), ", ")));
  }
  return request.chunk_size();
}

absl::StatusOr<std::vector<int32_t>> RequestParser::Prompt(
    const v1::GenerateRequest& request) const {
  std::vector<int32_t> prompt;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) return Invalid("prompt is empty: set text or token_ids");
      if (static_cast<int64_t>(request.text().size()) > limits_.max_prompt_bytes) {
        return Invalid(absl::StrCat("the prompt text has ", request.text().size(),
                                    " bytes, more than this server reads (",
                                    limits_.max_prompt_bytes, "; --max_prompt_bytes); shorten it"));
      }
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(request.text());
      if (!ids.ok()) return Invalid(absl::StrCat("cannot tokenize text: ", ids.status().message()));
      if (ids->empty()) return Invalid("prompt text encodes to no tokens; give some text");
      prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      if (ids.empty()) return Invalid("prompt is empty: set text or token_ids");
      for (int i = 0; i < ids.size(); ++i) {
        if (absl::Status s = CheckTokenId(ids[i], config_.vocab_size, "token_ids.ids", i);
            !s.ok()) {
          return s;
        }
      }
      prompt.assign(ids.begin(), ids.end());
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return Invalid("prompt is empty: set text or token_ids");
  }
  return prompt;
}

absl::StatusOr<ParsedGeneration> RequestParser::Parse(const v1::GenerateRequest& request,
                                                      absl::Time deadline,
                                                      uint64_t random_seed) const {
  ParsedGeneration parsed;
  scheduler::GenerationRequest& out = parsed.request;

  // Everything cheap first: the prompt (tokenizing a text) comes last.
  if (request.max_tokens() <= 0) {
    return Invalid(absl::StrCat("max_tokens must be >= 1 (got ", request.max_tokens(), ")"));
  }
  if (request.max_tokens() > limits_.max_new_tokens) {
    return Invalid(absl::StrCat("max_tokens ", request.max_tokens(), " is more than the limit of ",
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
  if (absl::Status st = engine::ValidateSamplingParams(out.sampling); !st.ok()) {
    return Invalid(absl::StrCat("sampling.", st.message()));
  }

  for (int i = 0; i < request.stop_size(); ++i) {
    if (request.stop(i).empty()) {
      return Invalid(absl::StrCat("stop[", i, "] is empty; remove it"));
    }
  }
  parsed.stop_strings.assign(request.stop().begin(), request.stop().end());
  for (int i = 0; i < request.stop_token_ids_size(); ++i) {
    if (absl::Status st =
            CheckTokenId(request.stop_token_ids(i), config_.vocab_size, "stop_token_ids", i);
        !st.ok()) {
      return st;
    }
  }
  out.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  out.ignore_eos = request.ignore_eos();

  absl::StatusOr<int> chunk_size = ResolveChunkSize(request);
  if (!chunk_size.ok()) return chunk_size.status();
  out.chunk_size = *chunk_size;
  out.coarsest_chunk_size = request.coarsest_chunk_size();
  if (out.coarsest_chunk_size == 0 && !request.tier().empty()) {
    out.coarsest_chunk_size = tiers_.at(request.tier()).coarsest_chunk_size;
  }
  if (out.coarsest_chunk_size != 0 && (!config_.serves_chunk_size(out.coarsest_chunk_size) ||
                                       out.coarsest_chunk_size < out.chunk_size)) {
    return Invalid(absl::StrCat(
        "coarsest_chunk_size ", request.coarsest_chunk_size(),
        " must be a served chunk size >= the chunk size ", out.chunk_size,
        ", or 0 (none coarser); served chunk sizes: ", absl::StrJoin(config_.chunk_sizes(), ", ")));
  }
  out.priority = request.priority();
  out.deadline = deadline;
  out.want_logprobs = request.logprobs();

  absl::StatusOr<std::vector<int32_t>> prompt = Prompt(request);
  if (!prompt.ok()) return prompt.status();
  out.prompt = *std::move(prompt);
  const int prompt_tokens = static_cast<int>(out.prompt.size());
  if (prompt_tokens > limits_.max_prompt_tokens) {
    return Invalid(absl::StrCat("the prompt has ", prompt_tokens,
                                " tokens, more than the limit of ", limits_.max_prompt_tokens,
                                "; shorten it"));
  }
  if (static_cast<int64_t>(prompt_tokens) + request.max_tokens() > limits_.max_context) {
    return Invalid(absl::StrCat("the prompt (", prompt_tokens, " tokens) + max_tokens (",
                                request.max_tokens(), ") exceeds the model's context of ",
                                limits_.max_context, " tokens; lower max_tokens to at most ",
                                limits_.max_context - prompt_tokens, " or shorten the prompt"));
  }
  return parsed;
}

}  // namespace catserve::server
