// catserve: serves a CAT language model over gRPC. See docs/API.md and docs/DEPLOY.md.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "server/log.h"
#include "server/server_options.h"
#include "server/serving_daemon.h"
#include "server/termination_signals.h"

ABSL_FLAG(std::string, model_dir, "models/cat-small-en",
          "Model directory: config.json, model.safetensors, tokenizer.model");
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address HOST:PORT (port 0: any free port)");
ABSL_FLAG(std::string, http_listen, "0.0.0.0:8000",
          "HTTP address HOST:PORT of /metrics, /healthz, /readyz (port 0: any free port)");
ABSL_FLAG(std::string, openai_listen, "0.0.0.0:8080",
          "HTTP address HOST:PORT of the OpenAI-compatible API (/v1/models, /v1/completions, "
          "/v1/chat/completions; HTTPS with --tls_cert); empty = not served");
ABSL_FLAG(int, openai_request_timeout_seconds, 0,
          "Deadline of an OpenAI API request, from its arrival (408 or an error event when "
          "passed); 0 = none");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, cuda_attention, "auto",
          "--device=cuda: the decoder attention's kernels: auto (FlashInfer's paged decode and "
          "the tensor-core prefill where they take the model's heads, catserve's split-KV kernel "
          "otherwise) or split_kv (catserve's split-KV kernel for every sequence)");
ABSL_FLAG(std::string, cuda_graphs, "on",
          "--device=cuda: replay decode steps from CUDA graphs (on; where FlashInfer's decode "
          "takes the model's heads) or launch every kernel of every step (off)");
ABSL_FLAG(int, threads, 0, "Compute threads; 0 = one per core");
ABSL_FLAG(int, sampling_threads, 0,
          "Host threads the CPU engine draws each step's tokens on (--device=cuda draws on the "
          "GPU and uses none); 0 = one per core");
ABSL_FLAG(int, kv_pool_mb, 512, "Size of the compressed-KV pool in MiB");
ABSL_FLAG(double, gpu_memory_fraction, 0,
          "--device=cuda: size the KV pool to this share (0, 1] of the GPU memory free after the "
          "weights load, instead of --kv_pool_mb; leave room for step scratch");
ABSL_FLAG(std::string, prefix_cache, "on",
          "Automatic prefix caching: on (a prompt's whole pages of compressed KV are kept and "
          "reused by later requests that start the same, at the same chunk size; evicted least "
          "recently used when the pool needs room) or off");
ABSL_FLAG(std::string, kv_dtype, "bf16",
          "KV cache storage: bf16, fp16 or fp32 (16-bit: twice the sequences per MiB, half the "
          "bytes read per step; the CUDA backend stores bf16 only)");
ABSL_FLAG(int, kv_page_entries, 16, "Compressed KV entries per page");
ABSL_FLAG(int, default_chunk_size, 8,
          "Chunk size of requests that name neither chunk_size nor tier");
ABSL_FLAG(std::string, tiers, "quality=2,balanced=8:16,throughput=16",
          "Named chunk sizes: name=size or name=size:coarsest,...; a tier's requests run at size "
          "and may be switched up to coarsest under memory pressure; every size must be served");
ABSL_FLAG(std::string, pressure_policy, "degrade",
          "What to do when the KV pool runs short: queue, coarser, degrade or preempt "
          "(docs/SCHEDULER.md)");
ABSL_FLAG(int, max_queued, 1024, "Waiting requests beyond this get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_running, 256, "Sequences decoded concurrently at most");
ABSL_FLAG(int, max_tokens_per_step, 2048, "Prompt + decode tokens one engine step processes");
ABSL_FLAG(int, max_prompt_tokens, 0, "Longest prompt accepted; 0 = the model's limit");
ABSL_FLAG(int, max_new_tokens, 0, "Most tokens one request generates; 0 = the model's limit");
ABSL_FLAG(int, max_prompt_bytes, 0,
          "Longest prompt text read, in bytes, checked before tokenizing; 0 = 32 bytes per token "
          "of --max_prompt_tokens");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC port; with --tls_key, the port speaks TLS only");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)");
