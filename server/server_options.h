// ServerOptions: everything the daemon is configured with, one field per command-line flag of
// main.cc (the flag contract the Helm chart relies on; see docs/DEPLOY.md).
#ifndef CATSERVE_SERVER_SERVER_OPTIONS_H_
#define CATSERVE_SERVER_SERVER_OPTIONS_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/kv/kv_dtype.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"
#include "engine/step/engine.h"
#include "server/server_credentials.h"
#include "server/tiers.h"

namespace catserve::server {

struct ServerOptions {
  std::string model_dir = "models/cat-small-en";
  std::string listen = "0.0.0.0:50051";      // gRPC
  std::string http_listen = "0.0.0.0:8000";  // /metrics /healthz /readyz
  // The OpenAI-compatible API (docs/OPENAI_API.md); empty: not served.
  std::string openai_listen = "0.0.0.0:8080";
  // An OpenAI API request's deadline, from its arrival; 0 = none.
  int openai_request_timeout_seconds = 0;
  std::string device = "cpu";  // "cpu" or "cuda"
  int threads = 0;             // compute threads; 0 = one per core
  int sampling_threads = 0;    // host threads sampling a step's rows; 0 = one per core
  engine::KvDtype kv_dtype = engine::KvDtype::kBf16;  // KV storage (--kv_dtype); cuda: bf16 only
  // --cuda_attention: the decoder attention's kernels on the GPU (EngineOptions::cuda_attention)
  engine::CudaAttention cuda_attention = engine::CudaAttention::kAuto;
  bool cuda_graphs = true;  // --cuda_graphs: decode steps replayed from CUDA graphs
  int kv_pool_mb = 512;
  double gpu_memory_fraction =
      0;  // --device=cuda: pool = this share of free memory; 0 = kv_pool_mb
  int kv_page_entries = 16;
  int default_chunk_size = 8;
  std::map<std::string, Tier> tiers = {
      {"quality", {2, 2}}, {"balanced", {8, 16}}, {"throughput", {16, 16}}};
  std::string pressure_policy = "degrade";  // scheduler::AdmissionPolicyNames()
  bool prefix_cache = true;                 // --prefix_cache=on|off: automatic prefix caching
  int max_queued = 1024;
  int max_running = 256;
  int max_tokens_per_step = 2048;
  int max_prompt_tokens = 0;  // 0 = the model's limit
  int max_new_tokens = 0;     // 0 = the model's limit
  // Text prompts longer than this are refused before tokenizing; 0 = 32 bytes per token of
  // max_prompt_tokens.
  int max_prompt_bytes = 0;
  int drain_grace_seconds = 30;
  // gRPC connections are closed (GOAWAY) after this many seconds, and given the grace to finish
  // their calls, so that clients of a headless Service reconnect and see pods a scale-out added;
  // 0 = never.
  int grpc_max_connection_age_seconds = 0;
  int grpc_max_connection_age_grace_seconds = 30;
  // Refuse NaN/Inf weights at load: "auto" (models under 1 GiB), "true" or "false".
  engine::WeightCheck check_weights = engine::WeightCheck::kAuto;
  TlsFiles tls;                  // --tls_cert, --tls_key, --tls_client_ca, --tls_reload_seconds
  std::string auth_tokens_file;  // empty: no token needed
  bool reflection = true;        // grpc.reflection.v1alpha.ServerReflection on the gRPC port
};

// Parses --check_weights: "auto", "true" or "false"; INVALID_ARGUMENT otherwise.
absl::StatusOr<engine::WeightCheck> ParseWeightCheck(absl::string_view text);

// Checks the options that do not need the model: numeric ranges (docs/DEPLOY.md, "Flag ranges";
// threads bounded by this machine's hardware threads, --kv_pool_mb by its memory), the pressure
// policy's name, the
// device name (and that this build has its backend: a CPU-only build refuses "cuda" with
// FAILED_PRECONDITION; whether a GPU is present is found when the engine loads), the KV dtype
// (the CUDA backend stores bf16 only), --gpu_memory_fraction in [0, 1] and only with
// --device=cuda, the addresses' shape. The message names the flag to fix.
absl::Status ValidateServerOptions(const ServerOptions& options);

// Parses an on/off flag (--prefix_cache, --cuda_graphs) named `flag`: "on" or "off";
// INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<bool> ParseOnOffFlag(absl::string_view flag, absl::string_view text);

// Parses --cuda_attention: "auto" or "split_kv"; INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<engine::CudaAttention> ParseCudaAttentionFlag(absl::string_view text);

// Parses --kv_dtype (bf16, fp16, fp32); INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<engine::KvDtype> ParseKvDtypeFlag(absl::string_view text);

// Checks the flags bounded by the model: --max_prompt_tokens and --max_new_tokens at most the
// model's context less one.
absl::Status ValidateModelLimits(const ServerOptions& options, const engine::ModelConfig& config);

// Checks that --default_chunk_size and every tier's sizes are chunk sizes `config` serves.
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
