// Times the decoder's decode attention alone on the GPU, FlashInfer's decode and catserve's
// split-KV kernel, against the device's measured copy bandwidth: the target is "decode attention
// at >= 75% of the measured read bandwidth for rows of >= 1,000 keys at batch >= 16". Prints a
// markdown table, one line per (kernel, batch, keys) cell, and one machine-readable line per cell
// on stderr:
//   RESULT attention kernel=flashinfer|split_kv bs=B keys=K gbps=G share=S
//
//   build/benchmarks/cuda_attention_bench [--batches=16,64,256] [--keys=1024,4096]
//       [--page_entries=16] [--reps=50] [--heads=24] [--kv_heads=24] [--head_dim=64]
//       [--layers=1] [--chunk=1]
//
// A cell is one decode step of `batch` sequences whose rows each see `keys` compressed entries,
// as the engine plans it for one more token of each (StepPlan). At chunk size 1 (the default)
// each sequence holds keys - 1 tokens (keys compressed entries F_0, fx_0... and its S), and the
// chunk its token completes gives an F row (compressed, `keys` compressed keys visible) and the
// new chunk's S row (`keys` compressed keys and 1 local entry visible): 2 decoder rows per
// sequence. With --chunk=L > 1 a sequence holds (keys - 1) * L tokens with its S cached, and its
// step is one token row over `keys` compressed keys and 2 local entries (S and the token). Pages
// come from a host-side KvPool over a device arena of random bf16 (never zeros) in the page layout
// of engine/kv/page_layout.h, `layers` layers a page (1 by default: the attended layer's blocks of
// a page are the same 2 KiB runs per kv head at any layer count, and a one-layer arena lets the
// largest cells fit); the metadata is SplitKvPlan::Build(plan, SMs) -> BuildSplitKvMeta ->
// RouteAttention, uploaded as the engine does, and q is random fp32 in a qkv buffer. Attention
// reads the last layer.
//
// Bytes counted per cell (the floor: each input read once, each output written once): every
// distinct K and V entry a sequence's rows see, once per kv head (keys + 1 entries a sequence at
// chunk 1: its F row sees a subset of its S row's entries, and the split-KV kernel reads each key
// once for all rows of an item; keys + 2 at chunk > 1), i.e. at chunk 1
// batch * (keys + 1) * kv_heads * head_dim * 2 (K and V) * 2 bytes;
// plus q (rows * heads * head_dim fp32) and the output (rows * heads * head_dim bf16). Scratch
// (split partials, FlashInfer's tiles) is overhead, not counted.
//
// Timing: each kernel is warmed up, then --reps launch groups (one FlashInferDecode or one
// SplitKvAttention: every launch of that kernel for the step) are enqueued back to back, each
// between two CUDA events, and the median is reported. When one step's arena is small next to the
// L2 cache, several independent sets (their own pages of the arena, their own qkv and metadata) are
// rotated so that at least 4x the L2 size lies between two reads of one set. The bandwidth ceiling
// is a 1 GiB device-to-device cudaMemcpy of random data (bytes read + written, median of 10), as
// benchmarks/cuda_bench_common.h measures it for both benches. Before timing, both kernels run once
// on set 0 with the output poisoned (bf16 NaN) and must agree (relative L2 difference under 1e-2,
// no NaN).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/cuda_bench_common.h"
#include "engine/cuda/attention_routes.h"
#include "engine/cuda/device_buffer.h"
#include "engine/cuda/flashinfer_decode.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/split_kv_meta.h"
#include "engine/kv/kv_geometry.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/step/split_kv_plan.h"
#include "engine/step/step_plan.h"

