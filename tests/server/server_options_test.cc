#include "server/server_options.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/load_engine.h"
#include "engine/step/engine.h"
#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(ServerOptionsTest, ParsesTiers) {
  absl::StatusOr<std::map<std::string, Tier>> tiers =
      ParseTiers("quality=2, balanced=8:16,throughput=16, same=4:4");
  ASSERT_TRUE(tiers.ok()) << tiers.status();
  EXPECT_EQ(
      *tiers,
      (std::map<std::string, Tier>{
          {"quality", {2, 2}}, {"balanced", {8, 16}}, {"throughput", {16, 16}}, {"same", {4, 4}}}));
  EXPECT_EQ(FormatTiers(*tiers), "balanced=8:16,quality=2,same=4,throughput=16");
  EXPECT_TRUE(ParseTiers("")->empty());
  EXPECT_EQ(FormatTiers(ServerOptions().tiers), "balanced=8:16,quality=2,throughput=16");
}

TEST(ServerOptionsTest, RejectsBadTiers) {
  for (const char* bad :
       {"quality", "quality=", "=2", "quality=0", "quality=x", "a b=2", "quality=2,quality=4",
        "balanced=8:4", "balanced=8:", "balanced=:16", "balanced=8:16:32"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(ParseTiers(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ServerOptionsTest, PressurePolicyMustBeKnown) {
  ServerOptions o;
  for (const char* policy : {"queue", "coarser", "degrade", "preempt"}) {
    o.pressure_policy = policy;
    EXPECT_TRUE(ValidateServerOptions(o).ok()) << policy;
  }
  o.pressure_policy = "evict";
  absl::Status s = ValidateServerOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--pressure_policy"), std::string::npos) << s;
}

TEST(ServerOptionsTest, GpuMemoryFractionNeedsCudaAndAShare) {
  ServerOptions o;
  o.gpu_memory_fraction = 0.5;
  absl::Status s = ValidateServerOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--gpu_memory_fraction=0.5 needs --device=cuda"), std::string::npos)
      << s;
  o.device = "cuda";
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    o.gpu_memory_fraction = bad;
    s = ValidateServerOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("--gpu_memory_fraction="), std::string::npos) << s;
  }
  o.gpu_memory_fraction = 0.9;
  EXPECT_EQ(ValidateServerOptions(o).code(), engine::CudaBackendBuilt()
                                                 ? absl::StatusCode::kOk
                                                 : absl::StatusCode::kFailedPrecondition);
}

TEST(ServerOptionsTest, ParsesOnOffFlags) {
  EXPECT_TRUE(ServerOptions().cuda_graphs);
  EXPECT_TRUE(ServerOptions().prefix_cache);
  EXPECT_TRUE(*ParseOnOffFlag("cuda_graphs", "on"));
  EXPECT_FALSE(*ParseOnOffFlag("cuda_graphs", "off"));
  const absl::Status bad = ParseOnOffFlag("prefix_cache", "yes").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "--prefix_cache=yes is invalid: expected on or off");
}

TEST(ServerOptionsTest, ParsesCudaAttention) {
  EXPECT_EQ(ServerOptions().cuda_attention, engine::CudaAttention::kAuto);
  EXPECT_EQ(*ParseCudaAttentionFlag("auto"), engine::CudaAttention::kAuto);
  EXPECT_EQ(*ParseCudaAttentionFlag("split_kv"), engine::CudaAttention::kSplitKv);
  const absl::Status bad = ParseCudaAttentionFlag("flashinfer").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "--cuda_attention=flashinfer is invalid: expected auto or split_kv");
}

TEST(ServerOptionsTest, ParsesKvDtype) {
  EXPECT_EQ(ServerOptions().kv_dtype, engine::KvDtype::kBf16);
  EXPECT_EQ(*ParseKvDtypeFlag("fp32"), engine::KvDtype::kFp32);
  EXPECT_EQ(*ParseKvDtypeFlag("fp16"), engine::KvDtype::kFp16);
  EXPECT_EQ(*ParseKvDtypeFlag("bf16"), engine::KvDtype::kBf16);
  const absl::Status bad = ParseKvDtypeFlag("fp8").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "--kv_dtype=fp8 is invalid: expected bf16, fp16 or fp32");
  ServerOptions o;
  o.device = "cuda";
  o.kv_dtype = engine::KvDtype::kFp32;
  EXPECT_EQ(ValidateServerOptions(o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateServerOptions(o).message(),
            "--kv_dtype=fp32 is invalid with --device=cuda: the CUDA backend stores bf16 KV");
  o.device = "cpu";
  EXPECT_TRUE(ValidateServerOptions(o).ok());
}

