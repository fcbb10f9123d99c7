#include "scheduler/request.h"

namespace catserve::scheduler {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadlineExceeded:
      return "deadline_exceeded";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

}  // namespace catserve::scheduler
