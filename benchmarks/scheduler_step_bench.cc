// The serving layer's cost per decode step on the host (planning, drawing every row with the CPU
// engine's host sampler, handing the tokens to the sinks) at a large batch, by sampling setting
// and number of sampling threads. An engine whose forward only copies fixed logits stands in for
// a GPU, whose step is short enough that this cost shows (docs/CUDA.md: 1.5-2 ms per step outside
// the engine at batch 256). Prints a markdown table: the median over the decode-only steps of at
// least half the batch of StepReport::iteration, per row and scaled to the whole batch.
//
//   build/benchmarks/scheduler_step_bench [--batch=256] [--vocab=32000] [--steps=48]
//       [--sampling_threads=1,2]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "benchmarks/bench_common.h"
#include "engine/cpu/host_step_sampler.h"
#include "engine/step/engine.h"
#include "scheduler/scheduler.h"

namespace catserve::scheduler {
namespace {

struct Options {
  int batch = 256;
  int vocab = 32000;
  int steps = 48;
  std::vector<int> sampling_threads = {1, 2};
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* name) { return bench::FlagValue(argv[i], name); };
    if (const char* v = value("batch")) {
      o.batch = bench::ParseIntList(v)[0];
    } else if (const char* v = value("vocab")) {
      o.vocab = bench::ParseIntList(v)[0];
    } else if (const char* v = value("steps")) {
      o.steps = bench::ParseIntList(v)[0];
    } else if (const char* v = value("sampling_threads")) {
      o.sampling_threads = bench::ParseIntList(v);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      std::exit(2);
    }
  }
  return o;
}

// Advances every item and writes row i of a fixed set of logits (one token well ahead of a
// near-flat rest, as a trained model mostly gives) for item i: no model, no KV reads.
class LogitsOnlyEngine : public engine::Engine {
 public:
  LogitsOnlyEngine(int vocab, int rows, int sampling_threads)
      : rows_(static_cast<size_t>(rows) * vocab), sampler_(sampling_threads) {
    config_ = bench::BenchModelConfig(64, 1, 1, 32, 1, 1, 1 << 16);
    config_.vocab_size = vocab;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& x : rows_) x = normal(rng);
    for (int r = 0; r < rows; ++r) rows_[static_cast<size_t>(r) * vocab + (r * 97) % vocab] += 25;
  }
  const engine::ModelConfig& config() const override { return config_; }
  engine::KvGeometry kv_geometry(int page_entries) const override {
    return {.layers = 1, .kv_heads = 1, .head_dim = 8, .page_entries = page_entries};
  }
  int threads() const override { return 1; }
  // The fixed rows, drawn from in place as the CPU engine draws (engine::HostStepSampler): no
  // forward and no copy, so the step is the draws alone. (No setting has a repetition penalty,
  // the one thing that writes to a row.)
  absl::Status Step(absl::Span<const engine::StepItem> items, engine::KvPool&,
                    absl::Span<engine::SampledToken> tokens, engine::StepStats*) override {
    const size_t V = config_.vocab_size;
    if (rows_.size() < items.size() * V) return absl::InvalidArgumentError("batch too large");
    for (const engine::StepItem& item : items) item.seq->cached += item.num_tokens;
    sampler_.Sample(items, absl::MakeSpan(rows_).subspan(0, items.size() * V), V, tokens);
    return absl::OkStatus();
  }
  absl::Status StepLogits(absl::Span<const engine::StepItem> items, engine::KvPool&,
                          absl::Span<float> logits, engine::StepStats*) override {
    const size_t V = config_.vocab_size;
    for (size_t i = 0; i < items.size(); ++i) {
      items[i].seq->cached += items[i].num_tokens;
      if (items[i].want_logits) {
        std::memcpy(logits.data() + i * V, rows_.data() + (i * V) % rows_.size(), V * 4);
      }
    }
    return absl::OkStatus();
  }

 private:
  engine::ModelConfig config_;
  std::vector<float> rows_;
  engine::HostStepSampler sampler_;
};

