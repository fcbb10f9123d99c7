// Prefix caching with a real engine (random weights): a request that takes compressed pages from
// the cache produces exactly the tokens it produces alone, at every chunk size, for prefixes of
// every length around page boundaries, while the prefix is still being computed, under eviction
// and under the degrade and preempt policies; and every page ends free or cached.
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
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

class PrefixCacheTest : public ::testing::Test {
 protected:
  PrefixCacheTest()
      : config_(testing::TinyConfig(true)),
        engine_(config_, engine::RandomModelWeights(config_, 33), {.threads = 2}) {}

  std::unique_ptr<Scheduler> Make(int pages, bool prefix_cache, const std::string& policy = "queue",
                                  int max_tokens = 64) {
    auto s = Scheduler::Create(&engine_,
                               {.max_running = 64,
                                .max_tokens_per_step = max_tokens,
                                .kv_pool_pages = pages,
                                .kv_page_entries = kPageEntries,
                                .prefix_cache = prefix_cache},
                               *MakeAdmissionPolicy(policy));
    EXPECT_TRUE(s.ok()) << s.status();
    return *std::move(s);
  }

  std::vector<int32_t> Tokens(int n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(3 + rng() % (config_.vocab_size - 3));
    return t;
  }

  GenerationRequest Request(std::vector<int32_t> prompt, int chunk, int max_new, uint64_t seed) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.chunk_size = chunk;
    r.max_new_tokens = max_new;
    r.ignore_eos = true;
    r.sampling.temperature = seed % 2 == 0 ? 0.0f : 0.9f;
    r.sampling.seed = seed;
    return r;
  }

  std::vector<int32_t> Alone(const GenerationRequest& r) {
    auto out = engine::GenerateAlone(engine_, r.prompt, r.chunk_size, r.max_new_tokens, r.sampling);
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }

  // Every page is free or cached once nothing runs: none held, none lost.
  static void ExpectPagesFreeOrCached(const Scheduler& s) {
    const SchedulerSnapshot snap = s.Snapshot();
    EXPECT_EQ(snap.kv_pages_used, 0);
    EXPECT_EQ(snap.kv_pages_free + snap.kv_pages_cached, snap.kv_pages_total);
  }

  engine::ModelConfig config_;
  engine::CpuEngine engine_;
};

// One request after another: each later one takes the pages its predecessors published. Prefix
// lengths run across the first three page boundaries of every chunk size; the first page of
// chunk size l covers (E - 1) l tokens, each later one E l more.
TEST_F(PrefixCacheTest, CachedPrefixesGiveTheTokensOfASoloRunAtEveryChunkSize) {
  auto sched = Make(/*pages=*/512, /*prefix_cache=*/true);
  const std::vector<int32_t> shared = Tokens(100, 7);
  int hits = 0;
  uint64_t seed = 0;
  for (int l : {1, 2, 4, 8}) {
    std::vector<int> lengths;
    for (int k = 1; k <= 3; ++k) {
      const int boundary = (k * kPageEntries - 1) * l;
      for (int d : {-1, 0, 1, 2}) {
        if (boundary + d >= 1 && boundary + d + 8 < 100) lengths.push_back(boundary + d);
      }
    }
    for (int length : lengths) {
      std::vector<int32_t> prompt(shared.begin(), shared.begin() + length);
      const std::vector<int32_t> suffix = Tokens(1 + seed % 5, 1000 + seed);
      prompt.insert(prompt.end(), suffix.begin(), suffix.end());
      GenerationRequest r = Request(prompt, l, 6, seed++);
      auto sink = std::make_shared<CollectingSink>();
      ASSERT_TRUE(sched->Submit(r, sink).ok());
      const FinishInfo info = sink->Wait();
      EXPECT_EQ(sink->tokens, Alone(r)) << "l=" << l << " prefix=" << length;
      EXPECT_EQ(info.cached_prompt_tokens % l, 0);
      EXPECT_LT(info.cached_prompt_tokens, static_cast<int>(prompt.size()));
      if (info.cached_prompt_tokens > 0) ++hits;
    }
  }
  EXPECT_GT(hits, 20);
  const SchedulerSnapshot snap = sched->Snapshot();
  EXPECT_GT(snap.prefix_hit_tokens, 0);
  EXPECT_GE(snap.prefix_query_tokens, snap.prefix_hit_tokens);
  ExpectPagesFreeOrCached(*sched);
}

