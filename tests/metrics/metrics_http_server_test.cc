#include "server/metrics/metrics_http_server.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "tests/metrics/http_get.h"

namespace catserve::metrics {
namespace {

using ::testing::HasSubstr;

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus::BuildCounter()
        .Name("test_hits_total")
        .Help("Hits.")
        .Register(registry_)
        .Add({})
        .Increment(7);
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
        MetricsHttpServer::Start("127.0.0.1:0", &registry_, [this] { return ready_.load(); });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }

  HttpResponse Get(absl::string_view path, absl::string_view method = "GET") {
    absl::StatusOr<HttpResponse> response = HttpRequest(server_->port(), method, path);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : HttpResponse{};
  }

  prometheus::Registry registry_;
  std::atomic<bool> ready_{true};
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpServerTest, ServesMetrics) {
  const HttpResponse response = Get("/metrics");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.headers.at("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response.body,
            "# HELP test_hits_total Hits.\n"
            "# TYPE test_hits_total counter\n"
            "test_hits_total 7\n");
  EXPECT_EQ(response.headers.at("content-length"), absl::StrCat(response.body.size()));
}

TEST_F(MetricsHttpServerTest, MetricsAreReadAtEveryScrape) {
  prometheus::BuildGauge()
      .Name("test_late")
      .Help("Registered after start.")
      .Register(registry_)
      .Add({})
      .Set(2);
  EXPECT_THAT(Get("/metrics").body, HasSubstr("test_late 2\n"));
}

TEST_F(MetricsHttpServerTest, HealthzIsOkEvenWhenNotReady) {
  ready_ = false;
  const HttpResponse response = Get("/healthz");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "ok\n");
}

TEST_F(MetricsHttpServerTest, ReadyzFollowsTheReadinessCallback) {
  EXPECT_EQ(Get("/readyz").status, 200);
  ready_ = false;
  const HttpResponse draining = Get("/readyz");
  EXPECT_EQ(draining.status, 503);
  EXPECT_EQ(draining.body, "not ready\n");
  ready_ = true;
  EXPECT_EQ(Get("/readyz").status, 200);
}

TEST_F(MetricsHttpServerTest, HeadHasHeadersOnly) {
  const HttpResponse response = Get("/metrics", "HEAD");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "");
  EXPECT_NE(response.headers.at("content-length"), "0");
}

TEST_F(MetricsHttpServerTest, OtherPathsAndMethodsAreRefused) {
  EXPECT_EQ(Get("/").status, 404);
  EXPECT_EQ(Get("/metricsfoo").status, 404);
  EXPECT_EQ(Get("/metrics/x").status, 404);
  EXPECT_EQ(Get("/metrics", "POST").status, 405);
}

TEST_F(MetricsHttpServerTest, HostileRequestsGetTheirStatus) {
  for (const HostileRequest& hostile : HostileRequests()) {
    absl::StatusOr<HttpResponse> response = HttpExchange(server_->port(), hostile.raw);
    ASSERT_TRUE(response.ok()) << hostile.name << ": " << response.status();
    EXPECT_EQ(response->status, hostile.status) << hostile.name;
  }
  EXPECT_EQ(Get("/healthz").status, 200);
}

TEST_F(MetricsHttpServerTest, ProbesAnswerWhileConnectionsHangOpen) {
  IdleConnections idle(server_->port(), 64);
  ASSERT_EQ(idle.open(), 64);
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) {
    const absl::Time start = absl::Now();
    EXPECT_EQ(Get(path).status, 200) << path;
    EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << path;
  }
}

TEST_F(MetricsHttpServerTest, ConcurrentScrapesAllSucceed) {
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        absl::StatusOr<HttpResponse> response = HttpRequest(server_->port(), "GET", "/metrics");
        if (response.ok() && response->status == 200) ++ok;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(ok.load(), 200);
}

TEST_F(MetricsHttpServerTest, PortInUseIsUnavailable) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start(absl::StrCat("127.0.0.1:", server_->port()), &registry_, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(": the address is in use (another catserve?)"));
}

TEST(MetricsHttpServerStartTest, MalformedAddressesAreInvalidArgument) {
  prometheus::Registry registry;
  for (const char* address : {"", "8000", "localhost:8000", "127.0.0.1:", "127.0.0.1:-1",
                              "127.0.0.1:65536", "127.0.0.1:80x", "300.1.1.1:80", "[::1]:80"}) {
    EXPECT_EQ(MetricsHttpServer::Start(address, &registry, nullptr).status().code(),
              absl::StatusCode::kInvalidArgument)
        << address;
  }
}

TEST(MetricsHttpServerStartTest, EmptyHostListensEverywhereAndNullReadyMeansReady) {
  prometheus::Registry registry;
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(":0", &registry, nullptr);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<HttpResponse> response = HttpRequest((*server)->port(), "GET", "/readyz");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
}

TEST(MetricsHttpServerStartTest, StopsListeningWhenDestroyed) {
  prometheus::Registry registry;
  int port = 0;
  {
    std::unique_ptr<MetricsHttpServer> server =
        *MetricsHttpServer::Start("127.0.0.1:0", &registry, nullptr);
    port = server->port();
  }
  EXPECT_EQ(HttpRequest(port, "GET", "/healthz").status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace catserve::metrics
