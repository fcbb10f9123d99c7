#include "server/openai/completion_call.h"

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/openai/openai_error.h"

namespace catserve::server::openai {
namespace {

using Json = nlohmann::json;
constexpr char kJson[] = "application/json";

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string Event(const Json& json) { return absl::StrCat("data: ", Dump(json), "\n\n"); }

std::string RandomId() {
  absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

}  // namespace

void CompletionCall::Start(const Shared& shared, ParsedGeneration parsed,
                           const CompletionRequest& options, std::shared_ptr<http::Call> call,
                           absl::Time arrival) {
  auto self = std::make_shared<CompletionCall>(shared, parsed, options, call, arrival);
  const int chunk_size = parsed.request.chunk_size;
  absl::StatusOr<uint64_t> id = shared.scheduler->Submit(std::move(parsed.request), self);
  if (!id.ok()) {
    shared.metrics->CountEndedUnstreamed(metrics::Transport::kOpenAi, chunk_size,
                                         metrics::RequestOutcome::kRejected);
    ReplyError(*call, id.status());
    return;
  }
  {
    // Under mu_, so that the delivery thread's first Emit cannot pass the stream's start.
    absl::MutexLock lock(&self->mu_);
    self->request_id_ = *id;
    if (options.stream) {
      call->StartStream(200, "text/event-stream",
                        {{"X-Accel-Buffering", "no"}, {"Connection", "keep-alive"}});
      if (!self->early_bytes_.empty()) call->Write(std::exchange(self->early_bytes_, {}));
      if (self->ended_early_) call->End();
      self->stream_started_ = true;
    }
  }
  // The HTTP layer keeps `call` (and this callback) until the request ends; the callback holds
  // the sink only weakly so that a finished request frees it.
  std::weak_ptr<CompletionCall> weak = self;
  call->OnClientGone([weak] {
    if (std::shared_ptr<CompletionCall> sink = weak.lock()) {
      {
        absl::MutexLock lock(&sink->mu_);
        sink->client_gone_ = true;
        sink->cancel_wanted_ = true;
      }
      sink->CancelIfWanted();
    }
  });
  self->CancelIfWanted();
}

CompletionCall::CompletionCall(const Shared& shared, const ParsedGeneration& parsed,
                               const CompletionRequest& options, std::shared_ptr<http::Call> call,
                               absl::Time arrival)
    : shared_(shared),
      options_(options),
      call_(std::move(call)),
      id_((options.chat ? "chatcmpl-" : "cmpl-") + RandomId()),
      created_(absl::ToUnixSeconds(arrival)),
      text_(shared.tokenizer, parsed.request.prompt, parsed.stop_strings,
            &shared.metrics->ForChunkSize(parsed.request.chunk_size),
            &shared.metrics->ForTransport(metrics::Transport::kOpenAi), arrival,
            parsed.request.deadline),
      logprobs_(nullptr) {
  logprobs_ = EmptyLogprobs();
}

void CompletionCall::CancelIfWanted() {
  uint64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (!cancel_wanted_ || cancel_sent_ || request_id_ == 0) return;
    cancel_sent_ = true;
    id = request_id_;
  }
  shared_.scheduler->Cancel(id);
}

void CompletionCall::Emit(std::string bytes) {
  absl::MutexLock lock(&mu_);
  if (!stream_started_) {
    early_bytes_ += bytes;
    return;
  }
  call_->Write(bytes);
}

Json CompletionCall::EmptyLogprobs() const {
  if (options_.chat) return Json{{"content", Json::array()}};
  return Json{{"tokens", Json::array()},
              {"token_logprobs", Json::array()},
              {"top_logprobs", Json::array()},
              {"text_offset", Json::array()}};
}

Json CompletionCall::Choice(const std::string& text, Json logprobs, Json finish_reason) {
  Json choice = {{"index", 0}};
  if (!options_.chat) {
    choice["text"] = text;
  } else if (options_.stream) {
    Json delta = Json::object();
    if (!role_sent_) delta["role"] = "assistant";
    role_sent_ = true;
    if (!text.empty() || finish_reason.is_null()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = std::move(finish_reason);
  return choice;
}

Json CompletionCall::Envelope(Json choices) const {
  const char* object = !options_.chat    ? "text_completion"
                       : options_.stream ? "chat.completion.chunk"
                                         : "chat.completion";
  return Json{{"id", id_},
              {"object", object},
              {"created", created_},
              {"model", shared_.model_name},
              {"choices", std::move(choices)}};
}

void CompletionCall::AddLogprobs(const TextStream::Piece& piece, const std::string& token_text,
                                 Json* logprobs) {
  auto bytes = [](const std::string& text) {
    Json b = Json::array();
    for (unsigned char c : text) b.push_back(static_cast<int>(c));
    return b;
  };
  if (options_.chat) {
    Json top = Json::array();
    for (const engine::TokenLogprob& alternative : piece.top) {
      const std::string text = text_.TokenText(alternative.token);
      top.push_back({{"token", text}, {"logprob", alternative.logprob}, {"bytes", bytes(text)}});
    }
    (*logprobs)["content"].push_back({{"token", token_text},
                                      {"logprob", piece.logprob},
                                      {"bytes", bytes(token_text)},
                                      {"top_logprobs", std::move(top)}});
    return;
  }
  (*logprobs)["tokens"].push_back(token_text);
  (*logprobs)["token_logprobs"].push_back(piece.logprob);
  Json top = Json::object();
  for (const engine::TokenLogprob& alternative : piece.top) {
    std::string text = text_.TokenText(alternative.token);
    if (!top.contains(text)) top[text] = alternative.logprob;
  }
  (*logprobs)["top_logprobs"].push_back(std::move(top));
  (*logprobs)["text_offset"].push_back(text_offset_);
}

Json CompletionCall::Usage(const TextStream::Usage& usage) const {
  return Json{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.generated_tokens},
              {"total_tokens", usage.prompt_tokens + usage.generated_tokens},
              {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens}}},
              // catserve's own, beside OpenAI's.
              {"chunk_size", usage.chunk_size},
              {"kv_bytes", usage.kv_bytes},
              {"degraded", usage.degraded},
              {"preempted", usage.preempted}};
}

