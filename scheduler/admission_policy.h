#ifndef CATSERVE_SCHEDULER_ADMISSION_POLICY_H_
#define CATSERVE_SCHEDULER_ADMISSION_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "scheduler/kv_cache_manager.h"

namespace catserve::scheduler {

// What a policy knows of a waiting request (new, or preempted and waiting to resume).
struct WaitingRequest {
  uint64_t id = 0;
  int priority = 0;
  absl::Time arrival;
  int chunk_size = 0;  // the size it would run at: asked, or degraded to before a preemption
  // Chunk sizes it may run at, ascending: chunk_size first, up to the coarsest it accepts.
  absl::Span<const int> allowed;
  int pending_tokens = 0;  // tokens to prefill once admitted
  int final_tokens = 0;    // tokens its cache holds at most over its whole life
};

// What a policy knows of a running sequence.
struct RunningSequence {
  uint64_t id = 0;
  int priority = 0;
  absl::Time arrival;
  int chunk_size = 0;
  absl::Span<const int> allowed;  // ascending, chunk_size first
  int tokens = 0;                 // tokens known (prompt + generated)
  int final_tokens = 0;
  int held_pages = 0;
};

// Everything an admission decision may look at. `kv` answers every page question.
struct PressureView {
  absl::Span<const WaitingRequest> waiting;
  absl::Span<const RunningSequence> running;
  const KvCacheManager* kv = nullptr;
  bool batch_full = false;  // max_running reached: nothing may be admitted
};

// One decision: admit waiting request `id` at `chunk_size`, wait, degrade running sequence `id`
// to `chunk_size` (re-prefill its tokens there, freeing pages), or preempt running sequence `id`
// (free its pages, requeue it at the front, re-prefill it on resume).
struct Decision {
  enum class Kind { kWait, kAdmit, kDegrade, kPreempt };
  Kind kind = Kind::kWait;
  uint64_t id = 0;
  int chunk_size = 0;

  static Decision Wait() { return {}; }
  static Decision Admit(uint64_t id, int chunk_size) { return {Kind::kAdmit, id, chunk_size}; }
  static Decision Degrade(uint64_t id, int chunk_size) { return {Kind::kDegrade, id, chunk_size}; }
  static Decision Preempt(uint64_t id) { return {Kind::kPreempt, id, 0}; }
};

// What the scheduler does under memory pressure. The scheduler applies the decisions; the
// KvCacheManager keeps the books.
class AdmissionPolicy {
 public:
  virtual ~AdmissionPolicy() = default;
  virtual std::string_view name() const = 0;
  // True: a sequence is admitted only when the peak pages of its whole life fit the headroom,
  // and the manager keeps them promised, so a running sequence never lacks a page and Relieve is
  // never called. False: admission needs only the pages of the prompt, and Relieve frees pages
  // when running sequences outgrow the pool.
  virtual bool promises_peak() const { return true; }
  // The next admission decision; the scheduler applies it and asks again until kWait (or a
  // decision it cannot apply: an unknown id, a size not allowed, an admit into a full batch).
  virtual Decision Admit(const PressureView& view) const = 0;
  // Running sequences need `pages_short` pages more than are free for the next step: a kDegrade
  // or kPreempt of a running sequence. The default preempts the lowest priority, latest arrival.
  virtual Decision Relieve(const PressureView& view, int pages_short) const;
};

// The policies, by their --pressure_policy name:
//  `queue`:   highest priority first, then arrival order; a request that does not fit at its
//             chunk size waits at the head of the line (none overtakes it, so none starves).
//  `coarser`: as queue, but admits the head at the finest chunk size it allows that fits.
//  `degrade`: as coarser; when the head fits at no size it allows, degrades running sequences of
//             no higher priority that allow a coarser size (lowest priority first, then most
//             pages freed), to the coarsest they allow, if that makes room for the head.
//  `preempt`: admits when the prompt's pages fit what running sequences leave free for their next
//             step (coarser when the asked size does not fit), promising nothing more;
//             when running sequences outgrow the pool, degrades one that allows it, else preempts
//             by recompute the lowest priority, latest arrival.
// INVALID_ARGUMENT for any other name, listing these.
absl::StatusOr<std::unique_ptr<AdmissionPolicy>> MakeAdmissionPolicy(std::string_view name);
// The names above, in that order.
std::vector<std::string> AdmissionPolicyNames();

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_ADMISSION_POLICY_H_
