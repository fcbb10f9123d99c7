#ifndef CATSERVE_SCHEDULER_ADMISSION_POLICY_H_
#define CATSERVE_SCHEDULER_ADMISSION_POLICY_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace catserve::scheduler {

// What a policy may know of a waiting request.
struct WaitingRequest {
  uint64_t id = 0;
  int priority = 0;
  int chunk_size = 0;
  int prompt_tokens = 0;
  int pages_needed = 0;  // pages its prompt needs to be admitted
  absl::Time arrival;
};

// Decides which waiting request is admitted next when the compressed-KV pool is the limit. The
// memory pressure policies (queue, preempt, degrade) plug in here; the scheduler owns the memory
// bookkeeping and only asks the policy for decisions.
class AdmissionPolicy {
 public:
  virtual ~AdmissionPolicy() = default;
  virtual std::string_view name() const = 0;
  // Index into `waiting` of the request to admit next, or -1 to admit none now.
  virtual int PickNext(absl::Span<const WaitingRequest> waiting) const = 0;
};

// `queue`: highest priority first, then arrival order; a request that does not fit waits at the
// head of the line (no smaller request overtakes it, so none starves).
std::unique_ptr<AdmissionPolicy> MakeQueuePolicy();

}  // namespace catserve::scheduler

#endif  // CATSERVE_SCHEDULER_ADMISSION_POLICY_H_