ABSL_FLAG(int, tls_reload_seconds, 60,
          "How often the --tls_* files are read again (certificate rotation without restart)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of bearer tokens, one per line, re-read when it changes; when set, every "
          "catserve.v1.Generation call needs 'authorization: Bearer <token>' (health does not)");
ABSL_FLAG(bool, reflection, true, "Serve gRPC server reflection on the gRPC port");
ABSL_FLAG(int, drain_grace_seconds, 30,
          "After SIGTERM/SIGINT, seconds in-flight requests get to finish");
ABSL_FLAG(int, grpc_max_connection_age_seconds, 0,
          "Close each gRPC connection (GOAWAY) after this many seconds so clients reconnect and "
          "reach pods added by a scale-out; 0 = never");
ABSL_FLAG(int, grpc_max_connection_age_grace_seconds, 30,
          "Seconds a connection closed by --grpc_max_connection_age_seconds gets to finish its "
          "calls");
ABSL_FLAG(std::string, check_weights, "auto",
          "Refuse a model with NaN or infinite weights: auto (models under 1 GiB), true, false");

namespace catserve::server {
namespace {

// libprotobuf logs an ERROR line for every request message with invalid UTF-8 in a string field,
// which would let any client fill the log; such calls get INVALID_ARGUMENT instead
// (UnhandledCallInterceptor). Every other libprotobuf message is logged.
void ProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                 const std::string& message) {
  if (absl::StrContains(message, "invalid UTF-8 data when parsing")) return;
  Log("libprotobuf %s:%d: %s", filename, line, message);
}

absl::StatusOr<ServerOptions> OptionsFromFlags() {
  ServerOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model_dir);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.http_listen = absl::GetFlag(FLAGS_http_listen);
  o.openai_listen = absl::GetFlag(FLAGS_openai_listen);
  o.openai_request_timeout_seconds = absl::GetFlag(FLAGS_openai_request_timeout_seconds);
  o.device = absl::GetFlag(FLAGS_device);
  absl::StatusOr<engine::CudaAttention> cuda_attention =
      ParseCudaAttentionFlag(absl::GetFlag(FLAGS_cuda_attention));
  if (!cuda_attention.ok()) return cuda_attention.status();
  o.cuda_attention = *cuda_attention;
  absl::StatusOr<bool> cuda_graphs =
      ParseOnOffFlag("cuda_graphs", absl::GetFlag(FLAGS_cuda_graphs));
  if (!cuda_graphs.ok()) return cuda_graphs.status();
  o.cuda_graphs = *cuda_graphs;
  o.threads = absl::GetFlag(FLAGS_threads);
  o.sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
  o.kv_pool_mb = absl::GetFlag(FLAGS_kv_pool_mb);
  o.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  absl::StatusOr<bool> prefix_cache =
      ParseOnOffFlag("prefix_cache", absl::GetFlag(FLAGS_prefix_cache));
  if (!prefix_cache.ok()) return prefix_cache.status();
  o.prefix_cache = *prefix_cache;
  absl::StatusOr<engine::KvDtype> kv_dtype = ParseKvDtypeFlag(absl::GetFlag(FLAGS_kv_dtype));
  if (!kv_dtype.ok()) return kv_dtype.status();
  o.kv_dtype = *kv_dtype;
  o.kv_page_entries = absl::GetFlag(FLAGS_kv_page_entries);
  o.default_chunk_size = absl::GetFlag(FLAGS_default_chunk_size);
  absl::StatusOr<std::map<std::string, Tier>> tiers = ParseTiers(absl::GetFlag(FLAGS_tiers));
  if (!tiers.ok()) return tiers.status();
  o.tiers = *std::move(tiers);
  o.pressure_policy = absl::GetFlag(FLAGS_pressure_policy);
  o.max_queued = absl::GetFlag(FLAGS_max_queued);
  o.grpc_max_connection_age_seconds = absl::GetFlag(FLAGS_grpc_max_connection_age_seconds);
  o.grpc_max_connection_age_grace_seconds =
      absl::GetFlag(FLAGS_grpc_max_connection_age_grace_seconds);
  o.max_running = absl::GetFlag(FLAGS_max_running);
  o.max_tokens_per_step = absl::GetFlag(FLAGS_max_tokens_per_step);
  o.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  o.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  o.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes);
  o.drain_grace_seconds = absl::GetFlag(FLAGS_drain_grace_seconds);
  o.tls = TlsFiles{.cert = absl::GetFlag(FLAGS_tls_cert),
                   .key = absl::GetFlag(FLAGS_tls_key),
                   .client_ca = absl::GetFlag(FLAGS_tls_client_ca),
                   .reload_seconds = absl::GetFlag(FLAGS_tls_reload_seconds)};
  o.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  o.reflection = absl::GetFlag(FLAGS_reflection);
  absl::StatusOr<engine::WeightCheck> check_weights =
      ParseWeightCheck(absl::GetFlag(FLAGS_check_weights));
  if (!check_weights.ok()) return check_weights.status();
  o.check_weights = *check_weights;
  return o;
}

