// TextStream: what a client sees of one generation, whichever transport carries it.
#ifndef CATSERVE_SERVER_TEXT_STREAM_H_
#define CATSERVE_SERVER_TEXT_STREAM_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling/sampler.h"
#include "scheduler/request.h"
#include "server/metrics/serving_metrics.h"
#include "server/request_metrics.h"
#include "server/stop_string_matcher.h"

namespace catserve::server {

// The one stream core of both transports (the gRPC reactor, GenerateStream, and the OpenAI
// API's SSE and JSON writers): it turns the scheduler's tokens into text (whole UTF-8
// characters, decoded with their left context), holds back and cuts at stop strings, decides the
// finish reason, the usage and the final status of a request, and records the request's metrics
// (its chunk size's series and its transport's outcome). The transports only encode what it
// returns.
//
// Not thread-safe: the scheduler's delivery thread drives it through the request's sink.
class TextStream {
 public:
  // What one generated token adds to the answer.
  struct Piece {
    int32_t token_id = 0;
    float logprob = 0.0f;                   // set when the request asked for logprobs
    std::vector<engine::TokenLogprob> top;  // its most likely alternatives, most likely first
    std::string text;                       // text shown now (may be empty: held back)
  };
  // What the scheduler reported at the end, as the client sees it.
  struct Usage {
    int prompt_tokens = 0;
    int generated_tokens = 0;  // tokens shown: a stop string's token and those after it are not
    int chunk_size = 0;        // the chunk size it finished with
    int64_t kv_bytes = 0;
    bool degraded = false;
    bool preempted = false;
    int cached_prompt_tokens = 0;
  };
  struct Ending {
    std::string text;  // held-back text released at the end
    // OK for a completed request; else why it ended: CANCELLED (by the client),
    // DEADLINE_EXCEEDED, UNAVAILABLE (the server shut down first), or the scheduler's error.
    absl::Status status;
    std::string finish_reason;  // "stop" or "length" (status OK only)
    Usage usage;
  };

  // `series` (the request's chunk size) and `transport` (its transport's finished counters,
  // indexed by metrics::RequestOutcome) must outlive the stream; `deadline` tells a client
  // cancel from an expired deadline.
  TextStream(const engine::Tokenizer* tokenizer, const std::vector<int32_t>& prompt,
             std::vector<std::string> stop_strings, const metrics::ChunkSizeMetrics* series,
             const metrics::TransportMetrics* transport, absl::Time arrival, absl::Time deadline);

  void OnAdmitted();
  // The piece `token` adds, or nullopt once a stop string completed (nothing more is shown).
  std::optional<Piece> OnToken(const scheduler::GeneratedToken& token);
  // The text of `id` as the next token after the last one shown (with its word-boundary space):
  // what logprobs name tokens by. Call before OnToken of the token it is for.
  std::string TokenText(int32_t id);
  // True once a stop string completed: the transport cancels the request (from its own thread).
  bool stopped() const { return stop_hit_; }
  // Call once, with the scheduler's report; `client_cancelled` when the transport saw the client
  // cancel or go away (a cancel it did not see came from the server's shutdown).
  Ending OnFinish(const scheduler::FinishInfo& info, bool client_cancelled);

 private:
  const engine::Tokenizer* tokenizer_;
  int32_t last_id_ = -1;  // the last prompt or generated token; -1 before any
  // The text of last_id_ alone, decoded once for every TokenText call until the next token.
  int32_t decoded_id_ = -1;
  std::string decoded_text_;
  engine::StreamDecoder decoder_;
  StopStringMatcher matcher_;
  RequestMetrics metrics_;
  const metrics::TransportMetrics* transport_;
  const absl::Time deadline_;
  bool stop_hit_ = false;
  int tokens_shown_ = 0;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_TEXT_STREAM_H_
