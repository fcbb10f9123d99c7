#ifndef CATSERVE_TESTS_SCHEDULER_COLLECTING_SINK_H_
#define CATSERVE_TESTS_SCHEDULER_COLLECTING_SINK_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/synchronization/notification.h"
#include "scheduler/request.h"

namespace catserve::scheduler {

// Collects one request's events; Wait() returns once OnFinish came.
class CollectingSink : public GenerationSink {
 public:
  void OnAdmitted() override { ++admitted; }
  void OnToken(const GeneratedToken& t) override {
    tokens.push_back(t.id);
    logprobs.push_back(t.logprob);
    if (on_token) on_token(static_cast<int>(tokens.size()));
  }
  void OnFinish(const FinishInfo& f) override {
    info = f;
    done.Notify();
  }
  FinishInfo Wait() {
    done.WaitForNotification();
    return info;
  }

  int admitted = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // 0 unless the request asked for them
  std::function<void(int)> on_token;
  FinishInfo info;
  absl::Notification done;
};

}  // namespace catserve::scheduler

#endif  // CATSERVE_TESTS_SCHEDULER_COLLECTING_SINK_H_
