// Times the CPU engine's decode step (median over steps) on a random model of realistic shape and
// prints a markdown table: tokens/s by KV dtype, context, batch and chunk size, each chunk size's
// ratio to chunk size 1, KV bytes per sequence, the step's time over the time its GEMMs alone take
// with the same BLAS, the floor of that ratio (GEMMs plus the KV bytes read at the machine's read
// bandwidth), and the decode attention's share of the step and the KV bytes it read per second
// against the machine's read bandwidth measured right after the cell, and against a plain read of
// the cell's own pages in the attention's order ("pages GB/s": what any kernel over that page
// layout could read at, at that moment). Before the table it measures
// the machine's memory bandwidth (a 512 MiB memcpy, and all compute threads reading 512 MiB);
// after it, each cell's floor again at the fastest read the whole run measured.
//
//   build/benchmarks/engine_step_bench [--contexts=512,2048,4096] [--batches=1,8,32]
//       [--chunks=1,2,4,8,16] [--kv_dtypes=fp32] [--steps=16] [--page_entries=16]
//       [--kv_cap_gb=8] [--threads=0] [--model_dir=DIR] [--kv_heads=N]
//
// --model_dir takes the model's shape from DIR/config.json (weights stay random) instead of the
// engine issue's shape. --kv_heads makes the decoder's attention grouped-query with N kv heads
// (N divides the query heads; the engine issue's shape has 16).
//
// The KV cache of each sequence is laid out as for a real context of that length (pages
// reserved, entries present, every page written with random values) without running the
// prefill: a step's cost depends on the number of entries it reads, not on their values. Sequences
// are staggered so chunk boundaries (the [fx, S] pair and the compressor call) fall on different
// steps, as they do in serving.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "benchmarks/bench_common.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/kernels/attention_kernels.h"
#include "engine/kernels/cpu_ops.h"
#include "engine/kv/kv_dtype.h"
#include "engine/kv/page_layout.h"
#include "tests/support/random_model.h"

namespace catserve::engine {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<int> contexts = {512, 2048, 4096};
  std::vector<int> batches = {1, 8, 32};
  std::vector<int> chunks = {1, 2, 4, 8, 16};
  std::vector<KvDtype> kv_dtypes = {KvDtype::kFp32};
  int steps = 16;
  int page_entries = 16;
  double kv_cap_gb = 8;
  int threads = 0;
  std::string model_dir;  // empty: the engine issue's shape (BenchConfig)
  int kv_heads = 0;       // 0: the model's own
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* name) { return bench::FlagValue(argv[i], name); };
    if (const char* v = value("contexts"))
      o.contexts = bench::ParseIntList(v);
    else if (const char* v = value("batches"))
      o.batches = bench::ParseIntList(v);
    else if (const char* v = value("chunks"))
      o.chunks = bench::ParseIntList(v);
    else if (const char* v = value("kv_dtypes")) {
      o.kv_dtypes.clear();
      for (absl::string_view name : absl::StrSplit(v, ',')) {
        absl::StatusOr<KvDtype> d = ParseKvDtype(name);
        if (!d.ok()) {
          std::fprintf(stderr, "%s\n", std::string(d.status().message()).c_str());
          std::exit(2);
        }
        o.kv_dtypes.push_back(*d);
      }
    } else if (const char* v = value("steps"))
      o.steps = std::atoi(v);
    else if (const char* v = value("page_entries"))
      o.page_entries = std::atoi(v);
    else if (const char* v = value("kv_cap_gb"))
      o.kv_cap_gb = std::atof(v);
    else if (const char* v = value("threads"))
      o.threads = std::atoi(v);
    else if (const char* v = value("model_dir"))
      o.model_dir = v;
    else if (const char* v = value("kv_heads"))
      o.kv_heads = std::atoi(v);
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      std::exit(2);
    }
  }
  return o;
}