// A sharer whose remaining tokens complete no chunk: the S of its chunk is computed by its own
// step (the local page it gets is stale, here last written by an unrelated request). Its
// log-probabilities equal, bit for bit, those of the same requests with the cache off.
TEST_F(PrefixCacheTest, ASharerComputesItsOwnSeparatorWhenNoChunkCompletes) {
  std::vector<float> logprobs[2];
  std::vector<int32_t> tokens[2];
  for (bool on : {false, true}) {
    auto sched = Make(/*pages=*/256, on);
    auto run = [&](GenerationRequest r) {
      r.want_logprobs = true;
      auto sink = std::make_shared<CollectingSink>();
      EXPECT_TRUE(sched->Submit(r, sink).ok());
      const FinishInfo info = sink->Wait();
      return std::make_pair(sink, info);
    };
    uint64_t seed = 0;
    for (int l : {2, 4, 8}) {
      const int boundary = (kPageEntries - 1) * l;
      const std::vector<int32_t> shared = Tokens(boundary, 50 + l);
      for (int tail = 1; tail < l; ++tail) {
        std::vector<int32_t> publisher = shared;
        for (int32_t t : Tokens(l + 1, 90 + tail)) publisher.push_back(t);
        run(Request(publisher, l, 3, seed++));
        run(Request(Tokens(boundary + tail, 700 + tail), l, 3, seed++));  // dirties the pages
        std::vector<int32_t> prompt = shared;
        for (int32_t t : Tokens(tail, 300 + tail)) prompt.push_back(t);
        auto [sink, info] = run(Request(prompt, l, 5, seed++));
        EXPECT_EQ(info.cached_prompt_tokens, on ? boundary : 0) << "l=" << l << " tail=" << tail;
        tokens[on].insert(tokens[on].end(), sink->tokens.begin(), sink->tokens.end());
        logprobs[on].insert(logprobs[on].end(), sink->logprobs.begin(), sink->logprobs.end());
      }
    }
    ExpectPagesFreeOrCached(*sched);
  }
  EXPECT_EQ(tokens[1], tokens[0]);
  ASSERT_EQ(logprobs[1].size(), logprobs[0].size());
  for (size_t i = 0; i < logprobs[0].size(); ++i) {
    EXPECT_EQ(logprobs[1][i], logprobs[0][i]) << "token " << i;  // bit for bit
  }
}

// The same load with the cache on and off: the same tokens, request by request.
TEST_F(PrefixCacheTest, OnAndOffGiveTheSameTokensForConcurrentSharers) {
  const std::vector<int32_t> shared = Tokens(80, 9);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 24; ++i) {
    std::vector<int32_t> prompt(shared.begin(), shared.begin() + 20 + (i * 13) % 60);
    const std::vector<int32_t> suffix = Tokens(1 + i % 7, 500 + i);
    prompt.insert(prompt.end(), suffix.begin(), suffix.end());
    requests.push_back(Request(prompt, 1 << (i % 4), 8 + i % 5, i));
    requests.back().want_logprobs = true;
  }
  std::vector<std::vector<int32_t>> outputs[2];
  std::vector<std::vector<float>> logprobs[2];
  int64_t hit_tokens = 0;
  for (bool on : {false, true}) {
    // A small step budget: prompts are prefilled in pieces over several steps, so later
    // submissions find pages published while their sharers are still being computed.
    auto sched = Make(/*pages=*/1024, on, "queue", /*max_tokens=*/24);
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (size_t i = 0; i < requests.size(); ++i) {
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(sched->Submit(requests[i], sinks.back()).ok());
      if (i % 6 == 5) absl::SleepFor(absl::Milliseconds(5));
    }
    for (auto& sink : sinks) {
      EXPECT_EQ(sink->Wait().reason, FinishReason::kLength);
      outputs[on].push_back(sink->tokens);
      logprobs[on].push_back(sink->logprobs);
    }
    if (on) hit_tokens = sched->Snapshot().prefix_hit_tokens;
    ExpectPagesFreeOrCached(*sched);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(outputs[1][i], outputs[0][i]) << "request " << i;
    EXPECT_EQ(logprobs[1][i], logprobs[0][i]) << "request " << i;  // bit for bit
    EXPECT_EQ(outputs[1][i], Alone(requests[i])) << "request " << i;
  }
  EXPECT_GT(hit_tokens, 0);
}