int Run(const ServerOptions& options) {
  absl::StatusOr<std::unique_ptr<ServingDaemon>> daemon = ServingDaemon::Start(options);
  if (!daemon.ok()) {
    Log("error: %s", daemon.status().ToString());
    return EXIT_FAILURE;
  }
  int signal = 0;
  while ((signal = WaitForTerminationSignal(absl::Milliseconds(250))) == 0) {
    (*daemon)->RefreshMetrics();
    if (absl::Status fatal = (*daemon)->CheckEngine(); !fatal.ok()) {
      Log("fatal: the engine failed (%s); not serving, exiting", fatal.ToString());
      (*daemon)->Shutdown();
      return EXIT_FAILURE;
    }
  }
  Log("signal %d: draining (up to %ds for in-flight requests)", signal,
      options.drain_grace_seconds);
  (*daemon)->BeginDrain();
  const absl::Time give_up = absl::Now() + absl::Seconds(options.drain_grace_seconds);
  while (!(*daemon)->Idle()) {
    if (absl::Now() >= give_up) {
      Log("drain grace period over: cancelling what is left");
      break;
    }
    if (WaitForTerminationSignal(absl::Milliseconds(50)) != 0) {
      Log("second signal: cancelling what is left");
      break;
    }
    (*daemon)->RefreshMetrics();
  }
  const absl::Status fatal = (*daemon)->CheckEngine();
  (*daemon)->Shutdown();
  if (!fatal.ok()) {
    Log("fatal: the engine failed while draining (%s)", fatal.ToString());
    return EXIT_FAILURE;
  }
  Log("stopped");
  return EXIT_SUCCESS;
}

}  // namespace
}  // namespace catserve::server

int main(int argc, char** argv) {
  google::protobuf::SetLogHandler(&catserve::server::ProtobufLog);
  if (absl::Status s = catserve::server::InstallTerminationSignals(); !s.ok()) {
    catserve::server::Log("error: %s", s.message());
    return EXIT_FAILURE;
  }
  absl::SetProgramUsageMessage(
      "Serves a CAT language model over gRPC.\nUsage: catserve --model_dir=DIR [--flags]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    catserve::server::Log("error: unexpected argument '%s' (flags are --name=value)", rest[1]);
    return EXIT_FAILURE;
  }
  absl::StatusOr<catserve::server::ServerOptions> options = catserve::server::OptionsFromFlags();
  if (!options.ok()) {
    catserve::server::Log("error: %s", options.status().message());
    return EXIT_FAILURE;
  }
  return catserve::server::Run(*options);
}