// The shape the engine issue names: decoder 1024 wide, 12 layers; compressor 512 wide, 3 layers.
ModelConfig BenchConfig(int max_context) {
  return bench::BenchModelConfig(1024, 12, 16, 512, 3, 8, max_context);
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs the GEMMs of one recorded step alone, each on its own weight buffer of the same size and
// split over threads the way the engine splits them. Buffers are made before timing starts.
class GemmReplayer {
 public:
  explicit GemmReplayer(int threads) : pool_(threads) {}

  double Seconds(const std::vector<GemmShape>& step) {
    std::map<std::pair<int, int>, size_t> seen;
    for (const GemmShape& g : step) {
      auto& list = weights_[{g.in, g.out}];
      if (list.size() <= seen[{g.in, g.out}]++) {
        list.emplace_back(static_cast<size_t>(g.in) * g.out, 0.01f);
      }
      x_.resize(std::max(x_.size(), static_cast<size_t>(g.rows) * g.in), 0.5f);
      y_.resize(std::max(y_.size(), static_cast<size_t>(g.rows) * g.out));
    }
    seen.clear();
    const auto start = Clock::now();
    for (const GemmShape& g : step) {
      const std::vector<float>& w = weights_[{g.in, g.out}][seen[{g.in, g.out}]++];
      ParallelLinear(pool_, x_.data(), g.rows, g.in, w.data(), g.out, y_.data());
    }
    return engine::Seconds(Clock::now() - start);
  }

 private:
  ThreadPool pool_;
  std::map<std::pair<int, int>, std::vector<std::vector<float>>> weights_;
  std::vector<float> x_, y_;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The machine's memory bandwidth in GB/s, on 512 MiB buffers (16 times this machine's L3):
// one thread's memcpy (bytes copied per second) and all compute threads summing the source
// (bytes read per second, the roofline of the read-only attention). Measured at the start and
// again after every cell, so a cell's attention is compared with what the (shared, noisy) machine
// gave at that time.
class BandwidthProbe {
 public:
  BandwidthProbe() : src_(kFloats, 1.0f), dst_(kFloats, 0.0f) {}

  double MemcpyGbs() {
    const auto start = Clock::now();
    std::memcpy(dst_.data(), src_.data(), kFloats * sizeof(float));
    return kFloats * sizeof(float) / Seconds(Clock::now() - start) / 1e9;
  }

  double ReadGbs(ThreadPool& pool) {
    const int parts = pool.size();
    std::vector<float> sums(parts);
    const auto start = Clock::now();
    pool.ParallelFor(parts, [&](int begin, int end) {
      for (int part = begin; part < end; ++part) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const size_t i0 = kFloats / parts * part, i1 = kFloats / parts * (part + 1);
        for (size_t i = i0; i + 8 <= i1; i += 8) {
          for (int k = 0; k < 8; ++k) acc[k] += src_[i + k];
        }
        sums[part] = acc[0] + acc[7];
      }
    });
    const double gbs = kFloats * sizeof(float) / Seconds(Clock::now() - start) / 1e9;
    dst_[0] = sums[0];  // keeps the reads
    return gbs;
  }

 private:
  static constexpr size_t kFloats = size_t{1} << 27;
  std::vector<float> src_, dst_;
};

