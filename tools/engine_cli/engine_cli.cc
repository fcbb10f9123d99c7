// catserve-engine: the CPU engine offline, one sequence at a time (no server, no scheduler).
//
//   catserve-engine generate --model_dir=D --prompt="..." --chunk_size=L --max_tokens=N
//                            [--temperature=0.8 --seed=1 --top_k=0 --top_p=1 --print_ids]
//       Generates with GenerateAlone and prints the prompt followed by the generated text.
//   catserve-engine score --model_dir=D --chunk_size=L --tokens_file=F
//       F: one sequence of space-separated token ids a line. For each line prints
//       {"line": i, "nll": sum, "tokens": n}: the negative log-likelihood (natural log) of tokens
//       1..n-1 given the ones before them, n-1 scored tokens (the first token is context only).
//       Incremental: the first token is prefilled, then every later token is teacher-forced one
//       step at a time, exactly as generation runs.
//   catserve-engine recall --model_dir=D --chunk_size=L --cases_file=F
//       F: a line per case, "prompt ids<TAB>expected answer ids". Greedily generates as many tokens
//       as the answer has and prints {"case": i, "match": bool, "got": [...]} a line, then
//       {"summary": true, "cases": n, "exact_match": k, "accuracy": k/n}.
//
// Common flags: --threads (engine compute threads; 0 = one per hardware thread), --kv_dtype
// (fp32, bf16 or fp16 KV cache).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/generate.h"
#include "engine/kv/kv_pool.h"
#include "engine/kv/sequence.h"
#include "engine/load_engine.h"
#include "engine/model/tokenizer.h"
#include "engine/sampling/sampler.h"
#include "engine/step/engine.h"

ABSL_FLAG(std::string, model_dir, "models/cat-small-en",
          "Model directory (config.json, "
          "model.safetensors, tokenizer.model)");
ABSL_FLAG(int, chunk_size, 4, "Chunk size l (one of the model's trained sizes)");
ABSL_FLAG(std::string, prompt, "", "generate: prompt text");
ABSL_FLAG(int, max_tokens, 64, "generate: most tokens to generate");
ABSL_FLAG(float, temperature, 0.0f, "generate: 0 = greedy");
ABSL_FLAG(int, top_k, 0, "generate: 0 = off");
ABSL_FLAG(float, top_p, 1.0f, "generate: 1 = off");
ABSL_FLAG(uint64_t, seed, 0, "generate: sampling seed");
ABSL_FLAG(bool, stop_at_eos, true, "generate: stop after the EOS token");
ABSL_FLAG(bool, print_ids, false, "generate: also print the generated token ids");
ABSL_FLAG(std::string, tokens_file, "", "score: token ids, a sequence a line");
ABSL_FLAG(std::string, cases_file, "", "recall: 'prompt ids<TAB>answer ids' a line");
ABSL_FLAG(int, threads, 1, "Engine compute threads (0 = one per hardware thread)");
ABSL_FLAG(std::string, kv_dtype, "fp32",
          "How the KV cache stores keys and values: fp32, bf16, fp16");

