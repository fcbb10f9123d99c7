#ifndef CATSERVE_BENCHMARKS_BENCH_COMMON_H_
#define CATSERVE_BENCHMARKS_BENCH_COMMON_H_

// What the benchmark programs share: their `--name=value` arguments and the model shapes.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/model/config.h"

namespace catserve::bench {

// "1,8,32" -> {1, 8, 32}; exits with a message on anything but positive integers.
inline std::vector<int> ParseIntList(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int v;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      std::fprintf(stderr, "not a list of positive numbers: %s\n", s.c_str());
      std::exit(2);
    }
    out.push_back(v);
  }
  return out;
}

// The value of `--name=value` if `arg` is that flag, else nullptr.
inline const char* FlagValue(const char* arg, const char* name) {
  const std::string prefix = std::string("--") + name + "=";
  return std::string(arg).rfind(prefix, 0) == 0 ? arg + prefix.size() : nullptr;
}

// A decoder of `width` x `layers` x `heads` (MHA) with a compressor of `cwidth` x `clayers` x
// `cheads`, vocab 32000, chunk sizes 1..16.
inline engine::ModelConfig BenchModelConfig(int width, int layers, int heads, int cwidth,
                                            int clayers, int cheads, int max_positions) {
  engine::ModelConfig c;
  c.vocab_size = 32000;
  c.hidden_size = width;
  c.num_hidden_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = heads;
  c.compressor_hidden_size = cwidth;
  c.compressor_num_layers = clayers;
  c.compressor_num_heads = cheads;
  c.max_chunk_size = 16;
  c.min_train_chunk_size = 1;
  c.max_position_embeddings = max_positions;
  return c;
}

}  // namespace catserve::bench

#endif  // CATSERVE_BENCHMARKS_BENCH_COMMON_H_
