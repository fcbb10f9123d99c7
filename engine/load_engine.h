#ifndef CATSERVE_ENGINE_LOAD_ENGINE_H_
#define CATSERVE_ENGINE_LOAD_ENGINE_H_

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "engine/step/engine.h"

namespace catserve::engine {

// True when this build contains the CUDA backend (CMake option CATSERVE_CUDA). Whether a GPU is
// present is only known when LoadEngine tries one.
bool CudaBackendBuilt();

// Loads config.json and the safetensors weights, checks them against each other, and builds the
// engine of `options.device`: the one place that knows every backend. FAILED_PRECONDITION for
// device kCuda when this build has no CUDA backend or no GPU is usable.
absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options = {});

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_LOAD_ENGINE_H_
