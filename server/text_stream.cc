#include "server/text_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/utf8.h"

namespace catserve::server {

using metrics::RequestOutcome;

TextStream::TextStream(const engine::Tokenizer* tokenizer, const std::vector<int32_t>& prompt,
                       std::vector<std::string> stop_strings,
                       const metrics::ChunkSizeMetrics* series,
                       const metrics::TransportMetrics* transport, absl::Time arrival,
                       absl::Time deadline)
    : tokenizer_(tokenizer),
      last_id_(prompt.empty() ? -1 : prompt.back()),
      decoder_(tokenizer, prompt),
      matcher_(std::move(stop_strings)),
      metrics_(series, arrival),
      transport_(transport),
      deadline_(deadline) {}

void TextStream::OnAdmitted() { metrics_.OnAdmitted(absl::Now()); }

std::optional<TextStream::Piece> TextStream::OnToken(const scheduler::GeneratedToken& token) {
  if (stop_hit_) return std::nullopt;  // the cancel is on its way; the client has all it sees
  metrics_.OnToken(absl::Now());
  last_id_ = token.id;
  // CoerceToUtf8 guards the text contract should the decoder ever split a character.
  StopStringMatcher::Result shown = matcher_.Add(CoerceToUtf8(decoder_.Add(token.id)));
  ++tokens_shown_;
  if (shown.stopped) stop_hit_ = true;
  return Piece{.token_id = token.id,
               .logprob = token.logprob,
               .top = token.top,
               .text = std::move(shown.text)};
}

std::string TextStream::TokenText(int32_t id) {
  if (last_id_ >= 0) {
    if (decoded_id_ != last_id_) {
      absl::StatusOr<std::string> before = tokenizer_->Decode({&last_id_, 1});
      decoded_text_ = before.ok() ? *std::move(before) : std::string();
      decoded_id_ = last_id_;
    }
    const int32_t pair[2] = {last_id_, id};
    absl::StatusOr<std::string> both = tokenizer_->Decode(pair);
    if (both.ok() && both->size() >= decoded_text_.size() &&
        both->compare(0, decoded_text_.size(), decoded_text_) == 0) {
      return CoerceToUtf8(both->substr(decoded_text_.size()));
    }
  }
  absl::StatusOr<std::string> alone = tokenizer_->Decode({&id, 1});
  return alone.ok() ? CoerceToUtf8(*alone) : std::string();
}

TextStream::Ending TextStream::OnFinish(const scheduler::FinishInfo& info, bool client_cancelled) {
  using scheduler::FinishReason;
  Ending ending;
  if (!stop_hit_) {
    StopStringMatcher::Result shown = matcher_.Add(CoerceToUtf8(decoder_.Flush()));
    ending.text = std::move(shown.text);
    if (shown.stopped) {
      stop_hit_ = true;
    } else {
      ending.text += matcher_.Flush();
    }
  }
  RequestOutcome outcome = RequestOutcome::kStop;
  if (!stop_hit_) {
    switch (info.reason) {
      case FinishReason::kStop:
        break;
      case FinishReason::kLength:
        outcome = RequestOutcome::kLength;
        break;
      case FinishReason::kDeadlineExceeded:
        outcome = RequestOutcome::kDeadlineExceeded;
        break;
      case FinishReason::kCancelled:
        if (!client_cancelled) {
          // Not the client's doing: the server cancelled it on shutdown.
          outcome = RequestOutcome::kCancelled;
          ending.status =
              absl::UnavailableError("the server shut down before the request finished; retry");
        } else {
          outcome = absl::Now() >= deadline_ ? RequestOutcome::kDeadlineExceeded
                                             : RequestOutcome::kCancelled;
        }
        break;
      case FinishReason::kError:
        outcome = RequestOutcome::kError;
        ending.status = info.error.ok() ? absl::InternalError("generation failed") : info.error;
        break;
    }
  }
  if (outcome == RequestOutcome::kDeadlineExceeded) {
    ending.status = absl::DeadlineExceededError(
        absl::StrCat("deadline exceeded after ", info.generated_tokens, " generated tokens"));
  } else if (outcome == RequestOutcome::kCancelled && ending.status.ok()) {
    ending.status = absl::CancelledError("cancelled by the client");
  }
  if (ending.status.ok()) {
    ending.finish_reason = stop_hit_ ? "stop" : scheduler::FinishReasonName(info.reason);
    ending.usage = Usage{.prompt_tokens = info.prompt_tokens,
                         .generated_tokens = stop_hit_ ? tokens_shown_ : info.generated_tokens,
                         .chunk_size = info.chunk_size,
                         .kv_bytes = static_cast<int64_t>(info.kv_bytes_at_end),
                         .degraded = info.degraded,
                         .preempted = info.preempted,
                         .cached_prompt_tokens = info.cached_prompt_tokens};
  }
  metrics_.OnFinish(outcome, info.prompt_tokens, absl::Now());
  transport_->finished(outcome).Increment();
  return ending;
}

}  // namespace catserve::server