namespace catserve::engine {
namespace {

using cuda::DeviceBuffer;

void CheckOk(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

constexpr uint16_t kPoison = 0x7fc1;  // a bf16 NaN

struct Options {
  std::vector<int> batches = {16, 64, 256};
  std::vector<int> keys = {1024, 4096};
  int page_entries = 16;
  int reps = 50;
  int heads = 24, kv_heads = 24, head_dim = 64;
  int layers = 1;
  int chunk = 1;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  auto one = [](const char* v) { return bench::ParseIntList(v).at(0); };
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* name) { return bench::FlagValue(argv[i], name); };
    if (const char* v = value("batches")) {
      o.batches = bench::ParseIntList(v);
    } else if (const char* v = value("keys")) {
      o.keys = bench::ParseIntList(v);
    } else if (const char* v = value("page_entries")) {
      o.page_entries = one(v);
    } else if (const char* v = value("reps")) {
      o.reps = one(v);
    } else if (const char* v = value("heads")) {
      o.heads = one(v);
    } else if (const char* v = value("kv_heads")) {
      o.kv_heads = one(v);
    } else if (const char* v = value("head_dim")) {
      o.head_dim = one(v);
    } else if (const char* v = value("layers")) {
      o.layers = one(v);
    } else if (const char* v = value("chunk")) {
      o.chunk = one(v);
    } else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of %s)\n", argv[i],
                   __FILE__);
      std::exit(2);
    }
  }
  for (int k : o.keys) {
    if (k < 3) {
      // keys = cached + 2 at chunk size 1, and a sequence with nothing cached plans a third row.
      std::fprintf(stderr, "--keys must be at least 3, got %d\n", k);
      std::exit(2);
    }
  }
  if (o.heads % o.kv_heads != 0 || o.heads / o.kv_heads > cuda::kMaxGroup ||
      o.head_dim > cuda::kMaxHeadDim || o.head_dim % 2 != 0) {
    std::fprintf(stderr, "heads %d, kv_heads %d, head_dim %d: not a shape the kernels take\n",
                 o.heads, o.kv_heads, o.head_dim);
    std::exit(2);
  }
  return o;
}

std::vector<uint16_t> RandomBf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return cuda::ToBf16(v);
}

