// Serves a ServingMetrics populated with a few observations of every kind on /metrics, so that
// promtool_check.sh can lint a live endpoint. Writes the bound port to --port_file once serving.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/metrics/metrics_http_server.h"
#include "server/metrics/serving_metrics.h"

ABSL_FLAG(std::string, address, "127.0.0.1:0", "HOST:PORT to serve on (port 0: any free port)");
ABSL_FLAG(std::string, port_file, "", "where to write the bound port once serving");
ABSL_FLAG(int, serve_seconds, 60, "how long to serve before exiting");

namespace catserve::metrics {
namespace {

void Populate(ServingMetrics& metrics) {
  for (int chunk_size : {4, 8, 16}) {
    const ChunkSizeMetrics& m = metrics.ForChunkSize(chunk_size);
    m.requests_running->Set(chunk_size / 4);
    m.requests_waiting->Set(1);
    m.finished(RequestOutcome::kStop).Increment(10);
    m.finished(RequestOutcome::kLength).Increment(3);
    m.finished(RequestOutcome::kRejected).Increment();
    m.prompt_tokens->Increment(1000 * chunk_size);
    m.generation_tokens->Increment(500);
    m.compressor_calls->Increment(1500 / chunk_size);
    m.time_to_first_token->Observe(0.05 * chunk_size);
    m.time_per_output_token->Observe(0.012);
    m.e2e_request_latency->Observe(3.5);
    m.request_queue_time->Observe(0.002);
  }
  metrics.kv_pages_total().Set(4096);
  metrics.kv_pages_used().Set(1024);
  metrics.kv_bytes_total().Set(4096.0 * 2 * 1024 * 1024);
  metrics.kv_bytes_used().Set(1024.0 * 2 * 1024 * 1024);
  metrics.preemptions().Increment(2);
  metrics.degrades(8, 16).Increment(5);
  metrics.step_duration().Observe(0.018);
  metrics.step_tokens().Observe(37);
  metrics.step_batch_size().Observe(12);
}

int Run() {
  Registry registry;
  absl::StatusOr<std::unique_ptr<ServingMetrics>> metrics =
      ServingMetrics::Create(&registry, BuildInfo{"0.1.0", "cat-demo", "cpu"});
  if (!metrics.ok()) {
    std::fprintf(stderr, "%s\n", metrics.status().ToString().c_str());
    return 1;
  }
  Populate(**metrics);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(absl::GetFlag(FLAGS_address), &registry, [] { return true; });
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    // Written then renamed, so a reader never sees a partial number.
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << (*server)->port() << "\n";
    std::filesystem::rename(tmp, port_file);
  }
  std::printf("serving metrics on port %d\n", (*server)->port());
  std::fflush(stdout);
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_serve_seconds)));
  return 0;
}

}  // namespace
}  // namespace catserve::metrics

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return catserve::metrics::Run();
}
