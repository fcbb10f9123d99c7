// ModelFootprint: what a model's weights take, computed from its config alone, so that a
// config.json that does not match its weights, or a model too big for the machine, is refused
// before anything is allocated.
#ifndef CATSERVE_ENGINE_MODEL_MODEL_FOOTPRINT_H_
#define CATSERVE_ENGINE_MODEL_MODEL_FOOTPRINT_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/model/config.h"

namespace catserve::engine {

struct ModelFootprint {
  // Elements of every tensor the config implies (the tensors LoadModelWeights reads).
  uint64_t parameters = 0;
  // Bytes LoadModelWeights holds once loaded: every parameter in fp32, plus proj_fx resized for
  // each served chunk size below max_chunk_size, plus the lm_head copy of tied embeddings.
  uint64_t loaded_bytes = 0;
};

// The footprint of `config`. Every product and sum is overflow-checked: INVALID_ARGUMENT when one
// overflows 64 bits or a size is not positive (impossible for a config that passed
// ParseModelConfig's ranges, possible for a hand-built one, whose hidden_ratio must still lie in
// its range when intermediate_size is unset).
absl::StatusOr<ModelFootprint> ComputeModelFootprint(const ModelConfig& config);

// Checks a footprint against the weights found and the memory there is. `tensor_bytes` is the
// size of the safetensors data, whose every float tensor is F32, F16 or BF16, so it holds between
// 2 and 4 bytes per parameter: fewer than 2 bytes per parameter means config.json asks for more
// than the weights hold (INVALID_ARGUMENT naming `config_file`). More than `memory_bytes` of
// loaded_bytes is RESOURCE_EXHAUSTED.
absl::Status CheckModelFootprint(const ModelFootprint& footprint, uint64_t tensor_bytes,
                                 uint64_t memory_bytes, std::string_view config_file,
                                 std::string_view weights_source);

// The memory this process may use: the machine's physical memory, or the cgroup v2 limit
// (/sys/fs/cgroup/memory.max, what a container's memory limit sets) when that is lower.
uint64_t MemoryLimitBytes();

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_MODEL_FOOTPRINT_H_
