#include "scheduler/admission_policy.h"

namespace catserve::scheduler {
namespace {

class QueuePolicy : public AdmissionPolicy {
 public:
  std::string_view name() const override { return "queue"; }
  int PickNext(absl::Span<const WaitingRequest> waiting) const override {
    int best = -1;
    for (int i = 0; i < static_cast<int>(waiting.size()); ++i) {
      if (best < 0 || waiting[i].priority > waiting[best].priority ||
          (waiting[i].priority == waiting[best].priority &&
           waiting[i].arrival < waiting[best].arrival)) {
        best = i;
      }
    }
    return best;
  }
};

}  // namespace

std::unique_ptr<AdmissionPolicy> MakeQueuePolicy() { return std::make_unique<QueuePolicy>(); }

}  // namespace catserve::scheduler
