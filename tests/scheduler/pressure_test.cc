// Memory pressure on a tiny pool: every policy finishes every request with pages exact after
// every step; a degraded sequence decodes what an offline run switching chunk size at the same
// token decodes; a preempted and resumed one what an uninterrupted one does; a request that
// allows no degrade is never degraded; the pressure events are exactly the decisions made.
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/generate.h"
#include "gtest/gtest.h"
#include "scheduler/admission_policy.h"
#include "scheduler/scheduler.h"
#include "tests/common/test_models.h"
#include "tests/scheduler/collecting_sink.h"
#include "tests/support/random_model.h"

namespace catserve::scheduler {
namespace {

constexpr int kPageEntries = 4;

int PagesAt(int tokens, int chunk_size) {
  const engine::KvEntries e = engine::KvEntriesAfter(tokens, chunk_size);
  return (e.compressed + kPageEntries - 1) / kPageEntries +
         (e.local + kPageEntries - 1) / kPageEntries;
}

// Checks the pages after every step and records every pressure event. Optionally holds the
// scheduler thread after step `hold_after` until Release(), so a test can submit more requests at
// a known point of the schedule.
class PressureObserver : public SchedulerObserver {
 public:
  explicit PressureObserver(int hold_after = 0) : hold_after_(hold_after) {}

  void OnStep(const StepReport& report, const SchedulerSnapshot& after) override {
    int sum = 0;
    for (const SequenceKv& s : report.sequences) {
      EXPECT_EQ(s.pages, PagesAt(s.cached_tokens, s.chunk_size))
          << "sequence " << s.id << " after step " << steps_ + 1;
      sum += s.pages;
    }
    EXPECT_EQ(after.kv_pages_used, sum) << "after step " << steps_ + 1;
    EXPECT_LE(after.kv_pages_used, after.kv_pages_total);
    {
      absl::MutexLock lock(&mu_);
      for (const PressureEvent& e : report.pressure) events_.push_back(e);
    }
    if (++steps_ == hold_after_) {
      held_.Notify();
      release_.WaitForNotification();
    }
  }

  void WaitHeld() { held_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  std::vector<PressureEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  const int hold_after_;
  int steps_ = 0;  // scheduler thread only
  absl::Notification held_, release_;
  absl::Mutex mu_;
  std::vector<PressureEvent> events_ ABSL_GUARDED_BY(mu_);
};

class PressureTest : public ::testing::Test {
 protected:
  PressureTest()
      : config_(testing::TinyConfig(true)),
        engine_(config_, engine::RandomModelWeights(config_, 33), {.threads = 2}) {}

  std::unique_ptr<Scheduler> Make(const std::string& policy, int pages,
                                  PressureObserver* observer) {
    absl::StatusOr<std::unique_ptr<AdmissionPolicy>> p = MakeAdmissionPolicy(policy);
    EXPECT_TRUE(p.ok()) << p.status();
    auto s = Scheduler::Create(&engine_,
                               {.max_running = 64,
                                .max_tokens_per_step = 512,
                                .kv_pool_pages = pages,
                                .kv_page_entries = kPageEntries},
                               *std::move(p), observer);
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  GenerationRequest Request(int prompt_len, int max_new, int chunk, int coarsest, uint64_t seed,
                            bool greedy = true) {
    std::mt19937 rng(seed);
    GenerationRequest r;
    for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(3 + rng() % (config_.vocab_size - 3));
    r.max_new_tokens = max_new;
    r.chunk_size = chunk;
    r.coarsest_chunk_size = coarsest;
    r.ignore_eos = true;
    r.sampling.temperature = greedy ? 0.0f : 0.8f;
    r.sampling.seed = seed;
    return r;
  }

  std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int chunk, int max_new,
                             const engine::SamplingParams& sampling) {
    auto out = engine::GenerateAlone(engine_, prompt, chunk, max_new, sampling);
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }
  std::vector<int32_t> Alone(const GenerationRequest& r) {
    return Alone(r.prompt, r.chunk_size, r.max_new_tokens, r.sampling);
  }
  // Offline: `first` tokens at chunk size `from`, then the rest at `to` after prefilling
  // everything known at `to` (what a degrade does). Greedy only: a sampled run would need one
  // sampler across the switch.
  std::vector<int32_t> AloneSwitching(const GenerationRequest& r, int first, int to) {
    std::vector<int32_t> out = Alone(r.prompt, r.chunk_size, first, r.sampling);
    std::vector<int32_t> known = r.prompt;
    known.insert(known.end(), out.begin(), out.end());
    std::vector<int32_t> rest = Alone(known, to, r.max_new_tokens - first, r.sampling);
    out.insert(out.end(), rest.begin(), rest.end());
    return out;
  }

