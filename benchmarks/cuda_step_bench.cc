// Times the CUDA engine's step on a random model of the paper's shape (D=1536, 12 layers, 24
// heads; compressor 768 wide, 3 layers, 12 heads; vocab 32000; max chunk 16) and prints markdown
// tables: decode tokens/s by context, batch and chunk size with the step time against its
// roofline floor, prefill time of one 4K prompt per chunk size, and the largest batch a fixed KV
// pool holds per chunk size.
//
//   build/benchmarks/cuda_step_bench [--contexts=2048,4096] [--batches=1,2,4,...,256]
//       [--chunks=1,2,4,8,16] [--pool_gib=16] [--cycles=2] [--prefill=4096]
//       [--authors=BS:CTX:CHUNK,...] [--authors_only] [--attention=auto|split_kv]
//       [--graphs=on|off]
//
// --attention picks the decoder attention's kernels (EngineOptions::cuda_attention): auto (the
// default: FlashInfer's decode and the tensor-core prefill where they take the heads) or split_kv
// (catserve's split-KV kernel for every item), so that one call can time both; --graphs=off runs
// decode steps launch by launch instead of replaying them from CUDA graphs
// (EngineOptions::cuda_graphs).
//
// --authors runs the workload of the authors' generator (benchmark.py of rajesh-lab/
// cat-transformer, run beside it by tools/gpu/official_compare.sh) through Engine::Step: BS
// sequences each start from a prompt of CHUNK random tokens and generate greedily until they hold
// CTX tokens, every sequence in every step; tokens/s = BS * CHUNK * (CTX / CHUNK - 1) / seconds,
// the authors' formula, with the whole run timed (the prefill step, every decode step, host
// planning, page bookkeeping and the token copies). One untimed run first. --authors_only skips
// the other tables.
//
// Ceilings are measured here, not taken from a datasheet: memory bandwidth from a large
// device-to-device cudaMemcpy (bytes read + bytes written over its time) and the matrix rate from
// a large bf16 cuBLAS GEMM on random data. A decode step's floor is max(bytes it must read /
// bandwidth, FLOPs / matrix rate), where the bytes are the decoder's weights and lm_head (plus
// the compressor's and proj_fx on the one boundary step per chunk) and every visible compressed
// and local KV entry of every sequence.
//
// Decode cells lay each sequence's KV cache out as for a real context of that length (pages
// reserved, the arena filled with random bf16) without running the prefill: a step's cost depends
// on how many entries it reads, not on their values. Sequences are staggered so that chunk
// boundaries fall on different steps, and each cell times whole chunk cycles (every chunk size's
// boundary step counted in its share). Step times are per step over whole timed runs, host
// planning and the logits copy included (Step synchronises the engine's stream before it
// returns), which is what the scheduler sees.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/cuda_bench_common.h"
#include "engine/cuda/cuda_engine.h"
#include "tests/support/random_model.h"

namespace catserve::engine {
namespace {

struct Options {
  std::vector<int> contexts = {2048, 4096};
  std::vector<int> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  std::vector<int> chunks = {1, 2, 4, 8, 16};
  double pool_gib = 16;
  int cycles = 2;  // timed chunk cycles per cell (at least 16 steps)
  int prefill = 4096;
  struct Authors {
    int batch, context, chunk;
  };
  std::vector<Authors> authors;
  bool authors_only = false;
  CudaAttention attention = CudaAttention::kAuto;
  bool graphs = true;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* name) { return bench::FlagValue(argv[i], name); };
    if (const char* v = value("contexts")) {
      o.contexts = bench::ParseIntList(v);
    } else if (const char* v = value("batches")) {
      o.batches = bench::ParseIntList(v);
    } else if (const char* v = value("chunks")) {
      o.chunks = bench::ParseIntList(v);
    } else if (const char* v = value("pool_gib")) {
      o.pool_gib = std::atof(v);
    } else if (const char* v = value("cycles")) {
      o.cycles = std::max(1, std::atoi(v));
    } else if (const char* v = value("prefill")) {
      o.prefill = std::atoi(v);
    } else if (const char* v = value("authors")) {
      for (const char* cell = v; *cell != '\0';) {
        Options::Authors a{};
        int used = 0;
        if (std::sscanf(cell, "%d:%d:%d%n", &a.batch, &a.context, &a.chunk, &used) != 3 ||
            a.batch < 1 || a.chunk < 1 || a.context < 2 * a.chunk) {
          std::fprintf(stderr, "--authors takes BS:CTX:CHUNK,... with CTX >= 2 * CHUNK: %s\n", v);
          std::exit(2);
        }
        o.authors.push_back(a);
        cell += used;
        if (*cell == ',') ++cell;
      }
    } else if (std::strcmp(argv[i], "--authors_only") == 0) {
      o.authors_only = true;
    } else if (const char* v = value("attention")) {
      if (std::strcmp(v, "auto") != 0 && std::strcmp(v, "split_kv") != 0) {
        std::fprintf(stderr, "--attention takes auto or split_kv, not %s\n", v);
        std::exit(2);
      }
      o.attention = std::strcmp(v, "auto") == 0 ? CudaAttention::kAuto : CudaAttention::kSplitKv;
    } else if (const char* v = value("graphs")) {
      if (std::strcmp(v, "on") != 0 && std::strcmp(v, "off") != 0) {
        std::fprintf(stderr, "--graphs takes on or off, not %s\n", v);
        std::exit(2);
      }
      o.graphs = std::strcmp(v, "on") == 0;
    } else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of %s)\n", argv[i],
                   __FILE__);
      std::exit(2);
    }
  }
  return o;
}