void CompletionCall::OnAdmitted() { text_.OnAdmitted(); }

void CompletionCall::OnToken(const scheduler::GeneratedToken& token) {
  const bool want_logprobs = options_.logprobs >= 0;
  // Named before OnToken moves past it: the text of the token after the previous one.
  const std::string token_text = want_logprobs ? text_.TokenText(token.id) : std::string();
  std::optional<TextStream::Piece> piece = text_.OnToken(token);
  if (piece.has_value()) {
    if (options_.stream) {
      if (!piece->text.empty() || want_logprobs) {
        Json logprobs = nullptr;
        if (want_logprobs) {
          logprobs = EmptyLogprobs();
          AddLogprobs(*piece, token_text, &logprobs);
        }
        Json chunk = Envelope(Json::array({Choice(piece->text, std::move(logprobs), nullptr)}));
        if (options_.include_usage) chunk["usage"] = nullptr;
        Emit(Event(chunk));
      }
    } else {
      if (want_logprobs) AddLogprobs(*piece, token_text, &logprobs_);
      text_so_far_ += piece->text;
    }
    text_offset_ += static_cast<int64_t>(piece->text.size());
  }
  if (text_.stopped()) {
    {
      absl::MutexLock lock(&mu_);
      cancel_wanted_ = true;
    }
    CancelIfWanted();
  }
}

void CompletionCall::OnFinish(const scheduler::FinishInfo& info) {
  bool client_gone;
  {
    absl::MutexLock lock(&mu_);
    client_gone = client_gone_;
  }
  TextStream::Ending ending = text_.OnFinish(info, client_gone);
  if (client_gone) return;  // nobody to answer
  if (options_.stream) {
    if (ending.status.ok()) {
      Json chunk = Envelope(Json::array({Choice(ending.text, nullptr, ending.finish_reason)}));
      if (options_.include_usage) chunk["usage"] = nullptr;
      Emit(Event(chunk));
      if (options_.include_usage) {
        Json usage = Envelope(Json::array());
        usage["usage"] = Usage(ending.usage);
        Emit(Event(usage));
      }
    } else {
      Emit(absl::StrCat("data: ", ToHttpError(ending.status).body, "\n\n"));
    }
    Emit("data: [DONE]\n\n");
    absl::MutexLock lock(&mu_);
    if (stream_started_) {
      call_->End();
    } else {
      ended_early_ = true;
    }
    return;
  }
  if (!ending.status.ok()) {
    ReplyError(*call_, ending.status);
    return;
  }
  text_so_far_ += ending.text;
  Json completion = Envelope(Json::array({Choice(
      text_so_far_, options_.logprobs >= 0 ? logprobs_ : Json(nullptr), ending.finish_reason)}));
  completion["usage"] = Usage(ending.usage);
  call_->Reply(200, kJson, Dump(completion));
}

}  // namespace catserve::server::openai
