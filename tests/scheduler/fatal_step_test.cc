// An engine step that fails with INTERNAL (what a sticky CUDA error gives) is fatal: the step's
// requests and every other running or queued one finish with that status, the scheduler refuses
// new work with it and runs no further step. Any other step error fails only that step's
// requests. The failure is injected by an engine wrapper, so this runs on the CPU.
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "engine/cpu/cpu_engine.h"
#include "gtest/gtest.h"
#include "scheduler/scheduler.h"
#include "tests/common/test_models.h"
#include "tests/support/random_model.h"

namespace catserve::scheduler {
namespace {

// A CPU engine whose steps from `fail_at` on (counting from 1) return `error` without computing;
// the first failing step waits for `release()`, so that a test can queue its requests first.
class FailingEngine : public engine::Engine {
 public:
  FailingEngine(const engine::ModelConfig& c, int fail_at, absl::Status error)
      : inner_(c, engine::RandomModelWeights(c, 3), {.threads = 1}),
        fail_at_(fail_at),
        error_(std::move(error)) {}
  const engine::ModelConfig& config() const override { return inner_.config(); }
  engine::KvGeometry kv_geometry(int page_entries) const override {
    return inner_.kv_geometry(page_entries);
  }
  int threads() const override { return inner_.threads(); }
  absl::Status Step(absl::Span<const engine::StepItem> items, engine::KvPool& pool,
                    absl::Span<engine::SampledToken> tokens, engine::StepStats* stats) override {
    if (++steps_ >= fail_at_ &&
        (error_.code() == absl::StatusCode::kInternal || steps_ == fail_at_)) {
      released_.WaitForNotification();
      return error_;
    }
    return inner_.Step(items, pool, tokens, stats);
  }
  absl::Status StepLogits(absl::Span<const engine::StepItem> items, engine::KvPool& pool,
                          absl::Span<float> logits, engine::StepStats* stats) override {
    return inner_.StepLogits(items, pool, logits, stats);
  }
  int steps() const { return steps_; }
  void release() { released_.Notify(); }

 private:
  engine::CpuEngine inner_;
  const int fail_at_;
  const absl::Status error_;
  std::atomic<int> steps_{0};
  absl::Notification released_;
};

class Sink : public GenerationSink {
 public:
  void OnAdmitted() override {}
  void OnToken(const GeneratedToken&) override { ++tokens; }
  void OnFinish(const FinishInfo& f) override {
    info = f;
    done.Notify();
  }
  std::atomic<int> tokens{0};
  FinishInfo info;
  absl::Notification done;
};

GenerationRequest Request(int vocab, int chunk, uint64_t seed) {
  std::mt19937 rng(seed);
  GenerationRequest r;
  for (int i = 0; i < 9; ++i) r.prompt.push_back(3 + rng() % (vocab - 3));
  r.max_new_tokens = 30;
  r.chunk_size = chunk;
  r.ignore_eos = true;
  return r;
}

std::unique_ptr<Scheduler> Make(engine::Engine* engine) {
  auto s = Scheduler::Create(engine, {.max_queued = 16,
                                      .max_running = 2,
                                      .max_tokens_per_step = 64,
                                      .kv_pool_pages = 256,
                                      .kv_page_entries = 4});
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

TEST(FatalStepTest, InternalErrorFailsEveryRequestAndStopsStepping) {
  const engine::ModelConfig c = ::catserve::testing::TinyConfig(false);
  FailingEngine engine(c, 4, absl::InternalError("step: an illegal memory access was encountered"));
  auto sched = Make(&engine);
  std::vector<std::shared_ptr<Sink>> sinks;
  for (int i = 0; i < 5; ++i) {  // two run, three wait (max_running 2)
    sinks.push_back(std::make_shared<Sink>());
    const absl::StatusOr<uint64_t> id = sched->Submit(Request(c.vocab_size, 4, i), sinks.back());
    ASSERT_TRUE(id.ok()) << id.status();
  }
  engine.release();
  for (const auto& s : sinks) {
    ASSERT_TRUE(s->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
    EXPECT_EQ(s->info.reason, FinishReason::kError);
    EXPECT_EQ(s->info.error.code(), absl::StatusCode::kInternal);
    EXPECT_EQ(s->info.error.message(), "step: an illegal memory access was encountered");
  }
  EXPECT_EQ(sched->FatalError().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(sched->Idle());
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
  absl::StatusOr<uint64_t> later =
      sched->Submit(Request(c.vocab_size, 4, 9), std::make_shared<Sink>());
  EXPECT_EQ(later.status().code(), absl::StatusCode::kInternal);
  const int steps = engine.steps();
  EXPECT_EQ(steps, 4);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(engine.steps(), steps) << "a step ran after the fatal one";
}

TEST(FatalStepTest, OtherStepErrorsFailOnlyThatStep) {
  const engine::ModelConfig c = ::catserve::testing::TinyConfig(false);
  FailingEngine engine(c, 2, absl::InvalidArgumentError("a bad item"));
  engine.release();
  auto sched = Make(&engine);
  auto first = std::make_shared<Sink>();
  ASSERT_TRUE(sched->Submit(Request(c.vocab_size, 4, 1), first).ok());
  ASSERT_TRUE(first->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(first->info.reason, FinishReason::kError);
  EXPECT_EQ(first->info.error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sched->FatalError().ok());
  auto second = std::make_shared<Sink>();
  ASSERT_TRUE(sched->Submit(Request(c.vocab_size, 4, 2), second).ok());
  ASSERT_TRUE(second->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(second->info.reason, FinishReason::kLength);
  EXPECT_EQ(second->tokens, 30);
}

}  // namespace
}  // namespace catserve::scheduler