ModelConfig PaperConfig(int max_positions) {
  return bench::BenchModelConfig(1536, 12, 24, 768, 3, 12, max_positions);
}

// Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written (median).
// bf16 cuBLAS GEMM rate on random data (FLOP/s, median), the matrix ceiling of this device.
double MeasureMatrixRate() {
  const int n = 8192;
  const size_t elems = static_cast<size_t>(n) * n;
  std::vector<uint16_t> host(elems);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (uint16_t& v : host) {
    const float f = normal(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    v = static_cast<uint16_t>(bits >> 16);
  }
  void *a, *b, *c;
  CHECK_CUDA(cudaMalloc(&a, elems * 2));
  CHECK_CUDA(cudaMalloc(&b, elems * 2));
  CHECK_CUDA(cudaMalloc(&c, elems * 2));
  CHECK_CUDA(cudaMemcpy(a, host.data(), elems * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(b, host.data(), elems * 2, cudaMemcpyHostToDevice));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cublasCreate failed\n");
    std::exit(1);
  }
  const float alpha = 1.0f, beta = 0.0f;
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 13; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    if (cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b,
                     CUDA_R_16BF, n, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      std::fprintf(stderr, "cublasGemmEx failed\n");
      std::exit(1);
    }
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i >= 3) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cublasDestroy(handle);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 2.0 * n * n * static_cast<double>(n) / (ms[ms.size() / 2] * 1e-3);
}