namespace {

using catserve::engine::Engine;
using catserve::engine::KvPool;
using catserve::engine::PeakPages;
using catserve::engine::SamplingParams;
using catserve::engine::SequenceState;
using catserve::engine::StepItem;
using catserve::engine::Tokenizer;

int Fail(const absl::Status& s) {
  std::cerr << "catserve-engine: " << s << "\n";
  return 1;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  long long v;
  while (in >> v) ids.push_back(static_cast<int32_t>(v));
  if (!in.eof()) return absl::InvalidArgumentError("bad token id list: " + text);
  return ids;
}

absl::StatusOr<std::unique_ptr<Engine>> LoadEngine() {
  catserve::engine::EngineOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<catserve::engine::KvDtype> kv_dtype =
      catserve::engine::ParseKvDtype(absl::GetFlag(FLAGS_kv_dtype));
  if (!kv_dtype.ok()) return kv_dtype.status();
  options.kv_dtype = *kv_dtype;
  return LoadEngine(absl::GetFlag(FLAGS_model_dir), options);
}

int Generate() {
  auto engine = LoadEngine();
  if (!engine.ok()) return Fail(engine.status());
  const std::filesystem::path dir = absl::GetFlag(FLAGS_model_dir);
  auto tokenizer = Tokenizer::Load(dir / "tokenizer.model");
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  auto ids = (*tokenizer)->Encode(prompt);
  if (!ids.ok()) return Fail(ids.status());
  SamplingParams sampling;
  sampling.temperature = absl::GetFlag(FLAGS_temperature);
  sampling.top_k = absl::GetFlag(FLAGS_top_k);
  sampling.top_p = absl::GetFlag(FLAGS_top_p);
  sampling.seed = absl::GetFlag(FLAGS_seed);
  std::vector<int32_t> stop;
  if (absl::GetFlag(FLAGS_stop_at_eos)) stop.push_back((*engine)->config().eos_token_id);
  auto out = catserve::engine::GenerateAlone(**engine, *ids, absl::GetFlag(FLAGS_chunk_size),
                                             absl::GetFlag(FLAGS_max_tokens), sampling, stop);
  if (!out.ok()) return Fail(out.status());
  std::vector<int32_t> all = *ids;
  all.insert(all.end(), out->begin(), out->end());
  if (!all.empty() && all.back() == (*engine)->config().eos_token_id) all.pop_back();
  auto text = (*tokenizer)->Decode(all);
  if (!text.ok()) return Fail(text.status());
  std::cout << *text << "\n";
  if (absl::GetFlag(FLAGS_print_ids)) {
    std::cout << "ids:";
    for (int32_t t : *out) std::cout << " " << t;
    std::cout << "\n";
  }
  return 0;
}

// Sum of -log p(t_i | t_<i) for i = 1..n-1, running the engine incrementally.
absl::StatusOr<double> ScoreSequence(Engine& engine, const std::vector<int32_t>& tokens,
                                     int chunk_size) {
  const int n = static_cast<int>(tokens.size());
  const int vocab = engine.config().vocab_size;
  if (!engine.config().serves_chunk_size(chunk_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk size ", chunk_size, " is not served by the model"));
  }
  constexpr int kPageEntries = 16;
  absl::StatusOr<KvPool> pool = KvPool::Create(
      engine.kv_geometry(kPageEntries), PeakPages(std::max(n - 1, 1), chunk_size, kPageEntries));
  if (!pool.ok()) return pool.status();
  SequenceState seq;
  seq.chunk_size = chunk_size;
  seq.tokens = tokens;
  std::vector<float> logits(vocab);
  double nll = 0;
  absl::Status status;
  for (int i = 0; i + 1 < n; ++i) {
    if (!ReservePages(*pool, seq, i + 1)) {
      status = absl::InternalError("KV pool too small");
      break;
    }
    StepItem item{&seq, 1, true};
    status = engine.StepLogits({&item, 1}, *pool, absl::MakeSpan(logits));
    if (!status.ok()) break;
    TrimPages(*pool, seq);
    // log-softmax in double.
    float mx = logits[0];
    for (float v : logits) mx = std::max(mx, v);
    double sum = 0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
    nll += -(static_cast<double>(logits[tokens[i + 1]]) - mx - std::log(sum));
  }
  pool->ReleaseAll(seq.pages);
  if (!status.ok()) return status;
  return nll;
}

int Score() {
  auto engine = LoadEngine();
  if (!engine.ok()) return Fail(engine.status());
  std::ifstream in(absl::GetFlag(FLAGS_tokens_file));
  if (!in) return Fail(absl::NotFoundError("cannot read --tokens_file"));
  std::string line;
  for (int i = 0; std::getline(in, line); ++i) {
    auto ids = ParseIds(line);
    if (!ids.ok()) return Fail(ids.status());
    auto nll = ScoreSequence(**engine, *ids, absl::GetFlag(FLAGS_chunk_size));
    if (!nll.ok()) return Fail(nll.status());
    std::printf("{\"line\": %d, \"nll\": %.6f, \"tokens\": %d}\n", i, *nll,
                ids->empty() ? 0 : static_cast<int>(ids->size()) - 1);
    std::fflush(stdout);
  }
  return 0;
}

int Recall() {
  auto engine = LoadEngine();
  if (!engine.ok()) return Fail(engine.status());
  std::ifstream in(absl::GetFlag(FLAGS_cases_file));
  if (!in) return Fail(absl::NotFoundError("cannot read --cases_file"));
  SamplingParams greedy;
  greedy.temperature = 0;
  std::string line;
  int cases = 0, matches = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> parts = absl::StrSplit(line, '\t');
    if (parts.size() != 2) return Fail(absl::InvalidArgumentError("case line needs one TAB"));
    auto prompt = ParseIds(parts[0]);
    auto answer = ParseIds(parts[1]);
    if (!prompt.ok()) return Fail(prompt.status());
    if (!answer.ok()) return Fail(answer.status());
    auto got = catserve::engine::GenerateAlone(**engine, *prompt, absl::GetFlag(FLAGS_chunk_size),
                                               static_cast<int>(answer->size()), greedy);
    if (!got.ok()) return Fail(got.status());
    const bool match = *got == *answer;
    matches += match;
    std::printf("{\"case\": %d, \"match\": %s, \"got\": [", cases, match ? "true" : "false");
    for (size_t i = 0; i < got->size(); ++i) std::printf("%s%d", i ? ", " : "", (*got)[i]);
    std::printf("]}\n");
    ++cases;
  }
  std::printf("{\"summary\": true, \"cases\": %d, \"exact_match\": %d, \"accuracy\": %.6f}\n",
              cases, matches, cases ? static_cast<double>(matches) / cases : 0.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "catserve-engine generate|score|recall --model_dir=D --chunk_size=L [...]; see the top of "
      "tools/engine_cli/engine_cli.cc");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << "usage: catserve-engine generate|score|recall [flags]; --help for flags\n";
    return 2;
  }
  const std::string command = args[1];
  if (command == "generate") return Generate();
  if (command == "score") return Score();
  if (command == "recall") return Recall();
  std::cerr << "catserve-engine: unknown command '" << command << "'\n";
  return 2;
}