TEST(ServerOptionsTest, ValidatesFlags) {
  ServerOptions o;
  EXPECT_TRUE(ValidateServerOptions(o).ok());
  o.device = "cuda";
  // A CUDA build accepts the flag (a missing GPU is the engine's to report); a CPU-only build
  // refuses it here.
  EXPECT_EQ(ValidateServerOptions(o).code(), engine::CudaBackendBuilt()
                                                 ? absl::StatusCode::kOk
                                                 : absl::StatusCode::kFailedPrecondition);
  o.device = "tpu";
  EXPECT_EQ(ValidateServerOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = ServerOptions();
  o.kv_pool_mb = 0;
  EXPECT_NE(ValidateServerOptions(o).message().find("--kv_pool_mb=0"), std::string::npos);
  o = ServerOptions();
  o.http_listen = "0.0.0.0:99999";
  EXPECT_EQ(ValidateServerOptions(o).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ServerOptionsTest, ChunkSizesMustBeServed) {
  engine::ModelConfig config;  // serves 2, 4, 8, 16
  ServerOptions o;
  EXPECT_TRUE(ValidateChunkSizes(o, config).ok());
  o.tiers["tiny"] = {1, 1};
  absl::Status s = ValidateChunkSizes(o, config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("served chunk sizes: 2, 4, 8, 16"), std::string::npos) << s;
  o.tiers["tiny"] = {2, 32};  // the coarsest size must be served too
  s = ValidateChunkSizes(o, config);
  EXPECT_NE(s.message().find("chunk size 32"), std::string::npos) << s;
}

TEST(ServerOptionsTest, ParsesCheckWeights) {
  EXPECT_EQ(ServerOptions().check_weights, engine::WeightCheck::kAuto);
  EXPECT_EQ(*ParseWeightCheck("auto"), engine::WeightCheck::kAuto);
  EXPECT_EQ(*ParseWeightCheck("true"), engine::WeightCheck::kOn);
  EXPECT_EQ(*ParseWeightCheck("false"), engine::WeightCheck::kOff);
  for (const char* bad : {"", "on", "TRUE", "1"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(ParseWeightCheck(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ParseWeightCheck(std::string(1000, 'x')).status().message().size(),
            std::string("--check_weights=").size() + 64 +
                std::string(": must be auto, true or false").size());
}

}  // namespace
}  // namespace catserve::server

namespace catserve::server {
namespace {

// Every numeric flag has an upper bound too, and the message gives the whole range.
TEST(ServerOptionsTest, NumericFlagsHaveRangesAndTheMessageSaysThem) {
  struct Case {
    std::function<void(ServerOptions&)> set;
    const char* message_part;
  };
  const std::vector<Case> cases = {
      {[](ServerOptions& o) { o.threads = 100000; },
       "--threads=100000 is out of range: expected 0.."},
      {[](ServerOptions& o) { o.sampling_threads = -1; }, "--sampling_threads=-1 is out of range"},
      {[](ServerOptions& o) { o.kv_page_entries = 5000; },
       "--kv_page_entries=5000 is out of range: expected 1..4096"},
      {[](ServerOptions& o) { o.max_running = 70000; },
       "--max_running=70000 is out of range: expected 1..65536"},
      {[](ServerOptions& o) { o.max_tokens_per_step = 0; },
       "--max_tokens_per_step=0 is out of range: expected 1..1048576"},
      {[](ServerOptions& o) { o.drain_grace_seconds = 100000; },
       "--drain_grace_seconds=100000 is out of range: expected 0..86400"},
      {[](ServerOptions& o) { o.tls.reload_seconds = 0; },
       "--tls_reload_seconds=0 is out of range: expected 1..86400"},
  };
  for (const Case& c : cases) {
    ServerOptions o;
    c.set(o);
    const absl::Status s = ValidateServerOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message_part;
    EXPECT_NE(s.message().find(c.message_part), std::string::npos) << s;
  }
  ServerOptions at_bounds;
  at_bounds.kv_page_entries = 4096;
  at_bounds.max_running = 65536;
  at_bounds.drain_grace_seconds = 86400;
  EXPECT_TRUE(ValidateServerOptions(at_bounds).ok()) << ValidateServerOptions(at_bounds);
}

TEST(ServerOptionsTest, PromptAndNewTokenLimitsAreBoundedByTheModelsContext) {
  engine::ModelConfig config;
  config.max_position_embeddings = 512;
  ServerOptions o;
  o.max_prompt_tokens = 511;
  o.max_new_tokens = 511;
  EXPECT_TRUE(ValidateModelLimits(o, config).ok());
  o.max_prompt_tokens = 512;
  EXPECT_EQ(ValidateModelLimits(o, config).message(),
            "--max_prompt_tokens=512 is out of range: expected 0..511 (0 = the model's limit; the "
            "model's context is one more)");
}

}  // namespace
}  // namespace catserve::server
