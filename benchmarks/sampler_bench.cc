// The host sampler on one row of logits (engine::Sampler::Sample), as the scheduler runs it for
// every sequence of every step: a vocabulary of 32000, logits drawn from N(0, 3^2) (near-flat
// at the top, so top_p keeps many tokens: a hard case) or from a peaked distribution (one token
// well ahead, as a trained model mostly gives). Reports the time of one row; a step of batch B
// spends B times that on the scheduler thread.
//
//   build/benchmarks/sampler_bench [--benchmark_filter=top_p]
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/sampling/sampler.h"

namespace catserve::engine {
namespace {

constexpr int kVocab = 32000, kRows = 16;

std::vector<float> Rows(bool peaked) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> rows(static_cast<size_t>(kRows) * kVocab);
  for (float& x : rows) x = normal(rng);
  if (peaked) {
    for (int r = 0; r < kRows; ++r) rows[static_cast<size_t>(r) * kVocab + r * 97] += 25.0f;
  }
  return rows;
}

void Run(benchmark::State& state, SamplingParams params, bool peaked) {
  const std::vector<float> rows = Rows(peaked);
  const std::vector<int32_t> context(200, 7);
  Sampler sampler;
  uint64_t draw = 0;
  std::vector<float> row(kVocab);
  int r = 0;
  for (auto _ : state) {
    std::copy_n(rows.begin() + static_cast<size_t>(r) * kVocab, kVocab, row.begin());
    benchmark::DoNotOptimize(sampler.Sample(absl::MakeSpan(row), context, params, draw++));
    r = (r + 1) % kRows;
  }
}

void BM_Greedy(benchmark::State& s) { Run(s, {.temperature = 0.0f}, false); }
void BM_Temperature(benchmark::State& s) { Run(s, {.temperature = 0.8f}, false); }
void BM_TemperaturePeaked(benchmark::State& s) { Run(s, {.temperature = 0.8f}, true); }
void BM_TopP(benchmark::State& s) { Run(s, {.temperature = 0.8f, .top_p = 0.95f}, false); }
void BM_TopPPeaked(benchmark::State& s) { Run(s, {.temperature = 0.8f, .top_p = 0.95f}, true); }
void BM_MinP(benchmark::State& s) { Run(s, {.temperature = 0.8f, .min_p = 0.05f}, false); }
void BM_TopKPenalty(benchmark::State& s) {
  Run(s, {.temperature = 0.8f, .top_k = 50, .repetition_penalty = 1.1f}, false);
}
BENCHMARK(BM_Greedy)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Temperature)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TemperaturePeaked)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TopP)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TopPPeaked)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MinP)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TopKPenalty)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace catserve::engine

BENCHMARK_MAIN();
