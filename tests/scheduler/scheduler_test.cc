// The scheduler with a real engine (random weights): batching changes no output, pages return to
// zero, and every refusal has its status code.
#include "scheduler/scheduler.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/generate.h"
#include "gtest/gtest.h"
#include "tests/common/test_models.h"
#include "tests/scheduler/collecting_sink.h"
#include "tests/support/random_model.h"

namespace catserve::scheduler {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest()
      : config_(testing::TinyConfig(true)),
        engine_(config_, engine::RandomModelWeights(config_, 21), {.threads = 2}) {}

  std::unique_ptr<Scheduler> Make(int pages, int max_queued = 1024, int max_tokens = 64) {
    auto s = Scheduler::Create(&engine_, {.max_queued = max_queued,
                                          .max_running = 64,
                                          .max_tokens_per_step = max_tokens,
                                          .kv_pool_pages = pages,
                                          .kv_page_entries = 4});
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  GenerationRequest Request(int prompt_len, int max_new, int chunk, uint64_t seed) {
    std::mt19937 rng(seed);
    GenerationRequest r;
    for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(3 + rng() % (config_.vocab_size - 3));
    r.max_new_tokens = max_new;
    r.chunk_size = chunk;
    r.ignore_eos = true;
    r.sampling.temperature = seed % 2 == 0 ? 0.0f : 0.8f;
    r.sampling.top_p = 0.9f;
    r.sampling.seed = seed;
    return r;
  }

  std::vector<int32_t> Alone(const GenerationRequest& r) {
    auto out = engine::GenerateAlone(engine_, r.prompt, r.chunk_size, r.max_new_tokens, r.sampling);
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }

  engine::ModelConfig config_;
  engine::CpuEngine engine_;
};

TEST_F(SchedulerTest, BatchingChangesNoOutputAndPagesReturnToZero) {
  // The engine serves one thread at a time: compute the solo outputs before the scheduler runs.
  const int chunks[] = {1, 2, 4, 8, 16};
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 24; ++i) {
    requests.push_back(Request(1 + (i * 7) % 60, 5 + (i * 5) % 40, chunks[i % 5], i));
    expected.push_back(Alone(requests.back()));
  }
  auto sched = Make(/*pages=*/2048);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 24; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(sched->Submit(requests[i], sinks.back()).ok());
  }
  for (int i = 0; i < 24; ++i) {
    FinishInfo info = sinks[i]->Wait();
    EXPECT_EQ(info.reason, FinishReason::kLength);
    EXPECT_EQ(info.generated_tokens, requests[i].max_new_tokens);
    EXPECT_EQ(sinks[i]->tokens, expected[i]) << "request " << i;
  }
  EXPECT_TRUE(sched->Idle());
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

