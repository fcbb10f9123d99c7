#ifndef CATSERVE_TESTS_SUPPORT_RANDOM_MODEL_H_
#define CATSERVE_TESTS_SUPPORT_RANDOM_MODEL_H_

#include <cstdint>

#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace catserve::engine {

// Weights of the shape `config` implies, drawn from a seeded normal distribution, for tests and
// benchmarks of realistic shapes without weight files. Norm weights are near 1.
ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed);

}  // namespace catserve::engine

#endif  // CATSERVE_TESTS_SUPPORT_RANDOM_MODEL_H_
