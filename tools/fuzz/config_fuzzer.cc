// Fuzzes config.json parsing (engine/config.cc): any text either fails with INVALID_ARGUMENT or
// gives a config whose every invariant of config.h holds and whose footprint (engine/
// model_footprint.cc) is computed without overflow.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model/config.h"
#include "engine/model/model_footprint.h"
#include "tools/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using catserve::engine::ModelConfig;
  absl::StatusOr<ModelConfig> config = catserve::engine::ParseModelConfig(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(config.status().message().find('\n') == std::string_view::npos);
    return 0;
  }
  const ModelConfig& c = *config;
  FUZZ_CHECK(c.head_dim() > 0 && c.head_dim() % 2 == 0);
  FUZZ_CHECK(c.compressor_head_dim() > 0 && c.compressor_head_dim() % 2 == 0);
  FUZZ_CHECK(c.num_heads % c.num_kv_heads == 0);
  FUZZ_CHECK(c.decoder_intermediate_size() >= 1 && c.decoder_intermediate_size() <= 1 << 20);
  FUZZ_CHECK(c.compressor_intermediate_size() >= 1 && c.compressor_intermediate_size() <= 1 << 20);
  FUZZ_CHECK(!c.chunk_sizes().empty() && c.chunk_sizes().back() == c.max_chunk_size);
  FUZZ_CHECK(c.serves_chunk_size(c.max_chunk_size) &&
             c.max_chunk_size <= c.max_position_embeddings);
  for (int id : {c.pad_token_id, c.bos_token_id, c.eos_token_id}) {
    FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  }
  FUZZ_CHECK(c.norm_eps > 0 && c.rope_theta > 0 && c.hidden_ratio > 0);
  absl::StatusOr<catserve::engine::ModelFootprint> footprint =
      catserve::engine::ComputeModelFootprint(c);
  FUZZ_CHECK(footprint.ok());
  FUZZ_CHECK(footprint->loaded_bytes >= footprint->parameters * sizeof(float));
  return 0;
}