// Rows sampled by the engine's four sampling threads give what one thread gives: greedy,
// temperature and top_p streams equal their solo runs, and logprobs equal a one-thread engine's.
// The vocabulary of 16384 makes every step of four or more rows worth the pool
// (HostStepSampler shares from 65536 logits); 16 requests decode together for most steps.
TEST(SchedulerSamplingThreadsTest, SharedSamplingEqualsSoloRuns) {
  engine::ModelConfig config = testing::TinyConfig(true);
  config.vocab_size = 16384;
  const engine::ModelWeights weights = engine::RandomModelWeights(config, 5);
  engine::CpuEngine engine(config, weights, {.threads = 2});
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  std::mt19937 rng(11);
  for (int i = 0; i < 16; ++i) {
    GenerationRequest r;
    for (int t = 0; t < 3 + (i * 5) % 20; ++t) r.prompt.push_back(3 + rng() % (16384 - 3));
    r.max_new_tokens = 12 + i % 5;
    r.chunk_size = 1 << (i % 4);
    r.ignore_eos = true;
    r.want_logprobs = i % 2 == 0;
    r.sampling.temperature = i % 3 == 0 ? 0.0f : 0.9f;
    r.sampling.top_p = i % 3 == 2 ? 0.8f : 1.0f;
    r.sampling.seed = 100 + i;
    requests.push_back(r);
    auto alone =
        engine::GenerateAlone(engine, r.prompt, r.chunk_size, r.max_new_tokens, r.sampling);
    ASSERT_TRUE(alone.ok()) << alone.status();
    expected.push_back(*alone);
  }
  std::vector<std::vector<std::shared_ptr<CollectingSink>>> runs;
  for (int threads : {1, 4}) {
    engine::CpuEngine sampling(config, weights, {.threads = 2, .sampling_threads = threads});
    auto sched = Scheduler::Create(&sampling, {.max_running = 64,
                                               .max_tokens_per_step = 256,
                                               .kv_pool_pages = 2048,
                                               .kv_page_entries = 4});
    ASSERT_TRUE(sched.ok()) << sched.status();
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (const GenerationRequest& r : requests) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE((*sched)->Submit(r, sinks.back()).ok());
    }
    for (size_t i = 0; i < sinks.size(); ++i) {
      EXPECT_EQ(sinks[i]->Wait().reason, FinishReason::kLength);
      EXPECT_EQ(sinks[i]->tokens, expected[i]) << threads << " threads, request " << i;
    }
    runs.push_back(std::move(sinks));
  }
  int below_zero = 0;  // logprobs that are real numbers, not the 0 of a request without them
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_EQ(runs[1][i]->logprobs.size(), runs[0][i]->logprobs.size());
    for (size_t t = 0; t < runs[0][i]->logprobs.size(); ++t) {
      EXPECT_NEAR(runs[1][i]->logprobs[t], runs[0][i]->logprobs[t], 1e-4)
          << "request " << i << " token " << t;
      EXPECT_LE(runs[1][i]->logprobs[t], 0.0f);
      below_zero += runs[1][i]->logprobs[t] < -1e-3f ? 1 : 0;
    }
  }
  EXPECT_GT(below_zero, 20);
}

TEST_F(SchedulerTest, SmallPoolQueuesButFinishesEverything) {
  // Room for about three requests at once: the rest wait for pages and still come out the same.
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 10; ++i) {
    requests.push_back(Request(20, 20, i % 2 == 0 ? 2 : 8, 100 + i));
    expected.push_back(Alone(requests.back()));
  }
  auto sched = Make(/*pages=*/30);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 10; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(sched->Submit(requests[i], sinks.back()).ok());
  }
  for (int i = 0; i < 10; ++i) {
    sinks[i]->Wait();
    EXPECT_EQ(sinks[i]->tokens, expected[i]);
  }
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

// A model wide enough that a long generation takes far longer (hundreds of ms) than the timing
// of a cancel or a deadline, even on a loaded machine: sinks run on their own thread, so a slow
// sink no longer slows the steps.
std::unique_ptr<engine::CpuEngine> WideEngine() {
  engine::ModelConfig c = testing::TinyConfig(false);
  c.hidden_size = 512;
  c.num_hidden_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 8;
  c.vocab_size = 8000;
  return std::make_unique<engine::CpuEngine>(c, engine::RandomModelWeights(c, 5),
                                             engine::EngineOptions{.threads = 2});
}

TEST(SchedulerTimingTest, CancelMidStreamFreesPages) {
  auto engine = WideEngine();
  auto sched = Scheduler::Create(engine.get(), {.kv_pool_pages = 256, .kv_page_entries = 16});
  ASSERT_TRUE(sched.ok()) << sched.status();
  auto sink = std::make_shared<CollectingSink>();
  absl::Notification third;
  sink->on_token = [&](int n) {
    if (n == 3) third.Notify();
  };
  GenerationRequest r;
  r.prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  r.max_new_tokens = 110;
  r.chunk_size = 4;
  r.ignore_eos = true;
  absl::StatusOr<uint64_t> id = (*sched)->Submit(r, sink);
  ASSERT_TRUE(id.ok());
  third.WaitForNotification();
  (*sched)->Cancel(*id);
  FinishInfo info = sink->Wait();
  EXPECT_EQ(info.reason, FinishReason::kCancelled);
  EXPECT_LT(info.generated_tokens, 110);
  EXPECT_GT(info.kv_bytes_at_end, 0u);
  EXPECT_EQ((*sched)->Snapshot().kv_pages_used, 0);
}

