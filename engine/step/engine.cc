#include "engine/step/engine.h"

namespace catserve::engine {

absl::StatusOr<KvPool> Engine::CreateKvPool(int num_pages, int page_entries) const {
  return KvPool::Create(kv_geometry(page_entries), num_pages);
}

absl::StatusOr<DeviceInfo> Engine::device_info() const { return DeviceInfo{.name = "cpu"}; }

}  // namespace catserve::engine
