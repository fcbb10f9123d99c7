// CompletionCall: one POST /v1/completions, from the scheduler's sink to the HTTP answer.
#ifndef CATSERVE_SERVER_OPENAI_COMPLETION_CALL_H_
#define CATSERVE_SERVER_OPENAI_COMPLETION_CALL_H_

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/model/tokenizer.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "server/http/http_server.h"
#include "server/metrics/serving_metrics.h"
#include "server/openai/completion_request.h"
#include "server/request_parser.h"
#include "server/text_stream.h"

namespace catserve::server::openai {

// The OpenAI API's half of a completion: its TextStream (the stream core it shares with the gRPC
// API) makes the text, finish reason and usage; this class writes them in OpenAI's completion
// shape, as one JSON answer or as server-sent events (one `data:` chunk per token, then the
// finishing chunk, the usage chunk when stream_options.include_usage, and `data: [DONE]`).
//
// A client that goes away (HTTP layer: OnClientGone) cancels the request at once, so its pages
// are freed at the scheduler's next iteration; a stop string cancels it too. A request the
// scheduler refuses is answered with its error (429, 503, ...) before any byte of a stream.
class CompletionCall : public scheduler::GenerationSink {
 public:
  struct Shared {
    scheduler::Scheduler* scheduler;
    const engine::Tokenizer* tokenizer;
    metrics::ServingMetrics* metrics;
    std::string model_name;
  };

  // Submits `parsed` and answers `call` when it ends (or streams it).
  static void Start(const Shared& shared, ParsedGeneration parsed, const CompletionRequest& options,
                    std::shared_ptr<http::Call> call, absl::Time arrival);

  CompletionCall(const Shared& shared, const ParsedGeneration& parsed,
                 const CompletionRequest& options, std::shared_ptr<http::Call> call,
                 absl::Time arrival);

  // scheduler::GenerationSink, on the scheduler's delivery thread.
  void OnAdmitted() override;
  void OnToken(const scheduler::GeneratedToken& token) override;
  void OnFinish(const scheduler::FinishInfo& info) override;

 private:
  // Cancels the request once, when it is submitted and a cancel is wanted; any thread.
  void CancelIfWanted();
  // Sends SSE bytes, or holds them until the stream starts (after a successful Submit).
  void Emit(std::string bytes);
  // A completion object (or chunk) around `choices`: text_completion, chat.completion or
  // chat.completion.chunk.
  nlohmann::json Envelope(nlohmann::json choices) const;
  // The one choice of an answer or a chunk: `text` (a chunk's piece or the whole text), its
  // logprobs (null when not asked), its finish reason (null in a chunk before the last).
  nlohmann::json Choice(const std::string& text, nlohmann::json logprobs,
                        nlohmann::json finish_reason);
  // Logprobs of one token, added to `logprobs` in the request's shape: the completion one
  // (tokens, token_logprobs, top_logprobs, text_offset) or the chat one (content: [{token,
  // logprob, bytes, top_logprobs}]).
  void AddLogprobs(const TextStream::Piece& piece, const std::string& token_text,
                   nlohmann::json* logprobs);
  nlohmann::json EmptyLogprobs() const;
  nlohmann::json Usage(const TextStream::Usage& usage) const;

  const Shared shared_;
  const CompletionRequest options_;
  const std::shared_ptr<http::Call> call_;
  const std::string id_;   // "cmpl-<random hex>"
  const int64_t created_;  // Unix seconds

  // Delivery thread only.
  TextStream text_;
  std::string text_so_far_;  // a whole answer's text
  nlohmann::json logprobs_;  // a whole answer's logprobs (when asked for)
  int64_t text_offset_ = 0;  // bytes of text before the next token's
  bool role_sent_ = false;   // a chat stream's first chunk names the assistant role

  absl::Mutex mu_;
  uint64_t request_id_ ABSL_GUARDED_BY(mu_) = 0;  // 0 until Submit succeeds
  bool cancel_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_started_ ABSL_GUARDED_BY(mu_) = false;
  std::string early_bytes_ ABSL_GUARDED_BY(mu_);   // SSE bytes before the stream started
  bool ended_early_ ABSL_GUARDED_BY(mu_) = false;  // the stream ended before it started
};

}  // namespace catserve::server::openai

#endif  // CATSERVE_SERVER_OPENAI_COMPLETION_CALL_H_
