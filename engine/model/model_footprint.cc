#include "engine/model/model_footprint.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace catserve::engine {
namespace {

// A count of elements in overflow-checked uint64 arithmetic; once it overflows it stays so.
class ElementCount {
 public:
  // Adds the product of `dims`.
  void Add(std::initializer_list<uint64_t> dims) {
    uint64_t product = 1;
    for (uint64_t d : dims) overflow_ |= __builtin_mul_overflow(product, d, &product);
    overflow_ |= __builtin_add_overflow(value_, product, &value_);
  }
  // Adds `times` copies of `other`.
  void AddTimes(uint64_t times, const ElementCount& other) {
    overflow_ |= other.overflow_;
    Add({times, other.value_});
  }

  bool overflow() const { return overflow_; }
  uint64_t value() const { return value_; }

 private:
  uint64_t value_ = 0;
  bool overflow_ = false;
};

// One transformer block's tensors, as LoadModelWeights reads them.
ElementCount BlockElements(uint64_t width, uint64_t heads, uint64_t kv_heads, uint64_t intermediate,
                           bool qkv_bias, bool qk_norm) {
  const uint64_t head_dim = width / heads;
  ElementCount n;
  n.Add({width});                         // attn_norm
  n.Add({heads, head_dim, width});        // q_proj
  n.Add({2, kv_heads, head_dim, width});  // k_proj, v_proj
  n.Add({width, heads, head_dim});        // o_proj
  if (qkv_bias) {
    n.Add({heads, head_dim});
    n.Add({2, kv_heads, head_dim});
  }
  if (qk_norm) n.Add({2, head_dim});
  n.Add({width});                   // mlp_norm
  n.Add({2, intermediate, width});  // gate_proj, up_proj
  n.Add({width, intermediate});     // down_proj
  return n;
}

}  // namespace

absl::StatusOr<ModelFootprint> ComputeModelFootprint(const ModelConfig& c) {
  for (int size : {c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_heads, c.num_kv_heads,
                   c.compressor_hidden_size, c.compressor_num_layers, c.compressor_num_heads,
                   c.max_chunk_size, c.max_position_embeddings, c.decoder_intermediate_size(),
                   c.compressor_intermediate_size()}) {
    if (size <= 0) return absl::InvalidArgumentError("the config has a size that is not positive");
  }
  const uint64_t V = c.vocab_size, D = c.hidden_size, Dc = c.compressor_hidden_size;
  const uint64_t M = c.max_chunk_size, P = c.max_position_embeddings;
  ElementCount params;
  // Compressor.
  params.Add({V, Dc});      // wte
  params.Add({P, Dc});      // pos_tokens
  params.Add({M + 1, Dc});  // adaptive_tokens
  params.AddTimes(
      c.compressor_num_layers,
      BlockElements(Dc, c.compressor_num_heads, c.compressor_kv_heads(),
                    c.compressor_intermediate_size(), c.compressor_qkv_bias, c.compressor_qk_norm));
  params.Add({Dc});        // norm
  params.Add({D, M, Dc});  // proj_fx
  // Decoder.
  params.Add({V, D});      // embeddings
  params.Add({D});         // separator
  params.Add({M + 1, D});  // adaptive_token
  params.AddTimes(c.num_hidden_layers,
                  BlockElements(D, c.num_heads, c.num_kv_heads, c.decoder_intermediate_size(),
                                c.qkv_bias, c.qk_norm));
  params.Add({D});                                 // norm
  if (!c.tie_word_embeddings) params.Add({V, D});  // lm_head

  // What is held beyond the parameters: the tied lm_head copy and proj_fx resized to each
  // smaller served chunk size.
  ElementCount loaded = params;
  if (c.tie_word_embeddings) loaded.Add({V, D});
  for (int l : c.chunk_sizes()) {
    if (static_cast<uint64_t>(l) < M) loaded.Add({D, static_cast<uint64_t>(l), Dc});
  }
  ElementCount bytes;
  bytes.AddTimes(sizeof(float), loaded);
  if (bytes.overflow()) {
    return absl::InvalidArgumentError(
        "the config's sizes overflow 64 bits when the model's weights are counted");
  }
  return ModelFootprint{.parameters = params.value(), .loaded_bytes = bytes.value()};
}

absl::Status CheckModelFootprint(const ModelFootprint& footprint, uint64_t tensor_bytes,
                                 uint64_t memory_bytes, std::string_view config_file,
                                 std::string_view weights_source) {
  // parameters * 2 cannot overflow: loaded_bytes >= parameters * 4 did not.
  if (tensor_bytes < footprint.parameters * 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the config implies %d parameters, at least %d bytes of weights, but %s holds %d "
        "bytes of tensor data; config.json does not match the weights",
        config_file, footprint.parameters, footprint.parameters * 2, weights_source, tensor_bytes));
  }
  if (footprint.loaded_bytes > memory_bytes) {
    constexpr double kMiB = 1 << 20;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: the model takes %.0f MiB of memory once loaded (fp32) but this machine has %.0f MiB",
        config_file, footprint.loaded_bytes / kMiB, memory_bytes / kMiB));
  }
  return absl::OkStatus();
}

uint64_t MemoryLimitBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  uint64_t limit = pages > 0 && page_size > 0
                       ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size)
                       : UINT64_MAX;
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  uint64_t cgroup_limit = 0;
  if (cgroup >> cgroup_limit && cgroup_limit > 0) limit = std::min(limit, cgroup_limit);
  return limit;
}

}  // namespace catserve::engine
