#ifndef CATSERVE_SCHEDULER_SCHEDULER_H_
#define CATSERVE_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/kernels/thread_pool.h"
#include "engine/step/engine.h"
#include "scheduler/admission_policy.h"
#include "scheduler/kv_cache_manager.h"
#include "scheduler/request.h"

namespace catserve::scheduler {

struct SchedulerOptions {
  int max_queued = 1024;           // waiting requests beyond this are refused
  int max_running = 256;           // sequences in one step at most
  int max_tokens_per_step = 2048;  // prompt tokens + decode tokens one step processes at most
  int kv_pool_pages = 0;           // pages of the compressed-KV pool (> 0)
  int kv_page_entries = 16;        // entries a page holds
  // Automatic prefix caching of full compressed pages (KvCacheManager::AttachPrefix).
  bool prefix_cache = true;
};

// A memory-pressure decision the scheduler applied.
struct PressureEvent {
  enum class Kind {
    kDegrade,  // admitted or continued at a coarser chunk size: from -> to
    kPreempt,  // pages taken back, to be recomputed on resume
  };
  Kind kind = Kind::kDegrade;
  uint64_t id = 0;
  int from_chunk_size = 0;
  int to_chunk_size = 0;
  int tokens = 0;  // tokens the sequence knew (prompt + generated) when it was applied
};

// A running sequence's cache after a step.
struct SequenceKv {
  uint64_t id = 0;
  int chunk_size = 0;
  int cached_tokens = 0;
  int pages = 0;
};

// What one engine step did; handed to the observer after every step.
struct StepReport {
  absl::Duration duration;     // planning + engine step + sampling
  absl::Duration engine_time;  // inside Engine::Step
  // The whole scheduler iteration around the step: queue updates, the step, and handing the
  // results to the sinks. iteration - engine_time is the serving layer's own cost.
  absl::Duration iteration;
  int batch_size = 0;  // sequences in the step
  int tokens = 0;      // tokens the step consumed (prefill + decode)
  int decoder_positions = 0;
  std::map<int, int> compressed_chunks;  // by chunk size
  // Pressure decisions applied since the previous report, in order.
  std::vector<PressureEvent> pressure;
  // Every running sequence after the step, in admission order.
  std::vector<SequenceKv> sequences;
};

// A consistent view of the scheduler's state.
struct SchedulerSnapshot {
  std::map<int, int> running;  // by the chunk size each runs at now
  std::map<int, int> waiting;  // by the chunk size each would run at
  int kv_pages_used = 0;       // held by live sequences
  int kv_pages_total = 0;
  int kv_pages_cached = 0;          // held by the prefix cache (some also by sequences)
  int kv_pages_free = 0;            // neither: on the pool's free list
  int64_t prefix_query_tokens = 0;  // since start
  int64_t prefix_hit_tokens = 0;
  size_t kv_bytes_used = 0;
  size_t kv_bytes_total = 0;
  bool accepting = true;
};

// Step-level hooks for metrics. Called on the scheduler thread; must not block.
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnStep(const StepReport& report, const SchedulerSnapshot& after) = 0;
};