// Writes random bf16 over bytes [begin, end) of `dst` from a 32 MiB random pattern on the device
// (device-to-device copies: the arenas of the largest cells are several GB).
void FillRandom(char* dst, size_t begin, size_t end) {
  static DeviceBuffer pattern;
  if (pattern.empty()) CheckOk(pattern.Upload(RandomBf16(size_t{16} << 20, 7)), "pattern");
  for (size_t at = begin; at < end; at += pattern.bytes()) {
    CHECK_CUDA(cudaMemcpy(dst + at, pattern.data(), std::min(pattern.bytes(), end - at),
                          cudaMemcpyDeviceToDevice));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
}

// The bench's arena, owned by a DeviceBuffer: the pool only plans pages over it.
class BorrowedCudaArena : public KvArena {
 public:
  explicit BorrowedCudaArena(void* data) : data_(data) {}
  void* data() override { return data_; }
  Location location() const override { return Location::kCuda; }

 private:
  void* data_;
};

template <typename T>
void Up(DeviceBuffer& b, const std::vector<T>& v) {
  // An empty list still needs a valid pointer.
  CheckOk(v.empty() ? b.Reserve(16) : b.Upload(v), "metadata upload");
}

// One independent copy of a cell's step: its sequences' pages, qkv and both kernels' metadata.
struct StepSet {
  std::vector<SequenceState> seqs;
  std::vector<StepItem> items;
  StepPlan plan;
  SplitKvPlan splits;
  cuda::SplitKvMeta meta;
  cuda::AttentionRoutes fi, sk;  // the routes with FlashInfer on, and off
  DeviceBuffer qkv;
  // split_kv
  DeviceBuffer rows, pages, split_items, split_list;
  // flashinfer
  DeviceBuffer ci, cp, cl, li, lp, ll, treq, tidx, lreq, fi_rows;
};

struct Cell {
  int batch = 0, keys = 0, decoder_rows = 0;
  double kv_bytes = 0, total_bytes = 0;
};

class Bench {
 public:
  Bench(const Options& o, const cudaDeviceProp& prop, double bandwidth)
      : o_(o), prop_(prop), bandwidth_(bandwidth) {
    geometry_ = {.layers = o.layers,
                 .kv_heads = o.kv_heads,
                 .head_dim = o.head_dim,
                 .page_entries = o.page_entries,
                 .dtype = KvDtype::kBf16};
    flashinfer_ = cuda::FlashInferDecodeSupports(o.head_dim, o.heads / o.kv_heads);
    CHECK_CUDA(cudaStreamCreate(&stream_));
    CheckOk(keys_dev_.Upload(std::vector<int32_t>{cuda::kFlashInferTileKeys}), "tile keys");
  }
  ~Bench() { cudaStreamDestroy(stream_); }

  bool flashinfer() const { return flashinfer_; }

  void Run(int batch, int keys) {
    const int H = o_.heads, KVH = o_.kv_heads, D = o_.head_dim, group = H / KVH;
    // A sequence's tokens once the step's token is in: keys - 1 at chunk 1 (the token completes
    // a chunk: keys compressed entries and the new S), else (keys - 1) * L + 1 (keys compressed
    // entries, S and the token). The step caches one token more than `cached`.
    const int l = o_.chunk;
    const int cached = l == 1 ? keys - 2 : (keys - 1) * l;
    const KvEntries entries = KvEntriesAfter(cached + 1, l);
    const size_t per_seq = (entries.compressed + o_.page_entries - 1) / o_.page_entries +
                           (entries.local + o_.page_entries - 1) / o_.page_entries;
    const size_t set_bytes = per_seq * batch * geometry_.page_bytes();
    const size_t l2 = std::max(prop_.l2CacheSize, 1);
    const int sets =
        static_cast<int>(std::clamp<size_t>((4 * l2 + set_bytes - 1) / set_bytes, 1, kMaxSets));
    const size_t pages = per_seq * batch * sets;
    const size_t arena_bytes = pages * geometry_.page_bytes();
    if (pages > static_cast<size_t>(INT32_MAX)) {
      std::printf("| (too many pages) | %d | %d | | | | | | | |\n", batch, keys);
      return;
    }
    size_t free_bytes = 0, total = 0;
    CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total));
    // What the arena may take: the free memory, less what it holds now (freed when it grows) and
    // 1 GiB for qkv, metadata and scratch.
    if (arena_bytes > arena_.bytes() &&
        arena_bytes + (size_t{1} << 30) > free_bytes + arena_.bytes()) {
      std::printf("| (a %.1f GB arena does not fit) | %d | %d | | | | | | | |\n", arena_bytes / 1e9,
                  batch, keys);
      return;
    }
    if (arena_bytes > arena_.bytes()) {
      arena_ = DeviceBuffer();  // free first: the old and new ones need not both fit
      CheckOk(arena_.Reserve(arena_bytes), "arena");
      filled_ = 0;
    }
    if (arena_bytes > filled_) {
      FillRandom(arena_.as<char>(), filled_, arena_bytes);
      filled_ = arena_bytes;
    }
    auto pool = KvPool::Create(geometry_, static_cast<int>(pages),
                               std::make_unique<BorrowedCudaArena>(arena_.data()));
    CheckOk(pool.status(), "KV pool");

    Cell cell{.batch = batch, .keys = keys};
    std::vector<std::unique_ptr<StepSet>> set_list;
    size_t partial_slots = 1, fi_blocks = 1;
    for (int s = 0; s < sets; ++s) {
      auto set = std::make_unique<StepSet>();
      set->seqs.resize(batch);
      set->items.resize(batch);
      for (int i = 0; i < batch; ++i) {
        SequenceState& q = set->seqs[i];
        q.chunk_size = l;
        q.tokens.assign(cached + 1, 3);
        q.cached = cached;
        if (!ReservePages(*pool, q, cached + 1)) {
          std::fprintf(stderr, "internal: the pool is short of pages\n");
          std::exit(1);
        }
        set->items[i] = {.seq = &q, .num_tokens = 1, .want_logits = true};
      }
      set->plan.Build(set->items);
      const int rows = static_cast<int>(set->plan.rows.size());
      if (rows != (l == 1 ? 2 : 1) * batch) {
        std::fprintf(stderr, "internal: %d decoder rows for %d sequences\n", rows, batch);
        std::exit(1);
      }
      set->splits.Build(set->plan, prop_.multiProcessorCount);
      set->meta = cuda::BuildSplitKvMeta(set->plan, set->splits, set->items, group, KVH);
      for (const cuda::AttentionRow& r : set->meta.rows) {
        if (r.visible_compressed != keys || r.visible_local > (l == 1 ? 1 : 2)) {
          std::fprintf(stderr, "internal: a row sees %d compressed and %d local entries\n",
                       r.visible_compressed, r.visible_local);
          std::exit(1);
        }
      }
      if (s == 0) {
        // The floor's bytes: per sequence, the entries its rows see (the union over them), once
        // per kv head, K and V, bf16; q (fp32) and the output (bf16) of every row.
        double entries_seen = 0;
        for (int i = 0; i < batch; ++i) {
          int c = 0, l = 0;
          for (int t = set->plan.item_rows[i].first; t < set->plan.item_rows[i].second; ++t) {
            c = std::max(c, static_cast<int>(set->meta.rows[t].visible_compressed));
            l = std::max(l, static_cast<int>(set->meta.rows[t].visible_local));
          }
          entries_seen += c + l;
        }
        cell.decoder_rows = rows;
        cell.kv_bytes = entries_seen * KVH * D * 2 * 2;
        cell.total_bytes = cell.kv_bytes + static_cast<double>(rows) * H * D * (4 + 2);
      }
      const cuda::AttentionRouteOptions route{.page_entries = o_.page_entries};
      set->sk = cuda::RouteAttention(set->plan, set->meta, route);
      Up(set->rows, set->meta.rows);
      Up(set->pages, set->meta.page_lists);
      Up(set->split_items, set->sk.split_items);
      Up(set->split_list, set->sk.splits);
      partial_slots = std::max(partial_slots, set->meta.partial_slots);
      if (flashinfer_) {
        auto fr = route;
        fr.flashinfer = true;
        set->fi = cuda::RouteAttention(set->plan, set->meta, fr);
        const cuda::AttentionRoutes& r = set->fi;
        Up(set->ci, r.compressed_indptr);
        Up(set->cp, r.compressed_pages);
        Up(set->cl, r.compressed_last_len);
        Up(set->li, r.local_indptr);
        Up(set->lp, r.local_pages);
        Up(set->ll, r.local_last_len);
        Up(set->treq, r.tile_request);
        Up(set->tidx, r.tile_index);
        Up(set->lreq, r.local_request);
        Up(set->fi_rows, r.flashinfer_rows);
        fi_blocks = std::max(fi_blocks, r.tile_request.size() + r.local_request.size());
      }
      std::mt19937 rng(1000 * batch + 10 * s + keys);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> qkv(static_cast<size_t>(rows) * (H + 2 * KVH) * D);
      for (float& v : qkv) v = normal(rng);
      CheckOk(set->qkv.Upload(qkv), "qkv");
      set_list.push_back(std::move(set));
    }
    CheckOk(partials_.Reserve(partial_slots * (2 + D) * sizeof(float)), "partials");
    CheckOk(fi_scratch_.Reserve(cuda::FlashInferScratchFloats(fi_blocks, 0, H, D) * sizeof(float)),
            "FlashInfer scratch");
    const size_t out_values = static_cast<size_t>(cell.decoder_rows) * H * D;
    CheckOk(out_.Reserve(out_values * sizeof(uint16_t)), "output");

    auto split_kv = [&](const StepSet& s) {
      float* p = partials_.as<float>();
      const size_t slots = s.meta.partial_slots;
      return cuda::SplitKvAttention(
          s.qkv.as<float>(), H, KVH, D, s.rows.as<cuda::AttentionRow>(),
          s.split_items.as<cuda::SplitKvItem>(), static_cast<int>(s.sk.split_items.size()),
          s.sk.split_max_item_rows, s.split_list.as<cuda::SplitKvSplit>(),
          static_cast<int>(s.sk.splits.size()), s.pages.as<int32_t>(), o_.layers - 1,
          o_.page_entries, geometry_.values_per_page(), arena_.as<uint16_t>(),
          cuda::SplitKvPartials{p, p + slots, p + 2 * slots}, out_.as<uint16_t>(), stream_);
    };
    auto flashinfer = [&](const StepSet& s) {
      const cuda::AttentionRoutes& r = s.fi;
      const cuda::FlashInferDecodeMeta m{.decoder_rows = static_cast<int>(s.plan.rows.size()),
                                         .compressed_indptr = s.ci.as<int32_t>(),
                                         .compressed_pages = s.cp.as<int32_t>(),
                                         .compressed_last_len = s.cl.as<int32_t>(),
                                         .local_indptr = s.li.as<int32_t>(),
                                         .local_pages = s.lp.as<int32_t>(),
                                         .local_last_len = s.ll.as<int32_t>(),
                                         .tile_request = s.treq.as<int32_t>(),
                                         .tile_index = s.tidx.as<int32_t>(),
                                         .tiles = static_cast<int>(r.tile_request.size()),
                                         .local_request = s.lreq.as<int32_t>(),
                                         .locals = static_cast<int>(r.local_request.size()),
                                         .tile_keys = keys_dev_.as<int32_t>(),
                                         .rows = s.fi_rows.as<cuda::FlashInferRow>(),
                                         .num_rows = static_cast<int>(r.flashinfer_rows.size())};
      const cuda::FlashInferScratch sc =
          cuda::FlashInferScratchAt(fi_scratch_.as<float>(), m.tiles, m.locals, H, D);
      return cuda::FlashInferDecode(s.qkv.as<float>(), H, KVH, D, m, o_.layers - 1, o_.page_entries,
                                    geometry_.values_per_page(), arena_.as<uint16_t>(), sc,
                                    out_.as<uint16_t>(), stream_);
    };

    // Both kernels compute the same function of set 0 (the tests pin each against the CPU).
    const std::vector<uint16_t> want = Output(split_kv, *set_list[0], out_values);
    Compare(want, flashinfer_ ? Output(flashinfer, *set_list[0], out_values) : want, cell);

    std::vector<std::pair<const char*, std::function<cudaError_t(const StepSet&)>>> kernels;
    if (flashinfer_) kernels.emplace_back("flashinfer", flashinfer);
    kernels.emplace_back("split_kv", split_kv);
    for (const auto& [name, launch] : kernels) {
      const double us = MedianMicroseconds(launch, set_list);
      const double gbps = cell.total_bytes / (us * 1e-6) / 1e9;
      const double share = gbps * 1e9 / bandwidth_;
      std::printf("| %s | %d | %d | %d | %d/%d/%d | %.1f | %.1f | %.1f | %.0f | %.1f%% |\n", name,
                  batch, keys, cell.decoder_rows, H, KVH, D, us, cell.kv_bytes / 1e6,
                  cell.total_bytes / 1e6, gbps, 100 * share);
      std::fflush(stdout);
      std::fprintf(stderr, "RESULT attention kernel=%s bs=%d keys=%d gbps=%.1f share=%.3f\n", name,
                   batch, keys, gbps, share);
    }
    for (auto& set : set_list) {
      for (SequenceState& q : set->seqs) pool->ReleaseAll(q.pages);
    }
    if (sets > 1) {
      std::fprintf(stderr, "batch %d keys %d: %d sets of %.1f MB rotated (L2 %.0f MB)\n", batch,
                   keys, sets, set_bytes / 1e6, l2 / 1e6);
    }
  }

 private:
  static constexpr size_t kMaxSets = 64;

  template <typename Launch>
  std::vector<uint16_t> Output(const Launch& launch, const StepSet& s, size_t values) {
    std::vector<uint16_t> bits(values, kPoison);
    CHECK_CUDA(cudaMemcpy(out_.data(), bits.data(), values * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(launch(s));
    CHECK_CUDA(cudaStreamSynchronize(stream_));
    CHECK_CUDA(cudaMemcpy(bits.data(), out_.data(), values * 2, cudaMemcpyDeviceToHost));
    return bits;
  }

  static void Compare(const std::vector<uint16_t>& want, const std::vector<uint16_t>& got,
                      const Cell& cell) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double w = std::bit_cast<float>(static_cast<uint32_t>(want[i]) << 16);
      const double g = std::bit_cast<float>(static_cast<uint32_t>(got[i]) << 16);
      if (std::isnan(w) || std::isnan(g)) {
        std::fprintf(stderr, "batch %d keys %d: value %zu is NaN (split_kv %g, flashinfer %g)\n",
                     cell.batch, cell.keys, i, w, g);
        std::exit(1);
      }
      diff += (g - w) * (g - w);
      norm += w * w;
    }
    const double rel = std::sqrt(diff / std::max(norm, 1e-30));
    if (!(rel < 1e-2)) {
      std::fprintf(stderr, "batch %d keys %d: flashinfer and split_kv differ by %.3g (relative)\n",
                   cell.batch, cell.keys, rel);
      std::exit(1);
    }
  }

  // Warm-up, then --reps launch groups back to back, each between two events, rotating the sets:
  // the median in microseconds.
  template <typename Launch>
  double MedianMicroseconds(const Launch& launch, const std::vector<std::unique_ptr<StepSet>>& s) {
    const int n = static_cast<int>(s.size());
    for (int i = 0; i < std::max(3, 2 * n); ++i) CHECK_CUDA(launch(*s[i % n]));
    std::vector<cudaEvent_t> events(2 * o_.reps);
    for (cudaEvent_t& e : events) CHECK_CUDA(cudaEventCreate(&e));
    for (int i = 0; i < o_.reps; ++i) {
      CHECK_CUDA(cudaEventRecord(events[2 * i], stream_));
      CHECK_CUDA(launch(*s[i % n]));
      CHECK_CUDA(cudaEventRecord(events[2 * i + 1], stream_));
    }
    CHECK_CUDA(cudaStreamSynchronize(stream_));
    CHECK_CUDA(cudaGetLastError());
    std::vector<float> ms(o_.reps);
    for (int i = 0; i < o_.reps; ++i) {
      CHECK_CUDA(cudaEventElapsedTime(&ms[i], events[2 * i], events[2 * i + 1]));
    }
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2] * 1e3;
  }

  const Options& o_;
  const cudaDeviceProp& prop_;
  const double bandwidth_;
  KvGeometry geometry_;
  bool flashinfer_ = false;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer arena_, partials_, fi_scratch_, out_, keys_dev_;
  size_t filled_ = 0;  // bytes of arena_ holding random values
};

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "no CUDA device: cuda_attention_bench needs a GPU\n");
    return 1;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double bandwidth = bench::MeasureCopyBandwidth();
  Bench bench(o, prop, bandwidth);
  std::printf(
      "Decode attention alone on %s (%d SMs, L2 %.0f MB): heads %d, kv heads %d, head_dim %d, "
      "bf16 KV in pages of %d entries (%d layer%s a page), chunk size %d\n",
      prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6, o.heads, o.kv_heads, o.head_dim,
      o.page_entries, o.layers, o.layers == 1 ? "" : "s", o.chunk);
  std::printf("measured copy bandwidth %.2f TB/s (read + write, 1 GiB device-to-device)\n",
              bandwidth / 1e12);
  if (!bench.flashinfer()) {
    std::printf(
        "FlashInfer's decode is not in this build for head_dim %d, group %d "
        "(FlashInferDecodeSupports is false): split_kv only\n",
        o.head_dim, o.heads / o.kv_heads);
  }
  if (o.chunk == 1) {
    std::printf(
        "Each sequence's step is 2 decoder rows (F and S), both over `keys` compressed entries, "
        "the S row also over 1 local one; KV bytes = batch * (keys + 1) * kv_heads * head_dim * 2 "
        "(K, V) * 2 (bf16).");
  } else {
    std::printf(
        "Each sequence's step is 1 token row over `keys` compressed entries and 2 local ones; KV "
        "bytes = batch * (keys + 2) * kv_heads * head_dim * 2 (K, V) * 2 (bf16).");
  }
  std::printf(
      " Total = KV + rows * heads * head_dim * (4 (q fp32) + 2 (out bf16)); GB/s = total / "
      "median. Median of %d launch groups.\n\n",
      o.reps);
  std::printf(
      "| kernel | batch | keys/row | rows | heads/kv_heads/head_dim | median us | KV MB | "
      "total MB | GB/s | share of copy bw |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
  for (int batch : o.batches) {
    for (int keys : o.keys) bench.Run(batch, keys);
  }
  return 0;
}

}  // namespace
}  // namespace catserve::engine

int main(int argc, char** argv) { return catserve::engine::Main(argc, argv); }
