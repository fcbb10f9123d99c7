// The daemon's HTTP port as a scanner, a misconfigured probe or an attacker meets it: whatever
// arrives there, the process lives, probes answer within a second, and gRPC streams carry on.
#include <signal.h>

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/metrics/http_get.h"
#include "tests/server/server_process.h"

namespace catserve::testing {
namespace {

using metrics::HostileRequest;
using metrics::HttpExchange;
using metrics::HttpRequest;
using metrics::HttpResponse;

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(7 + (i * 13) % 300);
  return ids;
}

// GET `path` answered 200 within a second.
void ExpectProbeAnswers(const ServerProcess& server, const char* path) {
  const absl::Time start = absl::Now();
  absl::StatusOr<HttpResponse> response = HttpRequest(server.http_port(), "GET", path);
  ASSERT_TRUE(response.ok()) << path << ": " << response.status() << "\n" << server.log();
  EXPECT_EQ(response->status, 200) << path;
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << path;
}

TEST(HttpPortTest, HostileRequestsNeitherKillTheDaemonNorHarmStreams) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();

  // Streams in flight while the port is attacked.
  std::vector<Generation> streams(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      v1::GenerateRequest request = GreedyRequest(Prompt(20 + i), 100, 1 << i);
      request.set_ignore_eos(true);
      streams[i] = Generate(*stub, request);
    });
  }

  for (int round = 0; round < 3; ++round) {
    for (const HostileRequest& hostile : metrics::HostileRequests()) {
      absl::StatusOr<HttpResponse> response = HttpExchange((*server)->http_port(), hostile.raw);
      ASSERT_TRUE(response.ok()) << hostile.name << ": " << response.status() << "\n"
                                 << (*server)->log();
      EXPECT_EQ(response->status, hostile.status) << hostile.name;
    }
  }
  for (std::thread& client : clients) client.join();

  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(streams[i].status.ok()) << i << ": " << streams[i].status.error_message();
    EXPECT_EQ(streams[i].ids.size(), 100u) << i;
  }
  EXPECT_FALSE((*server)->WaitForExit(absl::ZeroDuration()).has_value()) << (*server)->log();
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) ExpectProbeAnswers(**server, path);
  Generation after = Generate(*stub, GreedyRequest(Prompt(5), 4, 2));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(CheckHealth((*server)->address(), "").value_or(-1), 1);
  EXPECT_EQ((*server)->AwaitMetric("catserve_kv_pages_used", 0, absl::Seconds(5)).value_or(-1), 0);
}

TEST(HttpPortTest, ProbesAnswerWithinASecondWhileConnectionsHangOpen) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  metrics::IdleConnections idle((*server)->http_port(), 64);
  ASSERT_EQ(idle.open(), 64);
  for (int i = 0; i < 3; ++i) {
    for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
      ExpectProbeAnswers(**server, path);
    }
  }
}

}  // namespace
}  // namespace catserve::testing