// Continuous batching over one Engine and one KvCacheManager. A single scheduler thread owns the
// engine and the pool; every public method is thread-safe and returns without waiting for a step.
//
// Each iteration: drop cancelled and expired requests (their pages are freed at once), apply the
// AdmissionPolicy's decisions (admit at a chunk size, wait, degrade, preempt), then schedule ->
// run -> postprocess one engine step over every running sequence: one token for each decoding
// sequence plus bounded pieces of prompts (and of re-prefills after a degrade or preemption),
// within max_tokens_per_step, with any mix of chunk sizes. Sampled tokens go to each request's
// sink, called in order from one delivery thread so that sink work overlaps the next step.
class Scheduler {
 public:
  // A scheduler with a pool of options.kv_pool_pages pages; `policy` null is the `queue` policy.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      engine::Engine* engine, const SchedulerOptions& options,
      std::unique_ptr<AdmissionPolicy> policy = nullptr, SchedulerObserver* observer = nullptr);
  ~Scheduler();  // Shutdown()

  // Validates and queues a request. INVALID_ARGUMENT for a bad request (ValidateRequest's rules
  // and words),
  // RESOURCE_EXHAUSTED when the queue is full or the request can never fit the pool, UNAVAILABLE
  // once draining. On success the sink receives every later event.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, std::shared_ptr<GenerationSink> sink);
  // Finishes the request with kCancelled at the next iteration (no-op if already finished).
  void Cancel(uint64_t id);
  // Refuses new requests from now on (UNAVAILABLE); queued and running ones carry on.
  void StopAccepting();
  // True when nothing is queued or running.
  bool Idle() const;
  // Cancels everything still queued or running, then stops the thread. Idempotent.
  void Shutdown();

  SchedulerSnapshot Snapshot() const;
  const engine::Engine& engine() const { return *engine_; }

  // OK until an engine step fails with INTERNAL, which the engine contract reserves for a device
  // that can no longer compute (a sticky CUDA error). Then: that step's requests and every other
  // running or queued one finish with kError and that status, Submit answers it, no further
  // step runs, and this returns it (the daemon reports NOT_SERVING and exits non-zero).
  absl::Status FatalError() const;

 private:
  struct Sequence;
  Scheduler(engine::Engine* engine, KvCacheManager kv_cache, const SchedulerOptions& options,
            std::unique_ptr<AdmissionPolicy> policy, SchedulerObserver* observer);

  // Sink calls gathered under the lock and made after it is released, so a sink may call back
  // into the scheduler (Cancel from OnToken, say).
  struct Outbox;

  // The engine's work for one step: items and the sequences they advance.
  struct Plan;

  absl::Status Validate(const GenerationRequest& request) const;
  void Loop();
  void Iterate();
  // Finishes cancelled and expired requests.
  void DropFinished(Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies the policy's admission decisions until it waits.
  void Admit(Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies one decision; false if it cannot be applied (unknown id, size not allowed, ...).
  bool Apply(const Decision& decision, Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PressureView View(std::vector<WaitingRequest>& waiting,
                    std::vector<RunningSequence>& running) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Picks the step's items and reserves their pages, asking the policy to relieve the pool when
  // they do not fit. Returns false when no sequence has work.
  bool Schedule(Plan& plan, Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Trims, hands out the step's tokens and finishes after the engine step.
  void Postprocess(Plan& plan, const absl::Status& status, Outbox& out, StepReport& report,
                   SchedulerSnapshot& after);
  // Ends `seq` (frees its pages at once) and queues its OnFinish.
  void Finish(Sequence& seq, FinishReason reason, absl::Status error, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a fatal step: finishes everything left with `error` and refuses new work.
  void FailEverything(const absl::Status& error, Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SchedulerSnapshot SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands an outbox to the delivery thread, which makes the sink calls in order. Sinks' own work
  // (detokenizing, writing to the network) then overlaps the next engine step instead of
  // adding to the scheduler loop.
  void Post(Outbox out);
  void DeliverLoop();

  engine::Engine* engine_;
  const SchedulerOptions options_;
  std::unique_ptr<AdmissionPolicy> policy_;
  SchedulerObserver* observer_;

  // The pool's size and page size, fixed at construction: what Validate (any thread) reads.
  const int pool_pages_;
  const int page_entries_;
  // Touched only by the scheduler thread; `kv_` mirrors its accounting for Snapshot.
  KvCacheManager kv_cache_;
  std::vector<PressureEvent> pressure_;  // not yet reported; scheduler thread only

  mutable absl::Mutex mu_;
  KvCacheSnapshot kv_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Sequence>> running_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancelled_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status fatal_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;

  absl::Mutex out_mu_;
  std::deque<std::unique_ptr<Outbox>> out_queue_ ABSL_GUARDED_BY(out_mu_);
  bool out_stop_ ABSL_GUARDED_BY(out_mu_) = false;
  std::thread deliver_thread_;
  std::vector<engine::SampledToken> tokens_;  // a step's draws; scheduler thread only
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_SCHEDULER_H_
