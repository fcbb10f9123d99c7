// ServerOptions: everything the daemon is configured with, one field per command-line flag of
// main.cc (the flag contract the Helm chart relies on; see docs/DEPLOY.md).
#ifndef CATSERVE_SERVER_SERVER_OPTIONS_H_
#define CATSERVE_SERVER_SERVER_OPTIONS_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/config.h"
#include "engine/kv_dtype.h"

namespace catserve::server {

struct ServerOptions {
  std::string model_dir = "models/cat-small-en";
  std::string listen = "0.0.0.0:50051";               // gRPC
  std::string http_listen = "0.0.0.0:8000";           // /metrics /healthz /readyz
  std::string device = "cpu";                         // "cpu" or "cuda"
  int threads = 0;                                    // compute threads; 0 = one per core
  engine::KvDtype kv_dtype = engine::KvDtype::kBf16;  // KV storage (--kv_dtype); cuda: bf16 only
  int kv_pool_mb = 512;
  int kv_page_entries = 16;
  int default_chunk_size = 8;
  std::map<std::string, int> tiers = {{"quality", 2}, {"balanced", 8}, {"throughput", 16}};
  int max_queued = 1024;
  int max_running = 256;
  int max_tokens_per_step = 2048;
  int max_prompt_tokens = 0;  // 0 = the model's limit
  int max_new_tokens = 0;     // 0 = the model's limit
  int drain_grace_seconds = 30;
};

// Parses --tiers: "name=chunk_size,name=chunk_size,..." (an empty string is no tiers). Names are
// [A-Za-z0-9_-]+ and unique; sizes are positive integers. INVALID_ARGUMENT otherwise, naming the
// bad entry.
absl::StatusOr<std::map<std::string, int>> ParseTiers(absl::string_view text);
// The inverse of ParseTiers: "balanced=8,quality=2,throughput=16".
std::string FormatTiers(const std::map<std::string, int>& tiers);

// Checks the options that do not need the model: numeric ranges, the device name (and that this
// build has its backend: a CPU-only build refuses "cuda" with FAILED_PRECONDITION), the KV dtype
// (the CUDA backend stores bf16 only), the addresses' shape. The message names the flag to fix.
absl::Status ValidateServerOptions(const ServerOptions& options);

// Parses --kv_dtype (bf16, fp16, fp32); INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<engine::KvDtype> ParseKvDtypeFlag(absl::string_view text);

// Checks that --default_chunk_size and every tier's size are chunk sizes `config` serves.
absl::Status ValidateChunkSizes(const ServerOptions& options, const engine::ModelConfig& config);

// Splits "HOST:PORT" (HOST may be empty or a bracketed IPv6 literal). INVALID_ARGUMENT when
// there is no ':' or the port is not in [0, 65535]; `flag` names the flag in the message.
struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view flag);

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_SERVER_OPTIONS_H_
