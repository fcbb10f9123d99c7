// The CPU decode attention's inner kernel alone: AttentionKernels::attend over runs of 16 keys
// (one page of the engine's default 16-entry pages) or 64, keys and values L2-resident, for the
// query heads of one kv head's GQA group called once with the whole group ("grouped", what
// CpuPagedAttention does) or once per head
// ("per_head", what it did before the kernel took groups). Reports seconds per key per query head
// (s_per_key_head, printed as e.g. 9.5n).
//
//   build/benchmarks/attention_kernels_bench [--benchmark_filter=bf16]
//
// Names read BM_Attend/<dtype>/<head_dim>/<group>/<grouped>/<keys per run>.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/kernels/attention_kernels.h"
#include "engine/kv/kv_dtype.h"

namespace catserve::engine {
namespace {

constexpr int kTotalKeys = 256;  // at most 256 KiB of keys and values (fp32, head 128)

void BM_Attend(benchmark::State& state) {
  const KvDtype dtype = static_cast<KvDtype>(state.range(0));
  const int hd = static_cast<int>(state.range(1)), group = static_cast<int>(state.range(2));
  const bool grouped = state.range(3) != 0;
  const int run_keys = static_cast<int>(state.range(4));
  const AttentionKernels& kernels = BestAttentionKernels();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> kf(static_cast<size_t>(kTotalKeys) * hd), vf(kf.size()), q(group * hd);
  for (float& x : kf) x = normal(rng);
  for (float& x : vf) x = normal(rng);
  for (float& x : q) x = normal(rng);
  const size_t bytes = KvDtypeBytes(dtype);
  std::vector<std::byte> k(kf.size() * bytes), v(vf.size() * bytes);
  StoreKvValues(dtype, kf.data(), static_cast<int>(kf.size()), k.data());
  StoreKvValues(dtype, vf.data(), static_cast<int>(vf.size()), v.data());
  std::vector<float> m(group), sum(group), acc(static_cast<size_t>(group) * hd);
  const auto attend = kernels.attend[static_cast<int>(dtype)];
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (auto _ : state) {
    std::fill(m.begin(), m.end(), -INFINITY);
    std::fill(sum.begin(), sum.end(), 0.0f);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int j = 0; j < kTotalKeys; j += run_keys) {
      const std::byte* kr = k.data() + static_cast<size_t>(j) * hd * bytes;
      const std::byte* vr = v.data() + static_cast<size_t>(j) * hd * bytes;
      const KvRun run = {kr, vr, run_keys};
      if (grouped) {
        attend(q.data(), group, &run, 1, hd, scale, m.data(), sum.data(), acc.data());
      } else {
        for (int g = 0; g < group; ++g) {
          attend(q.data() + g * hd, 1, &run, 1, hd, scale, &m[g], &sum[g], acc.data() + g * hd);
        }
      }
    }
    benchmark::DoNotOptimize(acc.data());
    benchmark::ClobberMemory();
  }
  state.counters["s_per_key_head"] = benchmark::Counter(
      static_cast<double>(kTotalKeys) * group,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(std::string(KvDtypeName(dtype)) + (grouped ? " grouped" : " per_head"));
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int dtype = 0; dtype < 3; ++dtype) {
    for (int hd : {64, 128}) {
      for (int group : {1, 2, 4, 8}) {
        for (int grouped : {0, 1}) {
          if (group == 1 && grouped == 1) continue;  // the same call
          for (int run_keys : {16, 64}) b->Args({dtype, hd, group, grouped, run_keys});
        }
      }
    }
  }
}

BENCHMARK(BM_Attend)->Apply(Shapes);

}  // namespace
}  // namespace catserve::engine

BENCHMARK_MAIN();
