#include "server/server_options.h"

#include "gtest/gtest.h"

namespace catserve::server {
namespace {

TEST(ServerOptionsTest, ParsesTiers) {
  absl::StatusOr<std::map<std::string, int>> tiers =
      ParseTiers("quality=2, balanced=8,throughput=16");
  ASSERT_TRUE(tiers.ok()) << tiers.status();
  EXPECT_EQ(*tiers,
            (std::map<std::string, int>{{"quality", 2}, {"balanced", 8}, {"throughput", 16}}));
  EXPECT_EQ(FormatTiers(*tiers), "balanced=8,quality=2,throughput=16");
  EXPECT_TRUE(ParseTiers("")->empty());
}

TEST(ServerOptionsTest, RejectsBadTiers) {
  for (const char* bad :
       {"quality", "quality=", "=2", "quality=0", "quality=x", "a b=2", "quality=2,quality=4"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(ParseTiers(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
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
  EXPECT_EQ(ValidateServerOptions(o).code(), absl::StatusCode::kFailedPrecondition);
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
  o.tiers["tiny"] = 1;
  absl::Status s = ValidateChunkSizes(o, config);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("served chunk sizes: 2, 4, 8, 16"), std::string::npos) << s;
}

}  // namespace
}  // namespace catserve::server
