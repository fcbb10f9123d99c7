// --device=cuda against the real daemon binary. Without a GPU (or in a build without the CUDA
// backend) the process exits 1 with the reason on stderr and never crashes; with one it serves
// and says which GPU and how much memory the weights and the pool take.
#include <stdio.h>
#include <sys/wait.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/load_engine.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

struct Exit {
  int code = -1;  // exit status, or 128 + signal
  std::string output;
};

Exit RunToExit(const std::string& command) {
  Exit e;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return e;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) e.output.append(buffer, n);
  const int status = pclose(pipe);
  e.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return e;
}

TEST(DeviceFlagTest, CudaServesOnAGpuElseExitsOneWithTheReason) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start({"--device=cuda"});
  if (server.ok()) {  // a GPU is present
    EXPECT_TRUE(absl::StrContains((*server)->log(), "catserve: device cuda: ")) << (*server)->log();
    EXPECT_GT((*server)->Metric("catserve_weights_bytes").value_or(0), 0);
    return;
  }
  const Exit e = RunToExit(absl::StrCat(
      CATSERVE_SERVER_BIN, " --device=cuda --model_dir=", CATSERVE_FIXTURES_DIR,
      "/tiny --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --openai_listen=127.0.0.1:0"));
  EXPECT_EQ(e.code, 1) << e.output;
  const char* reason =
      engine::CudaBackendBuilt() ? "no CUDA device: " : "this build has no CUDA backend";
  EXPECT_TRUE(absl::StrContains(e.output, reason)) << e.output;
  EXPECT_FALSE(absl::StrContains(e.output, "catserve: ready")) << e.output;
}

TEST(DeviceFlagTest, GpuMemoryFractionOnTheCpuExitsOne) {
  const Exit e = RunToExit(absl::StrCat(
      CATSERVE_SERVER_BIN, " --gpu_memory_fraction=0.5 --model_dir=", CATSERVE_FIXTURES_DIR,
      "/tiny --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --openai_listen=127.0.0.1:0"));
  EXPECT_EQ(e.code, 1) << e.output;
  EXPECT_TRUE(absl::StrContains(e.output, "--gpu_memory_fraction=0.5 needs --device=cuda"))
      << e.output;
}

}  // namespace
}  // namespace catserve::testing