TEST(SchedulerTimingTest, ExpiredDeadlineFinishesAndFreesPages) {
  auto engine = WideEngine();
  auto sched = Scheduler::Create(engine.get(), {.kv_pool_pages = 256, .kv_page_entries = 16});
  ASSERT_TRUE(sched.ok()) << sched.status();
  auto sink = std::make_shared<CollectingSink>();
  GenerationRequest r;
  r.prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  r.max_new_tokens = 110;
  r.chunk_size = 1;
  r.ignore_eos = true;
  r.deadline = absl::Now() + absl::Milliseconds(50);
  ASSERT_TRUE((*sched)->Submit(r, sink).ok());
  const FinishInfo info = sink->Wait();
  EXPECT_EQ(info.reason, FinishReason::kDeadlineExceeded);
  EXPECT_LT(info.generated_tokens, 110);
  EXPECT_EQ((*sched)->Snapshot().kv_pages_used, 0);
}

TEST_F(SchedulerTest, StopTokenFinishesWithStop) {
  GenerationRequest r = Request(10, 30, 4, 6);
  const std::vector<int32_t> alone = Alone(r);
  auto sched = Make(2048);
  r.stop_token_ids = {alone[4]};
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(sched->Submit(r, sink).ok());
  EXPECT_EQ(sink->Wait().reason, FinishReason::kStop);
  const auto first = std::find(alone.begin(), alone.end(), alone[4]);
  EXPECT_EQ(sink->tokens, std::vector<int32_t>(alone.begin(), first + 1));
}

TEST_F(SchedulerTest, RefusalsHaveClearStatuses) {
  auto sched = Make(20, /*max_queued=*/2);
  auto sink = std::make_shared<CollectingSink>();
  auto code = [&](GenerationRequest r) { return sched->Submit(r, sink).status().code(); };
  using absl::StatusCode;
  GenerationRequest r = Request(5, 5, 4, 0);
  r.prompt.clear();
  EXPECT_EQ(code(r), StatusCode::kInvalidArgument);
  r = Request(5, 5, 4, 0);
  r.prompt[1] = config_.vocab_size;
  EXPECT_EQ(code(r), StatusCode::kInvalidArgument);
  r = Request(5, 0, 4, 0);
  EXPECT_EQ(code(r), StatusCode::kInvalidArgument);
  r = Request(100, 29, 4, 0);
  absl::Status too_long = sched->Submit(r, sink).status();
  EXPECT_EQ(too_long.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("context of 128"), std::string::npos) << too_long;
  r = Request(5, 5, 3, 0);
  absl::Status unserved = sched->Submit(r, sink).status();
  EXPECT_EQ(unserved.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unserved.message().find("1, 2, 4, 8, 16"), std::string::npos) << unserved;
  r = Request(5, 5, 4, 0);
  r.sampling.temperature = -1;
  EXPECT_EQ(code(r), StatusCode::kInvalidArgument);
  r.sampling.temperature = 1;
  r.sampling.top_p = 0;
  EXPECT_EQ(code(r), StatusCode::kInvalidArgument);
  // Needs more pages than the whole pool: can never run.
  r = Request(120, 8, 1, 0);
  EXPECT_EQ(code(r), StatusCode::kResourceExhausted);
  sched->StopAccepting();
  EXPECT_EQ(code(Request(5, 5, 4, 0)), StatusCode::kUnavailable);
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

TEST_F(SchedulerTest, FullQueueIsResourceExhausted) {
  auto sched = Make(64, /*max_queued=*/2, /*max_tokens=*/1);
  // One long request occupies the engine; the queue behind it fills up.
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  int refused = 0;
  for (int i = 0; i < 8; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    absl::Status s = sched->Submit(Request(60, 60, 16, i), sinks.back()).status();
    if (s.code() == absl::StatusCode::kResourceExhausted) ++refused;
  }
  EXPECT_GT(refused, 0);
  sched->Shutdown();
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

}  // namespace
}  // namespace catserve::scheduler
