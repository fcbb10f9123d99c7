// Many streams at once, with every chunk size and many lengths in the same engine steps, give
// exactly what each request gives alone, and leave the KV pool empty.
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

TEST(ConcurrencyTest, SixtyFourMixedStreamsEqualTheirSoloRuns) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  constexpr int kStreams = 64;
  const int chunk_sizes[] = {1, 2, 4, 8, 16};
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) {
    std::vector<int32_t> prompt;
    const int prompt_tokens = 1 + (i * 7) % 40;
    for (int t = 0; t < prompt_tokens; ++t) prompt.push_back(3 + (i * 31 + t * 17) % 380);
    v1::GenerateRequest request = GreedyRequest(prompt, 4 + (i * 13) % 60, chunk_sizes[i % 5]);
    request.set_ignore_eos(i % 2 == 0);
    if (i % 3 == 0) {  // seeded sampling too
      request.mutable_sampling()->set_temperature(0.8f);
      request.mutable_sampling()->set_seed(i);
    }
    requests.push_back(request);
  }

  std::vector<Generation> alone;
  for (const v1::GenerateRequest& request : requests) {
    alone.push_back(Generate(*stub, request));
    ASSERT_TRUE(alone.back().status.ok()) << alone.back().status.error_message();
  }

  std::vector<Generation> together(kStreams);
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] { together[i] = Generate(*stub, requests[i]); });
  }
  for (std::thread& t : clients) t.join();

  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i].ids);
    EXPECT_EQ(together[i].text, alone[i].text);
    EXPECT_EQ(together[i].finish_reason, alone[i].finish_reason);
    EXPECT_EQ(together[i].usage.chunk_size(), requests[i].chunk_size());
  }
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
  EXPECT_EQ((*server)->Metric("catserve_kv_bytes_used").value_or(-1), 0);
}

}  // namespace
}  // namespace catserve::testing
