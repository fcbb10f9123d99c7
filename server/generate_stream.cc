#include "server/generate_stream.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/utf8.h"

namespace catserve::server {
namespace {

using metrics::RequestOutcome;

// A call refused before reaching the scheduler.
class RejectedStream : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit RejectedStream(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateStream::Reject(grpc::Status status) {
  return new RejectedStream(std::move(status));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateStream::Start(
    grpc::CallbackServerContext* context, const Shared& shared, ParsedGeneration parsed,
    absl::Time arrival) {
  auto* stream = new GenerateStream(shared, parsed, arrival);
  stream->Submit(std::move(parsed.request));
  return stream;
}

GenerateStream::GenerateStream(const Shared& shared, const ParsedGeneration& parsed,
                               absl::Time arrival)
    : shared_(shared),
      deadline_(parsed.request.deadline),
      want_logprobs_(parsed.request.want_logprobs),
      decoder_(shared.tokenizer, parsed.request.prompt),
      matcher_(parsed.stop_strings),
      metrics_(&shared.metrics->ForChunkSize(parsed.request.chunk_size), arrival) {}

void GenerateStream::Submit(scheduler::GenerationRequest request) {
  const int chunk_size = request.chunk_size;
  // The scheduler shares ownership in name only: this object lives until OnDone, which cannot
  // come before the scheduler's last call (OnFinish).
  std::shared_ptr<scheduler::GenerationSink> sink(this, [](scheduler::GenerationSink*) {});
  absl::StatusOr<uint64_t> id = shared_.scheduler->Submit(std::move(request), std::move(sink));
  uint64_t cancel = 0;
  {
    absl::MutexLock lock(&mu_);
    if (id.ok()) {
      id_ = *id;
      cancel = TakeCancel();
    } else {
      done_ = true;
      final_status_ = ToGrpcStatus(id.status());
    }
  }
  if (!id.ok()) {
    shared_.metrics->ForChunkSize(chunk_size).finished(RequestOutcome::kRejected).Increment();
  }
  if (cancel != 0) shared_.scheduler->Cancel(cancel);
  Pump();
}

uint64_t GenerateStream::TakeCancel() {
  if (!cancel_wanted_ || cancel_sent_ || id_ == 0) return 0;
  cancel_sent_ = true;
  return id_;
}

void GenerateStream::OnAdmitted() { metrics_.OnAdmitted(absl::Now()); }

void GenerateStream::OnToken(const scheduler::GeneratedToken& token) {
  if (stop_hit_) return;  // the cancel is on its way; the stream has all it will show
  metrics_.OnToken(absl::Now());
  // CoerceToUtf8 guards the proto contract should the decoder ever split a character.
  StopStringMatcher::Result shown = matcher_.Add(CoerceToUtf8(decoder_.Add(token.id)));
  ++tokens_sent_;
  {
    absl::MutexLock lock(&mu_);
    pending_.add_token_ids(token.id);
    if (want_logprobs_) pending_.add_logprobs(token.logprob);
    if (!token.top.empty()) {
      v1::TokenAlternatives* alternatives = pending_.add_top_logprobs();
      for (const engine::TokenLogprob& t : token.top) {
        alternatives->add_token_ids(t.token);
        alternatives->add_logprobs(t.logprob);
      }
    }
    pending_.mutable_text()->append(shown.text);
    has_pending_ = true;
    if (shown.stopped) {
      stop_hit_ = true;
      cancel_wanted_ = true;  // sent by OnWriteDone of the write Pump starts now
    }
  }
  Pump();
}

void GenerateStream::Conclude(const scheduler::FinishInfo& info, grpc::Status* status,
                              RequestOutcome* outcome) {
  using scheduler::FinishReason;
  *status = grpc::Status::OK;
  if (stop_hit_) {
    *outcome = RequestOutcome::kStop;
    return;
  }
  switch (info.reason) {
    case FinishReason::kStop:
      *outcome = RequestOutcome::kStop;
      return;
    case FinishReason::kLength:
      *outcome = RequestOutcome::kLength;
      return;
    case FinishReason::kDeadlineExceeded:
      *outcome = RequestOutcome::kDeadlineExceeded;
      break;
    case FinishReason::kCancelled:
      if (!client_cancelled_) {
        // Not the client's doing: the server cancelled it on shutdown.
        *outcome = RequestOutcome::kCancelled;
        *status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                               "the server shut down before the request finished; retry");
        return;
      }
      *outcome =
          absl::Now() >= deadline_ ? RequestOutcome::kDeadlineExceeded : RequestOutcome::kCancelled;
      break;
    case FinishReason::kError:
      *outcome = RequestOutcome::kError;
      *status = info.error.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "generation failed")
                                : ToGrpcStatus(info.error);
      return;
  }
  if (*outcome == RequestOutcome::kDeadlineExceeded) {
    *status = grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        absl::StrCat("deadline exceeded after ", info.generated_tokens, " generated tokens"));
  } else {
    *status = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  }
}

void GenerateStream::OnFinish(const scheduler::FinishInfo& info) {
  std::string tail;
  if (!stop_hit_) {
    StopStringMatcher::Result shown = matcher_.Add(CoerceToUtf8(decoder_.Flush()));
    tail = std::move(shown.text);
    if (shown.stopped) {
      stop_hit_ = true;
    } else {
      tail += matcher_.Flush();
    }
  }
  grpc::Status status;
  RequestOutcome outcome;
  {
    absl::MutexLock lock(&mu_);
    Conclude(info, &status, &outcome);
    if (!tail.empty()) {
      pending_.mutable_text()->append(tail);
      has_pending_ = true;
    }
    if (status.ok()) {
      pending_.set_finish_reason(stop_hit_ ? "stop" : scheduler::FinishReasonName(info.reason));
      v1::Usage* usage = pending_.mutable_usage();
      usage->set_prompt_tokens(info.prompt_tokens);
      usage->set_generated_tokens(stop_hit_ ? tokens_sent_ : info.generated_tokens);
      usage->set_chunk_size(info.chunk_size);
      usage->set_kv_bytes(static_cast<int64_t>(info.kv_bytes_at_end));
      usage->set_degraded(info.degraded);
      usage->set_preempted(info.preempted);
      has_pending_ = true;
    }
    done_ = true;
    final_status_ = status;
  }
  metrics_.OnFinish(outcome, info.prompt_tokens, absl::Now());
  Pump();
}

void GenerateStream::Pump() {
  bool write = false;
  grpc::Status finish_status;
  {
    absl::MutexLock lock(&mu_);
    if (write_in_flight_ || finish_called_) return;
    if (has_pending_ && !broken_) {
      current_.Clear();
      current_.Swap(&pending_);
      has_pending_ = false;
      write_in_flight_ = true;
      write = true;
    } else if (done_) {
      finish_called_ = true;
      finish_status = final_status_;
    } else {
      return;
    }
  }
  if (write) {
    StartWrite(&current_);
  } else {
    Finish(std::move(finish_status));
  }
}

void GenerateStream::OnWriteDone(bool ok) {
  uint64_t cancel;
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) broken_ = true;
    cancel = TakeCancel();
  }
  if (cancel != 0) shared_.scheduler->Cancel(cancel);
  Pump();
}

void GenerateStream::OnCancel() {
  uint64_t cancel;
  {
    absl::MutexLock lock(&mu_);
    client_cancelled_ = true;
    cancel_wanted_ = true;
    cancel = TakeCancel();
  }
  if (cancel != 0) shared_.scheduler->Cancel(cancel);
}

void GenerateStream::OnDone() { delete this; }

}  // namespace catserve::server
