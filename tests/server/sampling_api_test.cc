// What a client written from the public proto sees of sampling: top_logprobs with every token,
// and a seeded request whose tokens do not depend on what else the server is running.
#include <cmath>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(5 + (i * 31 + salt * 7) % 370);
  return ids;
}

TEST(SamplingApiTest, TopLogprobsComeSortedWithEveryToken) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();
  for (float temperature : {0.0f, 0.9f}) {
    SCOPED_TRACE(temperature);
    v1::GenerateRequest request = GreedyRequest(Prompt(12, 1), 24, 4);
    request.set_ignore_eos(true);
    request.set_top_logprobs(5);
    request.mutable_sampling()->set_temperature(temperature);
    request.mutable_sampling()->set_seed(3);
    const Generation g = Generate(*stub, request);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    ASSERT_EQ(g.ids.size(), 24u);
    ASSERT_EQ(g.logprobs.size(), g.ids.size());
    ASSERT_EQ(g.top_logprobs.size(), g.ids.size());
    for (size_t t = 0; t < g.ids.size(); ++t) {
      const v1::TokenAlternatives& top = g.top_logprobs[t];
      ASSERT_EQ(top.token_ids_size(), 5) << t;
      ASSERT_EQ(top.logprobs_size(), 5) << t;
      double mass = 0;
      for (int k = 0; k < 5; ++k) {
        EXPECT_LE(top.logprobs(k), 0.0f) << t;
        if (k > 0) EXPECT_LE(top.logprobs(k), top.logprobs(k - 1)) << t;
        mass += std::exp(top.logprobs(k));
      }
      EXPECT_LE(mass, 1.0 + 1e-5) << t;
      EXPECT_LE(g.logprobs[t], top.logprobs(0) + 1e-6f) << t;
      if (temperature == 0.0f) {
        EXPECT_EQ(top.token_ids(0), g.ids[t]) << t;
        EXPECT_FLOAT_EQ(g.logprobs[t], top.logprobs(0)) << t;
      }
    }
  }
  v1::GenerateRequest too_many = GreedyRequest(Prompt(4, 2), 2, 4);
  too_many.set_top_logprobs(21);
  const Generation refused = Generate(*stub, too_many);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.status.error_message().find("top_logprobs must be in [0, 20]"),
            std::string::npos)
      << refused.status.error_message();
}

// A seeded temperature-0.9 request gives the same tokens alone and amid 16 concurrent requests
// of other chunk sizes, and again on a restarted server with another sampling thread count.
TEST(SamplingApiTest, ASeededRequestsTokensDoNotDependOnTheBatchOrTheServer) {
  v1::GenerateRequest request = GreedyRequest(Prompt(30, 3), 48, 4);
  request.set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(0.9f);
  request.mutable_sampling()->set_seed(1234);
  std::vector<int32_t> alone;
  {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start({"--sampling_threads=1"});
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = (*server)->NewStub();
    const Generation g = Generate(*stub, request);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    alone = g.ids;
    ASSERT_EQ(alone.size(), 48u);
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--sampling_threads=2"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();
  std::vector<std::thread> others;
  for (int i = 0; i < 16; ++i) {
    others.emplace_back([&, i] {
      v1::GenerateRequest other = GreedyRequest(Prompt(5 + i * 3, 10 + i), 40, 1 << (i % 5));
      if (other.chunk_size() == 4) other.set_chunk_size(8);
      other.set_ignore_eos(true);
      other.mutable_sampling()->set_temperature(0.9f);
      other.mutable_sampling()->set_seed(i);
      EXPECT_TRUE(Generate(*stub, other).status.ok());
    });
  }
  const Generation amid = Generate(*stub, request);
  for (std::thread& t : others) t.join();
  ASSERT_TRUE(amid.status.ok()) << amid.status.error_message();
  EXPECT_EQ(amid.ids, alone);
}

}  // namespace
}  // namespace catserve::testing
