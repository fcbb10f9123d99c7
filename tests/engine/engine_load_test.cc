// LoadEngine picks the backend: the CPU engine by default; device=cuda is FAILED_PRECONDITION
// with a message that says why when the build has no CUDA backend or the machine has no GPU.
#include <filesystem>

#include "engine/load_engine.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"

namespace catserve::engine {
namespace {

const std::filesystem::path kTiny = std::filesystem::path(CATSERVE_FIXTURES_DIR) / "tiny";

TEST(EngineLoadTest, CpuByDefaultWithFp32Pages) {
  auto engine = LoadEngine(kTiny, {.threads = 1});
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->kv_geometry(16).bytes_per_value(), 4);
  auto pool = (*engine)->CreateKvPool(4, 16);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->arena_location(), KvArena::Location::kHost);
}

TEST(EngineLoadTest, CudaWithoutBackendOrDeviceSaysWhich) {
  auto engine = LoadEngine(kTiny, {.device = Device::kCuda});
  if (engine.ok()) {
    EXPECT_TRUE(CudaBackendBuilt());
    EXPECT_EQ((*engine)->kv_geometry(16).bytes_per_value(), 2);
    return;
  }
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
  const char* const expected = CudaBackendBuilt() ? "no CUDA device" : "no CUDA backend";
  EXPECT_NE(engine.status().message().find(expected), std::string::npos) << engine.status();
}

}  // namespace
}  // namespace catserve::engine