class CountingSink : public GenerationSink {
 public:
  void OnAdmitted() override {}
  void OnToken(const GeneratedToken&) override {}
  void OnFinish(const FinishInfo&) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  void Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

 private:
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// The serving layer's microseconds per row of every step that only decoded (one token per
// sequence) at least half of `batch` sequences: requests arrive while steps run, so the first
// steps may hold fewer, and the last ones do as streams end.
class Recorder : public SchedulerObserver {
 public:
  explicit Recorder(int batch) : batch_(batch) {}
  void OnStep(const StepReport& report, const SchedulerSnapshot&) override {
    if (2 * report.batch_size < batch_ || report.tokens != report.batch_size) return;
    absl::MutexLock lock(&mu_);
    us_per_row_.push_back(absl::ToDoubleMicroseconds(report.iteration) / report.batch_size);
  }
  double MedianPerRow() {
    absl::MutexLock lock(&mu_);
    if (us_per_row_.empty()) return 0;
    std::sort(us_per_row_.begin(), us_per_row_.end());
    return us_per_row_[us_per_row_.size() / 2];
  }
  int steps() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(us_per_row_.size());
  }

 private:
  const int batch_;
  absl::Mutex mu_;
  std::vector<double> us_per_row_ ABSL_GUARDED_BY(mu_);
};

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  struct Setting {
    const char* name;
    engine::SamplingParams params;
    bool logprobs;
  };
  const Setting settings[] = {
      {"greedy", {.temperature = 0.0f}, false},
      {"greedy + logprobs", {.temperature = 0.0f}, true},
      {"temperature 0.8", {.temperature = 0.8f}, false},
      {"top_p 0.95", {.temperature = 0.8f, .top_p = 0.95f}, false},
  };
  std::printf(
      "serving cost per decode step (whole iteration, host sampling included; median per row of "
      "the "
      "decode-only steps of at least %d sequences), batch %d, vocabulary %d\n\n| setting "
      "| sampling threads | steps | per row, us | ms per step of %d |\n|---|---:|---:|---:|---:|\n",
      (o.batch + 1) / 2, o.batch, o.vocab, o.batch);
  for (const Setting& setting : settings) {
    for (int threads : o.sampling_threads) {
      Recorder recorder(o.batch);
      LogitsOnlyEngine engine(o.vocab, o.batch, threads);
      auto sched = Scheduler::Create(&engine,
                                     {.max_queued = o.batch,
                                      .max_running = o.batch,
                                      .max_tokens_per_step = 8 * o.batch,
                                      .kv_pool_pages = 4 * o.batch,
                                      .kv_page_entries = 16},
                                     nullptr, &recorder);
      if (!sched.ok()) {
        std::fprintf(stderr, "%s\n", std::string(sched.status().message()).c_str());
        return 1;
      }
      std::vector<std::shared_ptr<CountingSink>> sinks;
      for (int i = 0; i < o.batch; ++i) {
        GenerationRequest r;
        r.prompt = {3, 4, 5, 6};
        r.max_new_tokens = o.steps;
        r.chunk_size = 16;
        r.ignore_eos = true;
        r.want_logprobs = setting.logprobs;
        r.sampling = setting.params;
        r.sampling.seed = i;
        sinks.push_back(std::make_shared<CountingSink>());
        if (absl::StatusOr<uint64_t> id = (*sched)->Submit(r, sinks.back()); !id.ok()) {
          std::fprintf(stderr, "%s\n", std::string(id.status().message()).c_str());
          return 1;
        }
      }
      for (auto& sink : sinks) sink->Wait();
      const double us = recorder.MedianPerRow();
      std::printf("| %s | %d | %d | %.1f | %.2f |\n", setting.name, threads, recorder.steps(), us,
                  us * o.batch / 1e3);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace catserve::scheduler

int main(int argc, char** argv) { return catserve::scheduler::Main(argc, argv); }
