#include "server/openai/openai_api.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/openai/completion_request.h"
#include "server/openai/openai_error.h"

namespace catserve::server::openai {
namespace {

using Json = nlohmann::json;
constexpr char kJson[] = "application/json";

std::string ModelsJson(const v1::ModelInfo& info) {
  Json tiers = Json::object();
  for (const auto& [name, chunk_size] : info.tiers()) {
    auto coarsest = info.tier_coarsest_chunk_sizes().find(name);
    tiers[name] = {
        {"chunk_size", chunk_size},
        {"coarsest_chunk_size",
         coarsest == info.tier_coarsest_chunk_sizes().end() ? chunk_size : coarsest->second}};
  }
  Json model = {
      {"id", info.model()},
      {"object", "model"},
      {"created", absl::ToUnixSeconds(absl::Now())},
      {"owned_by", "catserve"},
      {"root", info.model()},
      {"parent", nullptr},
      {"max_model_len", info.limits().max_context()},
      // catserve's own, beside OpenAI's.
      {"chunk_sizes", Json(std::vector<int>(info.chunk_sizes().begin(), info.chunk_sizes().end()))},
      {"default_chunk_size", info.default_chunk_size()},
      {"tiers", std::move(tiers)},
      {"backend", info.backend()}};
  return Json{{"object", "list"}, {"data", Json::array({std::move(model)})}}.dump();
}

}  // namespace

OpenAiApi::OpenAiApi(Config config)
    : config_(std::move(config)), models_json_(ModelsJson(config_.model_info)) {}

int64_t OpenAiApi::max_body_bytes() const {
  const ServingLimits& limits = config_.parser->limits();
  // A text prompt JSON-escaped (\uXXXX is 6 bytes per byte at worst) or token ids (at most 12
  // bytes each with separators), plus room for the other fields.
  return std::max<int64_t>(6 * limits.max_prompt_bytes,
                           12 * static_cast<int64_t>(limits.max_prompt_tokens)) +
         (64 << 10);
}

void OpenAiApi::AnswerError(http::Call& call, int status, absl::string_view message) {
  http::Headers headers;
  if (status == 503) headers.emplace_back("Retry-After", "1");
  call.Reply(status, kJson, ErrorBody(status, message), std::move(headers));
}

void OpenAiApi::AddRoutes(http::Routes& routes) const {
  routes
      .Get("/v1/models", [this](const http::Request& request,
                                std::shared_ptr<http::Call> call) { Models(request, call); })
      .Post("/v1/completions",
            [this](const http::Request& request, std::shared_ptr<http::Call> call) {
              Completions(request, std::move(call));
            })
      .Post("/v1/chat/completions",
            [this](const http::Request& request, std::shared_ptr<http::Call> call) {
              ChatCompletions(request, std::move(call));
            });
}

void OpenAiApi::CountRejected(int chunk_size) const {
  config_.shared.metrics->CountEndedUnstreamed(metrics::Transport::kOpenAi, chunk_size,
                                               metrics::RequestOutcome::kRejected);
}

bool OpenAiApi::Authenticate(const http::Request& request, http::Call& call) const {
  if (config_.authenticator == nullptr) return true;
  absl::Status status = config_.authenticator->Check(request.authorization);
  if (status.ok()) return true;
  ReplyError(call, status);
  return false;
}

void OpenAiApi::Models(const http::Request& request, std::shared_ptr<http::Call> call) const {
  if (!Authenticate(request, *call)) return;
  call->Reply(200, kJson, models_json_);
}

void OpenAiApi::Completions(const http::Request& request, std::shared_ptr<http::Call> call) const {
  const absl::Time arrival = absl::Now();
  if (!Authenticate(request, *call)) {
    CountRejected(config_.parser->default_chunk_size());
    return;
  }
  Submit(ParseCompletionRequest(request.body, config_.model_info.model()), arrival,
         std::move(call));
}

void OpenAiApi::ChatCompletions(const http::Request& request,
                                std::shared_ptr<http::Call> call) const {
  const absl::Time arrival = absl::Now();
  if (!Authenticate(request, *call)) {
    CountRejected(config_.parser->default_chunk_size());
    return;
  }
  if (!config_.chat_template.has_value()) {
    CountRejected(config_.parser->default_chunk_size());
    ReplyError(*call,
               InvalidParam("messages",
                            config_.jinja_chat_template
                                ? absl::StrCat("model '", config_.model_info.model(),
                                               "' has only a Jinja chat template, which this "
                                               "server does not render; declare it as "
                                               "chat_template.json (docs/OPENAI_API.md) or apply "
                                               "it yourself and use /v1/completions")
                                : absl::StrCat("model '", config_.model_info.model(),
                                               "' declares no chat template (no "
                                               "chat_template.json in its directory): it is a "
                                               "base model; send a prompt to /v1/completions "
                                               "instead")));
    return;
  }
  Submit(ParseChatRequest(request.body, config_.model_info.model(), *config_.chat_template),
         arrival, std::move(call));
}

void OpenAiApi::Submit(absl::StatusOr<CompletionRequest> completion, absl::Time arrival,
                       std::shared_ptr<http::Call> call) const {
  const int default_chunk_size = config_.parser->default_chunk_size();
  if (!completion.ok()) {
    CountRejected(default_chunk_size);
    ReplyError(*call, completion.status());
    return;
  }
  const absl::Time deadline = config_.request_timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : arrival + config_.request_timeout;
  absl::StatusOr<ParsedGeneration> parsed = config_.parser->Parse(
      completion->generate, deadline, absl::Uniform<uint64_t>(absl::BitGen()));
  if (!parsed.ok()) {
    // Counted under the chunk size asked for, or the default one when that is what is wrong.
    absl::StatusOr<int> chunk_size = config_.parser->ResolveChunkSize(completion->generate);
    const bool served = chunk_size.ok() && config_.parser->serves_chunk_size(*chunk_size);
    CountRejected(served ? *chunk_size : default_chunk_size);
    ReplyError(*call, InOpenAiTerms(parsed.status()));
    return;
  }
  CompletionCall::Start(config_.shared, *std::move(parsed), *completion, std::move(call), arrival);
}

}  // namespace catserve::server::openai
