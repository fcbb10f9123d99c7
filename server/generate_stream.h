// GenerateStream: one Generate call, from the scheduler's sink to the client's stream.
#ifndef CATSERVE_SERVER_GENERATE_STREAM_H_
#define CATSERVE_SERVER_GENERATE_STREAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "catserve/v1/generation.pb.h"
#include "engine/model/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "scheduler/request.h"
#include "scheduler/scheduler.h"
#include "server/metrics/serving_metrics.h"
#include "server/request_parser.h"
#include "server/text_stream.h"

namespace catserve::server {

// The server half of a Generate call (gRPC callback API: no thread of its own) and the
// scheduler's sink for its request.
//
// The scheduler's delivery thread hands over tokens (OnToken); the request's TextStream (the
// stream core both transports share) turns each into text, and the piece is appended to one
// pending response. At most one write is
// in flight: when it completes (OnWriteDone, a gRPC thread) the pending response, which has
// gathered every token since, is written next. So a slow client costs one growing message, never a
// blocked scheduler. OnFinish appends finish_reason and usage and the call finishes once everything
// is written.
//
// Cancellation: a client cancel, disconnect or expired deadline (OnCancel) and a stop string both
// end the request with Scheduler::Cancel, always called from a gRPC thread (never from inside a
// sink call, which the scheduler makes on its delivery thread). The call is finished only after the
// scheduler's OnFinish, so the scheduler never calls a deleted sink; the object deletes itself in
// OnDone.
class GenerateStream : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                       public scheduler::GenerationSink {
 public:
  // What every stream of a server shares; everything must outlive the gRPC server.
  struct Shared {
    scheduler::Scheduler* scheduler;
    const engine::Tokenizer* tokenizer;
    metrics::ServingMetrics* metrics;
  };

  // Submits `parsed` to the scheduler and returns the reactor of the call. A request the
  // scheduler refuses finishes the call at once with the scheduler's status (RESOURCE_EXHAUSTED
  // when the queue is full, UNAVAILABLE while draining, ...).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(grpc::CallbackServerContext* context,
                                                               const Shared& shared,
                                                               ParsedGeneration parsed,
                                                               absl::Time arrival);
  // A reactor that finishes its call at once with `status` (a request that failed validation).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Reject(grpc::Status status);

  // scheduler::GenerationSink, on the scheduler's delivery thread.
  void OnAdmitted() override;
  void OnToken(const scheduler::GeneratedToken& token) override;
  void OnFinish(const scheduler::FinishInfo& info) override;

  // grpc::ServerWriteReactor, on gRPC threads.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateStream(const Shared& shared, const ParsedGeneration& parsed, absl::Time arrival);
  void Submit(scheduler::GenerationRequest request);
  // Writes the pending response if no write is in flight, or finishes the call once the request
  // is done and everything is written.
  void Pump() ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the id to cancel when a cancel is wanted, the request is submitted and no cancel was
  // sent yet; 0 otherwise.
  uint64_t TakeCancel() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Shared shared_;
  const bool want_logprobs_;

  // Delivery thread only.
  TextStream text_;

  absl::Mutex mu_;
  uint64_t id_ ABSL_GUARDED_BY(mu_) = 0;  // 0 until Submit succeeds
  bool cancel_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool client_cancelled_ ABSL_GUARDED_BY(mu_) = false;
  v1::GenerateResponse pending_ ABSL_GUARDED_BY(mu_);
  bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // a write failed: the client is gone
  bool done_ ABSL_GUARDED_BY(mu_) = false;    // the request is over; finish after the writes
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
  // The message being written; only touched while no write is in flight.
  v1::GenerateResponse current_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_GENERATE_STREAM_H_