  // Two requests racing for the pool: A is submitted and the scheduler is held after A's first
  // step while B is submitted; then both run to the end.
  struct PairRun {
    std::shared_ptr<CollectingSink> a_sink = std::make_shared<CollectingSink>();
    std::shared_ptr<CollectingSink> b_sink = std::make_shared<CollectingSink>();
    uint64_t a_id = 0;
    uint64_t b_id = 0;
    FinishInfo a;
    FinishInfo b;
  };
  PairRun RunPair(Scheduler& sched, PressureObserver& observer, const GenerationRequest& a,
                  const GenerationRequest& b) {
    PairRun run;
    run.a_id = *sched.Submit(a, run.a_sink);
    observer.WaitHeld();
    run.b_id = *sched.Submit(b, run.b_sink);
    observer.Release();
    run.a = run.a_sink->Wait();
    run.b = run.b_sink->Wait();
    return run;
  }

  engine::ModelConfig config_;
  engine::CpuEngine engine_;
};

// Page counts of this test's shapes (kPageEntries 4), from KvCacheManagerTest: a request of
// 20 prompt tokens and 20 new ones caches at most 39 tokens and peaks at 6 pages at chunk size 2,
// 4 at 4 and 4 at 8.
TEST_F(PressureTest, DegradeSwitchesARunningSequenceAtTheTokenItHadReached) {
  const GenerationRequest a = Request(20, 20, 2, 8, 1);  // may go to 4 or 8
  const GenerationRequest b = Request(20, 20, 2, 0, 2);  // never coarser than 2
  constexpr int kSwitchAfter = 5;                        // A has 5 tokens when B arrives
  const std::vector<int32_t> a_expected = AloneSwitching(a, kSwitchAfter, 8);
  ASSERT_NE(a_expected, Alone(a));  // the switch shows in the output, so the test sees it
  const std::vector<int32_t> b_expected = Alone(b);
  PressureObserver observer(kSwitchAfter);
  // 10 pages: A at 2 is promised 6, leaving 4; B needs 6 at 2 and allows nothing coarser, so A
  // goes to the coarsest size it allows (8: 4 pages), which leaves exactly B's 6.
  auto sched = Make("degrade", 10, &observer);
  const PairRun run = RunPair(*sched, observer, a, b);
  const auto& [a_sink, b_sink, a_id, b_id, a_info, b_info] = run;

  ASSERT_EQ(observer.events().size(), 1u);
  const PressureEvent e = observer.events()[0];
  EXPECT_EQ(e.kind, PressureEvent::Kind::kDegrade);
  EXPECT_EQ(e.id, a_id);
  EXPECT_EQ(e.from_chunk_size, 2);
  EXPECT_EQ(e.to_chunk_size, 8);
  EXPECT_EQ(e.tokens, 20 + kSwitchAfter);
  EXPECT_EQ(a_sink->tokens, a_expected);
  EXPECT_EQ(a_info.chunk_size, 8);
  EXPECT_TRUE(a_info.degraded);
  EXPECT_FALSE(a_info.preempted);
  EXPECT_EQ(a_sink->admitted, 1);
  EXPECT_EQ(b_sink->tokens, b_expected);
  EXPECT_EQ(b_info.chunk_size, 2);
  EXPECT_FALSE(b_info.degraded);
  EXPECT_NE(a_id, b_id);
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

TEST_F(PressureTest, QueueNeverSwitchesAndCoarserAdmitsAtTheFinestSizeThatFits) {
  const GenerationRequest a = Request(20, 20, 2, 0, 3);
  const GenerationRequest b = Request(20, 20, 2, 8, 4);
  const std::vector<int32_t> a_expected = Alone(a);
  for (const std::string policy : {"queue", "coarser"}) {
    SCOPED_TRACE(policy);
    PressureObserver observer(1);
    // 10 pages: A holds a promise of 6; B fits at 4 (4 pages) but not at 2.
    auto sched = Make(policy, 10, &observer);
    const PairRun run = RunPair(*sched, observer, a, b);
    const auto& [a_sink, b_sink, a_id, b_id, a_info, b_info] = run;
    EXPECT_EQ(a_sink->tokens, a_expected);
    if (policy == "queue") {
      EXPECT_TRUE(observer.events().empty());
      EXPECT_EQ(b_info.chunk_size, 2);
      EXPECT_FALSE(b_info.degraded);
      EXPECT_EQ(b_sink->tokens, Alone(b));
    } else {
      ASSERT_NE(Alone(b), [&] {
        GenerationRequest at4 = b;
        at4.chunk_size = 4;
        return Alone(at4);
      }());
      ASSERT_EQ(observer.events().size(), 1u);
      EXPECT_EQ(observer.events()[0].id, b_id);
      EXPECT_EQ(observer.events()[0].from_chunk_size, 2);
      EXPECT_EQ(observer.events()[0].to_chunk_size, 4);
      EXPECT_EQ(b_info.chunk_size, 4);
      EXPECT_TRUE(b_info.degraded);
      GenerationRequest at4 = b;
      at4.chunk_size = 4;
      EXPECT_EQ(b_sink->tokens, Alone(at4));
    }
  }
}

TEST_F(PressureTest, PreemptedAndResumedDecodesAsIfUninterrupted) {
  // Neither allows a coarser size; admission counts only prompt pages, so both start and then
  // outgrow 12 pages (each peaks at 9 at chunk size 2): B, the later, is preempted and resumed.
  const GenerationRequest a = Request(20, 40, 2, 0, 5);
  const GenerationRequest b = Request(20, 40, 2, 0, 6, /*greedy=*/false);
  const std::vector<int32_t> a_expected = Alone(a);
  const std::vector<int32_t> b_expected = Alone(b);
  PressureObserver observer(1);
  auto sched = Make("preempt", 12, &observer);
  const PairRun run = RunPair(*sched, observer, a, b);
  const auto& [a_sink, b_sink, a_id, b_id, a_info, b_info] = run;

  int preemptions = 0;
  for (const PressureEvent& e : observer.events()) {
    EXPECT_EQ(e.kind, PressureEvent::Kind::kPreempt);
    EXPECT_EQ(e.id, b_id);
    ++preemptions;
  }
  EXPECT_GE(preemptions, 1);
  EXPECT_EQ(a_sink->tokens, a_expected);
  EXPECT_FALSE(a_info.preempted);
  EXPECT_EQ(b_sink->tokens, b_expected);  // nothing repeated, nothing lost
  EXPECT_EQ(b_info.generated_tokens, 40);
  EXPECT_TRUE(b_info.preempted);
  EXPECT_FALSE(b_info.degraded);
  EXPECT_EQ(b_sink->admitted, 1);
  EXPECT_NE(a_id, b_id);
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

TEST_F(PressureTest, PreemptPolicyDegradesBeforeItPreempts) {
  // As above, but A allows chunk size 8: when the two outgrow the pool, A is re-compressed at 8
  // (it frees the most) instead of B being preempted.
  const GenerationRequest a = Request(20, 40, 2, 8, 7);
  const GenerationRequest b = Request(20, 40, 2, 0, 8);
  const std::vector<int32_t> b_expected = Alone(b);
  PressureObserver observer(1);
  auto sched = Make("preempt", 12, &observer);
  const PairRun run = RunPair(*sched, observer, a, b);
  const auto& [a_sink, b_sink, a_id, b_id, a_info, b_info] = run;

  ASSERT_EQ(observer.events().size(), 1u);
  const PressureEvent e = observer.events()[0];
  EXPECT_EQ(e.kind, PressureEvent::Kind::kDegrade);
  EXPECT_EQ(e.id, a_id);
  EXPECT_EQ(e.from_chunk_size, 2);
  EXPECT_EQ(e.to_chunk_size, 8);
  // A switched with e.tokens tokens known: e.tokens - 20 generated at 2, the rest at 8.
  ASSERT_GT(e.tokens, 21);
  const std::vector<int32_t> a_expected = AloneSwitching(a, e.tokens - 20, 8);
  ASSERT_NE(a_expected, Alone(a));
  EXPECT_EQ(a_sink->tokens, a_expected);
  EXPECT_TRUE(a_info.degraded);
  EXPECT_FALSE(a_info.preempted);
  EXPECT_EQ(b_sink->tokens, b_expected);
  EXPECT_FALSE(b_info.degraded);
  EXPECT_FALSE(b_info.preempted);
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

// Many requests, some allowing coarser sizes, on a pool that holds a few: under every policy
// each finishes with all its tokens and pages exact after every step; those that allow no
// degrade run at their size throughout and decode what they decode alone; the events match the
// requests' flags one to one.
class PressurePolicyTest : public PressureTest,
                           public ::testing::WithParamInterface<const char*> {};

TEST_P(PressurePolicyTest, EveryRequestFinishesAndPagesAreExact) {
  struct Case {
    GenerationRequest request;
    std::vector<int32_t> alone;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 12; ++i) {
    const int chunk = i % 3 == 0 ? 1 : 2;
    const int coarsest = i % 2 == 0 ? 0 : 16;
    GenerationRequest r = Request(8 + (i * 7) % 24, 12 + (i * 5) % 20, chunk, coarsest, 40 + i,
                                  /*greedy=*/i % 4 != 1);
    r.priority = i % 5 == 0 ? 1 : 0;
    cases.push_back({r, Alone(r)});
  }
  PressureObserver observer(1);
  auto sched = Make(GetParam(), 24, &observer);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  std::map<uint64_t, int> index;
  for (size_t i = 0; i < cases.size(); ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    absl::StatusOr<uint64_t> id = sched->Submit(cases[i].request, sinks.back());
    ASSERT_TRUE(id.ok()) << id.status();
    index[*id] = static_cast<int>(i);
    if (i == 0) observer.WaitHeld();
  }
  observer.Release();
  std::map<int, int> degrades, preemptions;  // by case
  for (size_t i = 0; i < cases.size(); ++i) {
    const GenerationRequest& r = cases[i].request;
    const FinishInfo info = sinks[i]->Wait();
    EXPECT_EQ(info.reason, FinishReason::kLength) << "request " << i;
    EXPECT_EQ(info.generated_tokens, r.max_new_tokens) << "request " << i;
    EXPECT_EQ(sinks[i]->tokens.size(), static_cast<size_t>(r.max_new_tokens));
    EXPECT_EQ(sinks[i]->admitted, 1);
    if (r.coarsest_chunk_size == 0) {
      EXPECT_FALSE(info.degraded) << "request " << i;
      EXPECT_EQ(info.chunk_size, r.chunk_size) << "request " << i;
    }
    if (!info.degraded) {
      EXPECT_EQ(sinks[i]->tokens, cases[i].alone) << "request " << i;
    }
  }
  for (const PressureEvent& e : observer.events()) {
    const int i = index.at(e.id);
    const GenerationRequest& r = cases[i].request;
    if (e.kind == PressureEvent::Kind::kDegrade) {
      ++degrades[i];
      EXPECT_NE(r.coarsest_chunk_size, 0) << "request " << i << " allows no degrade";
      EXPECT_LT(e.from_chunk_size, e.to_chunk_size);
      EXPECT_LE(e.to_chunk_size, r.coarsest_chunk_size);
    } else {
      ++preemptions[i];
    }
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(sinks[i]->info.degraded, degrades.count(i) > 0) << "request " << i;
    EXPECT_EQ(sinks[i]->info.preempted, preemptions.count(i) > 0) << "request " << i;
  }
  const std::string policy = GetParam();
  if (policy == "queue") {
    EXPECT_TRUE(observer.events().empty());
  }
  if (policy != "preempt") {
    EXPECT_TRUE(preemptions.empty());
  }
  if (policy == "degrade" || policy == "coarser") {
    EXPECT_FALSE(degrades.empty());
  }
  if (policy == "preempt") {
    EXPECT_FALSE(preemptions.empty());
  }
  EXPECT_EQ(sched->Snapshot().kv_pages_used, 0);
}

INSTANTIATE_TEST_SUITE_P(Policies, PressurePolicyTest,
                         ::testing::Values("queue", "coarser", "degrade", "preempt"));

TEST(AdmissionPolicyTest, UnknownNameListsThePolicies) {
  absl::StatusOr<std::unique_ptr<AdmissionPolicy>> p = MakeAdmissionPolicy("lru");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("queue, coarser, degrade, preempt"), std::string::npos)
      << p.status();
  for (const std::string& name : AdmissionPolicyNames()) {
    EXPECT_EQ((*MakeAdmissionPolicy(name))->name(), name);
  }
}

TEST_F(PressureTest, CoarsestFinerThanAskedIsRefused) {
  auto sched = Make("degrade", 64, nullptr);
  auto sink = std::make_shared<CollectingSink>();
  GenerationRequest r = Request(5, 5, 8, 4, 0);
  absl::Status s = sched->Submit(r, sink).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      s.message().find("coarsest_chunk_size 4 must be a served chunk size >= the chunk size 8"),
      std::string::npos)
      << s;
  r.coarsest_chunk_size = 3;
  EXPECT_EQ(sched->Submit(r, sink).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace catserve::scheduler
