// The daemon's HTTP port as a scanner, a misconfigured probe or an attacker meets it: whatever
// arrives there, the process lives, probes answer within a second, and gRPC streams carry on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

// A connection from `source` (a loopback address) to 127.0.0.1:port; -1 if refused at once.
int ConnectFrom(const char* source, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, source, &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof(remote)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True once the server has closed `fd` (a read sees the end of the stream or a reset).
bool ClosedByServer(int fd) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char byte;
  return recv(fd, &byte, 1, MSG_DONTWAIT) <= 0;
}

// 200 clients at one address each send one header line a second and never finish their
// request. The address gets at most 128 connections; every one that got in is closed within the
// request deadline (10 s) plus a tick, however it keeps trickling; probes from another address
// answer within a second throughout, and a stream in flight is untouched.
TEST(HttpPortTest, TricklingHeadersAreCutAtTheDeadlineAndCappedPerAddress) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = (*server)->NewStub();
  Generation stream;
  std::thread client([&] {
    v1::GenerateRequest request = GreedyRequest(Prompt(20), 100, 4);
    request.set_ignore_eos(true);
    stream = Generate(*stub, request);
  });

  constexpr int kClients = 200;
  const absl::Time start = absl::Now();
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ConnectFrom("127.0.0.2", (*server)->http_port());
    if (fd >= 0) fds.push_back(fd);
  }
  const std::string first = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  for (int fd : fds) send(fd, first.data(), first.size(), MSG_NOSIGNAL);

  std::vector<absl::Time> closed_at(fds.size(), absl::InfiniteFuture());
  int line = 0;
  while (absl::Now() - start < absl::Seconds(14)) {
    const std::string header = absl::StrCat("X-Trickle-", line++, ": 1\r\n");
    for (size_t i = 0; i < fds.size(); ++i) {
      if (closed_at[i] != absl::InfiniteFuture()) continue;
      if (ClosedByServer(fds[i])) {
        closed_at[i] = absl::Now();
      } else {
        send(fds[i], header.data(), header.size(), MSG_NOSIGNAL);
      }
    }
    ExpectProbeAnswers(**server, "/healthz");
    absl::SleepFor(absl::Seconds(1));
  }

  int open_past_deadline = 0, admitted = 0;
  for (size_t i = 0; i < fds.size(); ++i) {
    // Refused beyond the per-address cap: closed at once.
    if (closed_at[i] - start < absl::Seconds(2)) continue;
    ++admitted;
    if (closed_at[i] - start > absl::Seconds(12)) ++open_past_deadline;
  }
  for (int fd : fds) close(fd);
  EXPECT_LE(admitted, 128);
  EXPECT_GE(admitted, 100);
  EXPECT_EQ(open_past_deadline, 0);

  client.join();
  EXPECT_TRUE(stream.status.ok()) << stream.status.error_message();
  EXPECT_EQ(stream.ids.size(), 100u);
  for (const char* path : {"/healthz", "/readyz", "/metrics"}) ExpectProbeAnswers(**server, path);
}

}  // namespace
}  // namespace catserve::testing