// A pool far too small to keep every prefix: cached pages are evicted, least recently used
// first, and never cost a request anything it would not have paid without the cache.
TEST_F(PrefixCacheTest, EvictionUnderPressureRefusesNothingAndLosesNoPage) {
  auto sched = Make(/*pages=*/48, /*prefix_cache=*/true);
  for (int i = 0; i < 40; ++i) {
    // Pairs of requests share a prefix; every pair's prefix is new.
    std::vector<int32_t> prompt = Tokens(60, 2000 + i / 2);
    prompt.push_back(3 + i % 50);
    GenerationRequest r = Request(prompt, 2, 10, i);
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(sched->Submit(r, sink).ok()) << i;
    const FinishInfo info = sink->Wait();
    EXPECT_EQ(info.reason, FinishReason::kLength) << i;
    EXPECT_EQ(sink->tokens, Alone(r)) << i;
    if (i % 2 == 1) {
      EXPECT_GT(info.cached_prompt_tokens, 0) << i;
    }
    ExpectPagesFreeOrCached(*sched);
  }
  // The cache filled the pool and gave pages back as new prefixes came.
  EXPECT_GT(sched->Snapshot().kv_pages_cached, 0);
}

// Memory pressure with shared pages: a degraded or preempted sharer releases its references
// and recomputes; the others are untouched. Preemption recomputes exactly, so every stream still
// equals its solo run; under degrade every stream finishes whole.
TEST_F(PrefixCacheTest, DegradeAndPreemptOfSharersLeaveOthersWhole) {
  const std::vector<int32_t> shared = Tokens(60, 77);
  for (const std::string policy : {"preempt", "degrade"}) {
    auto sched = Make(/*pages=*/40, /*prefix_cache=*/true, policy, /*max_tokens=*/32);
    std::vector<GenerationRequest> requests;
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (int i = 0; i < 12; ++i) {
      std::vector<int32_t> prompt(shared.begin(), shared.begin() + 40 + i);
      GenerationRequest r = Request(prompt, 2, 40, i);
      r.coarsest_chunk_size = 16;
      requests.push_back(r);
      sinks.push_back(std::make_shared<CollectingSink>());
      ASSERT_TRUE(sched->Submit(r, sinks.back()).ok());
    }
    bool pressure = false;
    for (int i = 0; i < 12; ++i) {
      const FinishInfo info = sinks[i]->Wait();
      EXPECT_EQ(info.reason, FinishReason::kLength) << policy << " " << i;
      EXPECT_EQ(sinks[i]->tokens.size(), 40u) << policy << " " << i;
      pressure = pressure || info.preempted || info.degraded;
      if (policy == "preempt" && !info.degraded) {
        EXPECT_EQ(sinks[i]->tokens, Alone(requests[i])) << policy << " " << i;
      }
    }
    EXPECT_TRUE(pressure) << policy << ": the pool was meant to run short";
    ExpectPagesFreeOrCached(*sched);
  }
}

TEST_F(PrefixCacheTest, OffCachesNothing) {
  auto sched = Make(/*pages=*/256, /*prefix_cache=*/false);
  const std::vector<int32_t> prompt = Tokens(50, 3);
  for (int i = 0; i < 2; ++i) {
    auto sink = std::make_shared<CollectingSink>();
    ASSERT_TRUE(sched->Submit(Request(prompt, 2, 4, 0), sink).ok());
    EXPECT_EQ(sink->Wait().cached_prompt_tokens, 0);
  }
  const SchedulerSnapshot snap = sched->Snapshot();
  EXPECT_EQ(snap.kv_pages_cached, 0);
  EXPECT_EQ(snap.prefix_hit_tokens, 0);
  EXPECT_EQ(snap.kv_pages_free, snap.kv_pages_total);
}

}  // namespace
}  // namespace catserve::scheduler