// Fills the pool's arena with random bf16 values (never time on zeros).
void FillRandom(KvPool& pool) {
  const size_t bytes = static_cast<size_t>(pool.total_pages()) * pool.geometry().page_bytes();
  std::vector<uint16_t> pattern(size_t{32} << 20);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (uint16_t& v : pattern) {
    const float f = normal(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    v = static_cast<uint16_t>(bits >> 16);
  }
  char* dst = static_cast<char*>(pool.arena_data());
  const size_t chunk = pattern.size() * sizeof(uint16_t);
  for (size_t at = 0; at < bytes; at += chunk) {
    CHECK_CUDA(
        cudaMemcpy(dst + at, pattern.data(), std::min(chunk, bytes - at), cudaMemcpyHostToDevice));
  }
}

size_t BlockParams(const BlockWeights& b) {
  return b.qkv.size() + b.o.size() + b.gate_up.size() + b.down.size();
}

// What one decode step must read and compute, for the roofline.
struct Model {
  size_t decoder_bytes = 0;           // decoder blocks + lm_head, bf16
  size_t compressor_bytes = 0;        // compressor blocks, bf16 (proj_fx per chunk size on top)
  std::vector<size_t> proj_fx_bytes;  // by chunk size
  double decoder_flops_per_row = 0;
  double compressor_flops_per_row = 0;
};

Model Describe(const ModelConfig& c, const ModelWeights& w) {
  Model m;
  size_t decoder = w.decoder.lm_head.size(), compressor = 0;
  for (const BlockWeights& b : w.decoder.layers) decoder += BlockParams(b);
  for (const BlockWeights& b : w.compressor.layers) compressor += BlockParams(b);
  m.decoder_bytes = 2 * decoder;
  m.compressor_bytes = 2 * compressor;
  m.proj_fx_bytes.assign(c.max_chunk_size + 1, 0);
  for (const auto& [l, p] : w.compressor.proj_fx) m.proj_fx_bytes[l] = 2 * p.size();
  m.decoder_flops_per_row = 2.0 * decoder;
  m.compressor_flops_per_row = 2.0 * compressor;
  return m;
}

int PagesPerSequence(int tokens, int l, int page_entries) {
  const KvEntries e = KvEntriesAfter(tokens, l);
  return (e.compressed + page_entries - 1) / page_entries +
         (e.local + page_entries - 1) / page_entries;
}

struct Cell {
  double tokens_per_s = 0;
  double step_ms = 0;
  double floor_ms = 0;
  bool memory_bound = true;
  size_t device_to_host_bytes = 0;  // per step
};

Cell RunDecode(Engine& engine, KvPool& pool, const Model& model, double bandwidth, double rate,
               int context, int batch, int l, int steps) {
  const ModelConfig& c = engine.config();
  const KvGeometry& g = pool.geometry();
  std::mt19937 rng(context * 131 + batch * 7 + l);
  std::vector<SequenceState> seqs(batch);
  const int final_len = context + steps + 16;
  for (int i = 0; i < batch; ++i) {
    SequenceState& s = seqs[i];
    s.chunk_size = l;
    for (int t = 0; t < final_len; ++t) s.tokens.push_back(3 + rng() % (c.vocab_size - 3));
    s.cached = context - (i % l);
    if (!ReservePages(pool, s, s.cached)) {
      std::fprintf(stderr, "pool too small for batch %d\n", batch);
      std::exit(1);
    }
  }
  // The serving step: greedy draws on the device, only the tokens copied back.
  const SamplingParams greedy{.temperature = 0.0f};
  std::vector<SampledToken> tokens(batch);
  std::vector<StepItem> items(batch);
  size_t device_to_host = 0;
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  double bytes = 0, flops = 0;
  const int warmup = std::max(2, l);
  for (int step = 0; step < warmup + steps; ++step) {
    if (step == warmup) CHECK_CUDA(cudaEventRecord(start));
    int boundaries = 0;
    for (int i = 0; i < batch; ++i) {
      SequenceState& s = seqs[i];
      if (!ReservePages(pool, s, s.cached + 1)) {
        std::fprintf(stderr, "pool too small for batch %d\n", batch);
        std::exit(1);
      }
      items[i] = {.seq = &s, .num_tokens = 1, .want_logits = true, .sampling = &greedy};
      if (step >= warmup) {
        const int n = s.cached + 1;
        const bool boundary = n % l == 0;
        boundaries += boundary;
        const KvEntries e = KvEntriesAfter(n, l);
        const int rows = boundary ? 2 : 1;
        bytes += static_cast<double>(rows) * (e.compressed + e.local) * g.entry_bytes();
        flops += rows * (model.decoder_flops_per_row +
                         4.0 * (e.compressed + e.local) * c.hidden_size * c.num_hidden_layers);
        if (boundary)
          flops += (l + 2) * model.compressor_flops_per_row +
                   2.0 * l * c.compressor_hidden_size * c.hidden_size;
      }
    }
    if (step >= warmup) {
      bytes += model.decoder_bytes;
      if (boundaries > 0) bytes += model.compressor_bytes + model.proj_fx_bytes[l];
    }
    StepStats stats;
    const absl::Status st = engine.Step(items, pool, absl::MakeSpan(tokens), &stats);
    if (!st.ok()) {
      std::fprintf(stderr, "step failed: %s\n", std::string(st.message()).c_str());
      std::exit(1);
    }
    device_to_host = stats.device_to_host_bytes;
    for (SequenceState& s : seqs) TrimPages(pool, s);
  }
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  for (SequenceState& s : seqs) pool.ReleaseAll(s.pages);
  Cell cell;
  cell.device_to_host_bytes = device_to_host;
  cell.step_ms = ms / steps;
  cell.tokens_per_s = static_cast<double>(batch) * steps / (ms * 1e-3);
  const double memory_ms = bytes / bandwidth * 1e3 / steps;
  const double compute_ms = flops / rate * 1e3 / steps;
  cell.floor_ms = std::max(memory_ms, compute_ms);
  cell.memory_bound = memory_ms >= compute_ms;
  return cell;
}

// One prompt of `tokens` tokens prefilled in one step (median of 3 after a warm-up), in ms.
double RunPrefill(Engine& engine, KvPool& pool, int tokens, int l) {
  const ModelConfig& c = engine.config();
  std::mt19937 rng(tokens + l);
  std::vector<float> logits(c.vocab_size);
  std::vector<float> ms;
  for (int run = 0; run < 4; ++run) {
    SequenceState s;
    s.chunk_size = l;
    for (int t = 0; t < tokens; ++t) s.tokens.push_back(3 + rng() % (c.vocab_size - 3));
    if (!ReservePages(pool, s, tokens)) {
      std::fprintf(stderr, "pool too small for a %d-token prefill\n", tokens);
      std::exit(1);
    }
    StepItem item{&s, tokens, true};
    cudaEvent_t start, stop;
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
    CHECK_CUDA(cudaEventRecord(start));
    const absl::Status st = engine.StepLogits({&item, 1}, pool, absl::MakeSpan(logits));
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    if (!st.ok()) {
      std::fprintf(stderr, "prefill failed: %s\n", std::string(st.message()).c_str());
      std::exit(1);
    }
    float t;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (run > 0) ms.push_back(t);
    pool.ReleaseAll(s.pages);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The authors' generator's workload (see --authors at the top), timed whole: tokens/s.
double RunAuthors(Engine& engine, KvPool& pool, int batch, int context, int l) {
  const SamplingParams greedy{.temperature = 0.0f};
  double seconds = 0;
  for (int run = 0; run < 2; ++run) {  // run 0 warms up
    std::mt19937 rng(batch * 31 + context + l);
    std::vector<SequenceState> seqs(batch);
    for (SequenceState& s : seqs) {
      s.chunk_size = l;
      for (int t = 0; t < l; ++t) s.tokens.push_back(static_cast<int32_t>(rng() % 1000));
    }
    std::vector<SampledToken> tokens(batch);
    std::vector<StepItem> items(batch);
    CHECK_CUDA(cudaDeviceSynchronize());
    const auto start = std::chrono::steady_clock::now();
    while (static_cast<int>(seqs[0].tokens.size()) < context) {
      for (int i = 0; i < batch; ++i) {
        SequenceState& s = seqs[i];
        const int n = static_cast<int>(s.tokens.size()) - s.cached;
        if (!ReservePages(pool, s, s.cached + n)) {
          std::fprintf(stderr, "pool too small for the authors' workload at batch %d\n", batch);
          std::exit(1);
        }
        items[i] = {.seq = &s,
                    .num_tokens = n,
                    .want_logits = true,
                    .sampling = &greedy,
                    .draw = static_cast<uint64_t>(s.tokens.size())};
      }
      const absl::Status st = engine.Step(items, pool, absl::MakeSpan(tokens));
      if (!st.ok()) {
        std::fprintf(stderr, "step failed: %s\n", std::string(st.message()).c_str());
        std::exit(1);
      }
      for (int i = 0; i < batch; ++i) {
        seqs[i].tokens.push_back(tokens[i].token);
        TrimPages(pool, seqs[i]);
      }
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (SequenceState& s : seqs) pool.ReleaseAll(s.pages);
  }
  return static_cast<double>(batch) * l * (context / l - 1) / seconds;
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  const char* attention = o.attention == CudaAttention::kAuto ? "auto" : "split_kv";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "no CUDA device: cuda_step_bench needs a GPU\n");
    return 1;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int max_context = o.prefill;
  for (int c : o.contexts) max_context = std::max(max_context, c);
  for (const Options::Authors& a : o.authors) max_context = std::max(max_context, a.context);
  const int steps_max = std::max(16, o.cycles * 16);
  const ModelConfig config = PaperConfig(max_context + steps_max + 64);
  std::fprintf(stderr, "building a random model of the paper's shape...\n");
  const ModelWeights weights = RandomModelWeights(config, 1);
  const Model model = Describe(config, weights);
  auto engine = CreateCudaEngine(
      config, weights,
      {.device = Device::kCuda, .cuda_attention = o.attention, .cuda_graphs = o.graphs});
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const double bandwidth = bench::MeasureCopyBandwidth();
  const double rate = MeasureMatrixRate();
  const int page_entries = 16;
  const KvGeometry g = (*engine)->kv_geometry(page_entries);
  const int pool_pages = static_cast<int>(o.pool_gib * (1 << 30) / g.page_bytes());
  auto pool = (*engine)->CreateKvPool(pool_pages, page_entries);
  if (!pool.ok()) {
    std::fprintf(stderr, "%s\n", std::string(pool.status().message()).c_str());
    return 1;
  }
  FillRandom(*pool);

  if (!o.authors.empty()) {
    std::printf(
        "## The authors' workload (benchmark.py)\n\n| batch | context | chunk | tokens/s |\n"
        "|---:|---:|---:|---:|\n");
    for (const Options::Authors& a : o.authors) {
      if (!config.serves_chunk_size(a.chunk)) continue;
      const double tokens_per_s = RunAuthors(**engine, *pool, a.batch, a.context, a.chunk);
      std::printf("| %d | %d | %d | %.0f |\n", a.batch, a.context, a.chunk, tokens_per_s);
      std::fprintf(stderr,
                   "RESULT catserve attention=%s graphs=%s bs=%d chunk=%d ctx=%d tok_per_s=%.0f\n",
                   attention, o.graphs ? "on" : "off", a.batch, a.chunk, a.context, tokens_per_s);
      std::fflush(stdout);
    }
    if (o.authors_only) return 0;
    std::printf("\n");
  }

  std::printf(
      "CUDA engine on %s (attention %s, graphs %s): bf16 weights and KV, D=1536 L=12 H=24, "
      "Dc=768 Lc=3 Hc=12, V=32000\n",
      prop.name, attention, o.graphs ? "on" : "off");
  std::printf(
      "measured ceilings: copy bandwidth %.2f TB/s (read + write), bf16 GEMM %.0f "
      "TFLOP/s; weights %.0f MB decoder+lm_head, %.0f MB compressor; KV pool %.1f GiB "
      "(%d pages of %zu bytes)\n\n",
      bandwidth / 1e12, rate / 1e12, model.decoder_bytes / 1e6, model.compressor_bytes / 1e6,
      o.pool_gib, pool_pages, g.page_bytes());

  std::printf(
      "## Decode\n\n| context | chunk | batch | tokens/s | step ms | floor ms | bound | "
      "step / floor | D2H bytes/step |\n|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
  for (int context : o.contexts) {
    for (int l : o.chunks) {
      if (!config.serves_chunk_size(l)) continue;
      const int steps = std::max(16, o.cycles * l);
      const int per_seq = PagesPerSequence(context + steps + 16, l, page_entries);
      for (int batch : o.batches) {
        if (static_cast<long>(per_seq) * batch > pool_pages) {
          std::printf("| %d | %d | %d | (pool holds %d) | | | | | |\n", context, l, batch,
                      pool_pages / per_seq);
          continue;
        }
        const Cell c = RunDecode(**engine, *pool, model, bandwidth, rate, context, batch, l, steps);
        std::printf("| %d | %d | %d | %.0f | %.3f | %.3f | %s | %.2f | %zu |\n", context, l, batch,
                    c.tokens_per_s, c.step_ms, c.floor_ms, c.memory_bound ? "memory" : "compute",
                    c.step_ms / c.floor_ms, c.device_to_host_bytes);
        std::fflush(stdout);
      }
    }
  }

  std::printf(
      "\n## Prefill of one %d-token prompt (one step)\n\n| chunk | ms | tokens/s |\n"
      "|---:|---:|---:|\n",
      o.prefill);
  for (int l : o.chunks) {
    if (!config.serves_chunk_size(l)) continue;
    const double ms = RunPrefill(**engine, *pool, o.prefill, l);
    std::printf("| %d | %.2f | %.0f |\n", l, ms, o.prefill / (ms * 1e-3));
    std::fflush(stdout);
  }

  std::printf(
      "\n## Largest batch the %.1f GiB pool holds (pages of %d entries)\n\n| context | "
      "chunk | pages/seq | sequences |\n|---:|---:|---:|---:|\n",
      o.pool_gib, page_entries);
  for (int context : o.contexts) {
    for (int l : o.chunks) {
      if (!config.serves_chunk_size(l)) continue;
      const int per_seq = PagesPerSequence(context, l, page_entries);
      std::printf("| %d | %d | %d | %d |\n", context, l, per_seq, pool_pages / per_seq);
    }
  }
  return 0;
}

}  // namespace
}  // namespace catserve::engine

int main(int argc, char** argv) { return catserve::engine::Main(argc, argv); }