// The bandwidth the attention's own access pattern gets: all compute threads summing, as 32-bit
// integers (no floating point to slow it), the K and V runs of every page every sequence holds,
// layer by layer, one task per (sequence, kv head) as CpuPagedAttention splits the work: bytes
// read per second. Unlike ReadGbs's contiguous buffer, this reads page-sized runs scattered over
// the arena, which is what the attention must read.
double PageReadGbs(ThreadPool& pool, KvPool& kv, const std::vector<SequenceState>& seqs) {
  const KvGeometry& g = kv.geometry();
  const size_t run = static_cast<size_t>(g.page_entries) * g.head_dim * g.bytes_per_value();
  const int tasks = static_cast<int>(seqs.size()) * g.kv_heads;
  std::vector<uint32_t> sums(tasks);
  size_t bytes = 0;
  for (const SequenceState& s : seqs) bytes += (s.pages.compressed.size() + s.pages.local.size());
  bytes *= static_cast<size_t>(g.layers) * g.kv_heads * 2 * run;
  const auto start = Clock::now();
  for (int layer = 0; layer < g.layers; ++layer) {
    pool.ParallelFor(tasks, [&](int begin, int end) {
      for (int task = begin; task < end; ++task) {
        const SequenceState& s = seqs[task / g.kv_heads];
        const int kvh = task % g.kv_heads;
        uint32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (const std::vector<int32_t>* region : {&s.pages.compressed, &s.pages.local}) {
          for (int32_t page : *region) {
            for (int which = 0; which < 2; ++which) {
              const std::byte* at =
                  kv.page_data(page) +
                  PageValueIndex(layer, which, kvh, 0, g.kv_heads, g.page_entries, g.head_dim) *
                      g.bytes_per_value();
              const uint32_t* words = reinterpret_cast<const uint32_t*>(at);
              for (size_t i = 0; i + 8 <= run / 4; i += 8) {
                for (int k = 0; k < 8; ++k) acc[k] += words[i + k];
              }
            }
          }
        }
        sums[task] += acc[0] ^ acc[7];
      }
    });
  }
  const double gbs = bytes / Seconds(Clock::now() - start) / 1e9;
  volatile uint32_t keep = sums[0];  // keeps the reads
  (void)keep;
  return gbs;
}

struct Result {
  double tokens_per_s = 0;
  double step_ms = 0;
  double gemm_ratio = 0;
  double attention_share = 0;  // attention seconds / step seconds
  double attention_gbs = 0;    // KV bytes the attention read per second
  double read_gbs = 0;         // BandwidthProbe::ReadGbs right after the cell
  double pages_gbs = 0;        // PageReadGbs over the cell's pages, right after it
  // The least step / GEMMs any attention could reach here: (GEMMs + the KV bytes the attention
  // must read, at read_gbs) / GEMMs, medians over the steps. Everything else a step does is left
  // out, so it is a floor.
  double floor_ratio = 0;
  double gemm_seconds = 0;  // the GEMMs alone, median over the steps
  double kv_bytes = 0;      // KV bytes the attention read per step, median over the steps
  size_t kv_bytes_per_seq = 0;
  bool skipped = false;
};

// (GEMMs + the KV bytes read at read_gbs) / GEMMs: see Result::floor_ratio.
double FloorRatio(const Result& r, double read_gbs) {
  return (r.gemm_seconds + r.kv_bytes / (read_gbs * 1e9)) / r.gemm_seconds;
}

