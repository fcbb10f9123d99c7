#ifndef CATSERVE_ENGINE_GENERATE_H_
#define CATSERVE_ENGINE_GENERATE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"
#include "engine/step/engine.h"

namespace catserve::engine {

// One sequence generated alone, the plain way: prefill the prompt in one step, then one token a
// step. The oracle for the scheduler and server ("batching changes nothing") and the engine of
// the offline `catserve-engine generate` command (tools/engine_cli). Stops after `max_new_tokens`
// or right after emitting a token of `stop_ids`; returns the generated ids (the stop id included).
absl::StatusOr<std::vector<int32_t>> GenerateAlone(Engine& engine, absl::Span<const int32_t> prompt,
                                                   int chunk_size, int max_new_tokens,
                                                   const SamplingParams& sampling,
                                                   absl::Span<const int32_t> stop_ids = {});

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_GENERATE_H_
