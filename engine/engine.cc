#include "engine/engine.h"

#include <utility>

#include "absl/status/status.h"
#include "engine/cpu_engine.h"
#include "engine/weights.h"
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

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::filesystem::path& model_dir,
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

absl::StatusOr<KvPool> Engine::CreateKvPool(int num_pages, int page_entries) const {
  return KvPool::Create(kv_geometry(page_entries), num_pages);
}

absl::StatusOr<DeviceInfo> Engine::device_info() const { return DeviceInfo{.name = "cpu"}; }

}  // namespace catserve::engine
