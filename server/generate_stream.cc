#include "server/generate_stream.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

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
      want_logprobs_(parsed.request.want_logprobs),
      text_(shared.tokenizer, parsed.request.prompt, parsed.stop_strings,
            &shared.metrics->ForChunkSize(parsed.request.chunk_size),
            &shared.metrics->ForTransport(metrics::Transport::kGrpc), arrival,
            parsed.request.deadline) {}

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
    shared_.metrics->CountEndedUnstreamed(metrics::Transport::kGrpc, chunk_size,
                                          RequestOutcome::kRejected);
  }
  if (cancel != 0) shared_.scheduler->Cancel(cancel);
  Pump();
}

uint64_t GenerateStream::TakeCancel() {
  if (!cancel_wanted_ || cancel_sent_ || id_ == 0) return 0;
  cancel_sent_ = true;
  return id_;
}

void GenerateStream::OnAdmitted() { text_.OnAdmitted(); }

void GenerateStream::OnToken(const scheduler::GeneratedToken& token) {
  std::optional<TextStream::Piece> piece = text_.OnToken(token);
  if (!piece.has_value()) return;
  {
    absl::MutexLock lock(&mu_);
    pending_.add_token_ids(piece->token_id);
    if (want_logprobs_) pending_.add_logprobs(piece->logprob);
    if (!piece->top.empty()) {
      v1::TokenAlternatives* alternatives = pending_.add_top_logprobs();
      for (const engine::TokenLogprob& t : piece->top) {
        alternatives->add_token_ids(t.token);
        alternatives->add_logprobs(t.logprob);
      }
    }
    pending_.mutable_text()->append(piece->text);
    has_pending_ = true;
    if (text_.stopped()) cancel_wanted_ = true;  // sent by OnWriteDone of the write Pump starts
  }
  Pump();
}

void GenerateStream::OnFinish(const scheduler::FinishInfo& info) {
  bool client_cancelled;
  {
    absl::MutexLock lock(&mu_);
    client_cancelled = client_cancelled_;
  }
  TextStream::Ending ending = text_.OnFinish(info, client_cancelled);
  {
    absl::MutexLock lock(&mu_);
    if (!ending.text.empty()) {
      pending_.mutable_text()->append(ending.text);
      has_pending_ = true;
    }
    if (ending.status.ok()) {
      pending_.set_finish_reason(ending.finish_reason);
      v1::Usage* usage = pending_.mutable_usage();
      usage->set_prompt_tokens(ending.usage.prompt_tokens);
      usage->set_generated_tokens(ending.usage.generated_tokens);
      usage->set_chunk_size(ending.usage.chunk_size);
      usage->set_kv_bytes(ending.usage.kv_bytes);
      usage->set_degraded(ending.usage.degraded);
      usage->set_preempted(ending.usage.preempted);
      usage->set_cached_prompt_tokens(ending.usage.cached_prompt_tokens);
      has_pending_ = true;
    }
    done_ = true;
    final_status_ = ToGrpcStatus(ending.status);
  }
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
