// Prefix caching through a running daemon: the same requests with --prefix_cache on and off give
// the same tokens, Usage and the metrics report the hits, and the pool ends free or cached.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

std::vector<int32_t> SharedPrefixPrompt(int prefix, int suffix_seed) {
  std::vector<int32_t> ids;
  for (int i = 0; i < prefix; ++i) ids.push_back(5 + (i * 37) % 300);
  for (int i = 0; i < 3 + suffix_seed % 4; ++i)
    ids.push_back(11 + (suffix_seed * 53 + i * 7) % 250);
  return ids;
}

TEST(PrefixCacheDaemonTest, OnAndOffGiveTheSameTokensAndTheHitsAreReported) {
  std::vector<std::vector<int32_t>> outputs[2];
  for (bool on : {false, true}) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start({on ? "--prefix_cache=on" : "--prefix_cache=off"});
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = (*server)->NewStub();
    int cached = 0;
    for (int i = 0; i < 12; ++i) {
      v1::GenerateRequest request =
          GreedyRequest(SharedPrefixPrompt(90, i), 12, /*chunk_size=*/1 << (i % 3));
      if (i % 2 == 1) {
        request.mutable_sampling()->set_temperature(0.8f);
        request.mutable_sampling()->set_seed(1000 + i);
      }
      Generation g = Generate(*stub, request);
      ASSERT_TRUE(g.status.ok()) << g.status.error_message();
      outputs[on].push_back(g.ids);
      cached += g.usage.cached_prompt_tokens();
    }
    const double hits = (*server)->Metric("catserve_prefix_cache_hit_tokens_total").value_or(-1);
    const double queries =
        (*server)->Metric("catserve_prefix_cache_query_tokens_total").value_or(-1);
    if (on) {
      EXPECT_GT(cached, 0);
      EXPECT_EQ(hits, cached);
      EXPECT_GE(queries, hits);
      EXPECT_GT((*server)->Metric("catserve_prefix_cache_pages").value_or(0), 0);
    } else {
      EXPECT_EQ(cached, 0);
      EXPECT_EQ(hits, 0);
      EXPECT_EQ((*server)->Metric("catserve_prefix_cache_pages").value_or(-1), 0);
    }
    EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1),
              0);
  }
  for (size_t i = 0; i < outputs[0].size(); ++i) {
    EXPECT_EQ(outputs[1][i], outputs[0][i]) << "request " << i;
  }
}

TEST(PrefixCacheDaemonTest, ABadValueIsRefusedAtStart) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--prefix_cache=maybe"});
  ASSERT_FALSE(server.ok());
  EXPECT_NE(std::string(server.status().message()).find("--prefix_cache=maybe is invalid"),
            std::string::npos)
      << server.status();
}

}  // namespace
}  // namespace catserve::testing