Result Run(Engine& engine, int context, int batch, int l, const Options& o, BandwidthProbe& probe) {
  Result r;
  const KvGeometry geometry = engine.kv_geometry(o.page_entries);
  const KvEntries e = KvEntriesAfter(context, l);
  r.kv_bytes_per_seq = (e.compressed + e.local) * geometry.entry_bytes();
  const int final_len = context + o.steps + 2;
  const int pages_per_seq = PeakPages(final_len, l, geometry.page_entries);
  const double pool_bytes = static_cast<double>(pages_per_seq) * batch * geometry.page_bytes();
  if (pool_bytes > o.kv_cap_gb * (1 << 30)) {
    r.skipped = true;
    return r;
  }
  auto pool = KvPool::Create(geometry, pages_per_seq * batch);
  if (!pool.ok()) {
    r.skipped = true;
    return r;
  }
  std::mt19937 rng(context * 131 + batch * 7 + l);
  // Every page the sequences hold gets values, as in serving: a page never written reads the
  // kernel's shared zero page, which the caches serve instead of memory.
  std::vector<std::byte> filled(geometry.page_bytes());
  {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(geometry.values_per_page());
    for (float& v : values) v = normal(rng);
    StoreKvValues(geometry.dtype, values.data(), static_cast<int>(values.size()), filled.data());
  }
  std::vector<SequenceState> seqs(batch);
  for (int i = 0; i < batch; ++i) {
    SequenceState& s = seqs[i];
    s.chunk_size = l;
    for (int t = 0; t < final_len; ++t)
      s.tokens.push_back(3 + rng() % (engine.config().vocab_size - 3));
    s.cached = context - (i % 16);
    ReservePages(*pool, s, s.cached);
    for (const std::vector<int32_t>* region : {&s.pages.compressed, &s.pages.local}) {
      for (int32_t page : *region) {
        std::memcpy(pool->page_data(page), filled.data(), filled.size());
      }
    }
  }
  std::vector<float> logits(static_cast<size_t>(batch) * engine.config().vocab_size);
  std::vector<StepItem> items(batch);
  GemmReplayer replay(engine.threads());
  std::vector<double> step_seconds, ratios, shares, rates, gemm_seconds, kv_bytes;
  StepStats stats;
  for (int step = 0; step < o.steps + 2; ++step) {
    for (int i = 0; i < batch; ++i) {
      ReservePages(*pool, seqs[i], seqs[i].cached + 1);
      items[i] = {&seqs[i], 1, true};
    }
    const auto start = Clock::now();
    const absl::Status s = engine.StepLogits(items, *pool, absl::MakeSpan(logits), &stats);
    const auto took = Clock::now() - start;
    if (!s.ok()) {
      std::fprintf(stderr, "step failed: %s\n", std::string(s.message()).c_str());
      std::exit(1);
    }
    for (SequenceState& q : seqs) TrimPages(*pool, q);
    if (step < 2) continue;  // warm-up
    // The step's GEMMs alone, right after it, so both see the same machine; medians over the
    // steps keep one noisy step (this machine is shared) from moving the figures.
    step_seconds.push_back(Seconds(took));
    gemm_seconds.push_back(replay.Seconds(stats.gemms));
    ratios.push_back(Seconds(took) / gemm_seconds.back());
    kv_bytes.push_back(stats.attention_kv_bytes);
    shares.push_back(stats.attention_seconds / Seconds(took));
    rates.push_back(stats.attention_kv_bytes / stats.attention_seconds / 1e9);
  }
  const double seconds = Median(step_seconds);
  r.tokens_per_s = batch / seconds;
  r.step_ms = seconds * 1e3;
  r.gemm_ratio = Median(ratios);
  r.attention_share = Median(shares);
  r.attention_gbs = Median(rates);
  ThreadPool threads(engine.threads());
  r.read_gbs = probe.ReadGbs(threads);
  r.pages_gbs = PageReadGbs(threads, *pool, seqs);
  r.gemm_seconds = Median(gemm_seconds);
  r.kv_bytes = Median(kv_bytes);
  r.floor_ratio = FloorRatio(r, r.read_gbs);
  for (SequenceState& q : seqs) pool->ReleaseAll(q.pages);
  return r;
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  int max_context = 0;
  for (int c : o.contexts) max_context = std::max(max_context, c);
  ModelConfig config = BenchConfig(max_context + o.steps + 16);
  if (!o.model_dir.empty()) {
    absl::StatusOr<ModelConfig> loaded = LoadModelConfig(o.model_dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
      std::exit(2);
    }
    config = *loaded;
    config.max_position_embeddings =
        std::max(config.max_position_embeddings, max_context + o.steps + 16);
  }
  if (o.kv_heads != 0) {
    if (o.kv_heads < 0 || config.num_heads % o.kv_heads != 0) {
      std::fprintf(stderr, "--kv_heads=%d must divide the model's %d query heads\n", o.kv_heads,
                   config.num_heads);
      std::exit(2);
    }
    config.num_kv_heads = o.kv_heads;
  }
  std::fprintf(stderr,
               "building a random model (D=%d, L=%d, heads %d, kv heads %d, Dc=%d, Lc=%d, "
               "V=%d)...\n",
               config.hidden_size, config.num_hidden_layers, config.num_heads, config.num_kv_heads,
               config.compressor_hidden_size, config.compressor_num_layers, config.vocab_size);
  const ModelWeights weights = RandomModelWeights(config, 1);
  ThreadPool threads(o.threads);
  BandwidthProbe probe;
  double memcpy_gbs = 0, read_gbs = 0;
  for (int rep = 0; rep < 3; ++rep) {
    memcpy_gbs = std::max(memcpy_gbs, probe.MemcpyGbs());
    read_gbs = std::max(read_gbs, probe.ReadGbs(threads));
  }
  std::printf(
      "CPU engine decode step, %d compute threads, %d timed steps per cell, attention kernels: "
      "%s, %d query heads over %d kv heads of %d\nmemory bandwidth at the start (best of 3, 512 "
      "MiB): memcpy %.1f GB/s copied (one thread), read %.1f GB/s (%d threads)\n\n",
      threads.size(), o.steps, BestAttentionKernels().name, config.num_heads, config.num_kv_heads,
      config.head_dim(), memcpy_gbs, read_gbs, threads.size());
  std::printf(
      "| KV | context | batch | chunk | tokens/s | step ms | ratio to chunk 1 | KV bytes/seq | "
      "step / GEMMs | floor of step / GEMMs | attention / step | attention GB/s | read GB/s "
      "after | read / attention GB/s | pages GB/s | pages / attention GB/s |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  // Every measured cell, for the floors at the run's fastest read after the table.
  struct Cell {
    KvDtype dtype;
    int context, batch, chunk;
    Result result;
  };
  std::vector<Cell> cells;
  double best_read_gbs = read_gbs;
  for (KvDtype dtype : o.kv_dtypes) {
    CpuEngine engine(config, weights, {.threads = o.threads, .kv_dtype = dtype});
    for (int context : o.contexts) {
      for (int batch : o.batches) {
        double base = 0;
        for (int l : o.chunks) {
          const Result r = Run(engine, context, batch, l, o, probe);
          if (r.skipped) {
            std::printf(
                "| %s | %d | %d | %d | skipped: KV pool over %.0f GiB | | | %zu | | | | | | | | "
                "|\n",
                KvDtypeName(dtype), context, batch, l, o.kv_cap_gb, r.kv_bytes_per_seq);
            std::fflush(stdout);
            continue;
          }
          cells.push_back({dtype, context, batch, l, r});
          best_read_gbs = std::max(best_read_gbs, r.read_gbs);
          if (l == 1) base = r.tokens_per_s;
          char ratio[32] = "n/a";
          if (base > 0) std::snprintf(ratio, sizeof ratio, "%.2fx", r.tokens_per_s / base);
          std::printf(
              "| %s | %d | %d | %d | %.1f | %.2f | %s | %zu | %.2f | %.2f | %.2f | %.1f | %.1f | "
              "%.2f | %.1f | %.2f |\n",
              KvDtypeName(dtype), context, batch, l, r.tokens_per_s, r.step_ms, ratio,
              r.kv_bytes_per_seq, r.gemm_ratio, r.floor_ratio, r.attention_share, r.attention_gbs,
              r.read_gbs, r.read_gbs / r.attention_gbs, r.pages_gbs, r.pages_gbs / r.attention_gbs);
          std::fflush(stdout);
        }
      }
    }
  }
  // The per-cell floor takes the read probe of that minute, which this shared machine sometimes
  // drops to a third. At the fastest read the whole run measured, the floor is the least
  // step / GEMMs any attention could reach on this machine.
  std::printf(
      "\nfloor of step / GEMMs at the fastest read this run measured (%.1f GB/s, %d threads):\n\n"
      "| KV | context | batch | chunk | step / GEMMs | floor at the fastest read |\n"
      "|---|---:|---:|---:|---:|---:|\n",
      best_read_gbs, threads.size());
  for (const Cell& c : cells) {
    std::printf("| %s | %d | %d | %d | %.2f | %.2f |\n", KvDtypeName(c.dtype), c.context, c.batch,
                c.chunk, c.result.gemm_ratio, FloorRatio(c.result, best_read_gbs));
  }
  return 0;
}

}  // namespace
}  // namespace catserve::engine

int main(int argc, char** argv) { return catserve::engine::Main(argc, argv); }
