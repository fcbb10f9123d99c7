#include "engine/load_engine.h"

#include <utility>

#include "absl/status/status.h"
#include "engine/cpu/cpu_engine.h"
#include "engine/model/weights.h"
#ifdef CATSERVE_HAVE_CUDA
#include "engine/cuda/cuda_engine.h"
#endif

namespace catserve::engine {

bool CudaBackendBuilt() {
#ifdef CATSERVE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& options) {
  if (options.device == Device::kCuda && !CudaBackendBuilt()) {
    return absl::FailedPreconditionError(
        "this build has no CUDA backend (configure with -DCATSERVE_CUDA=ON where nvcc exists)");
  }
#ifdef CATSERVE_HAVE_CUDA
  if (options.device == Device::kCuda) {
    absl::StatusOr<Model> model = LoadModel(model_dir, options.check_weights);
    if (!model.ok()) return model.status();
    return CreateCudaEngine(model->config, model->weights, options);
  }
#endif
  absl::StatusOr<std::unique_ptr<CpuEngine>> engine = CpuEngine::Load(model_dir, options);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

}  // namespace catserve::engine
