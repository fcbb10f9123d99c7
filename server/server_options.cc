#include "server/server_options.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/load_engine.h"
#include "engine/step/engine.h"
#include "scheduler/admission_policy.h"

namespace catserve::server {
namespace {

std::string JoinSizes(const std::vector<int>& sizes) { return absl::StrJoin(sizes, ", "); }

// A numeric flag's range, [minimum, maximum], and what bounds it when that is not obvious.
struct Range {
  absl::string_view flag;
  int64_t value;
  int64_t minimum;
  int64_t maximum;
  absl::string_view why = "";
};

absl::Status CheckRange(const Range& r) {
  if (r.value >= r.minimum && r.value <= r.maximum) return absl::OkStatus();
  std::string message = absl::StrCat("--", r.flag, "=", r.value, " is out of range: expected ",
                                     r.minimum, "..", r.maximum);
  if (!r.why.empty()) absl::StrAppend(&message, " (", r.why, ")");
  return absl::InvalidArgumentError(message);
}

int64_t PhysicalMemoryMiB() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return std::numeric_limits<int>::max();
  return static_cast<int64_t>(pages) * page_size / (1 << 20);
}

}  // namespace

absl::StatusOr<engine::WeightCheck> ParseWeightCheck(absl::string_view text) {
  if (text == "auto") return engine::WeightCheck::kAuto;
  if (text == "true") return engine::WeightCheck::kOn;
  if (text == "false") return engine::WeightCheck::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("--check_weights=", text.substr(0, 64), ": must be auto, true or false"));
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view address, absl::string_view flag) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", address, " is invalid: expected HOST:PORT, e.g. 0.0.0.0:50051"));
  }
  return HostPort{std::string(address.substr(0, colon)), port};
}

absl::StatusOr<engine::KvDtype> ParseKvDtypeFlag(absl::string_view text) {
  absl::StatusOr<engine::KvDtype> dtype = engine::ParseKvDtype(text);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv_dtype=", text,
                                                   " is invalid: expected "
                                                   "bf16, fp16 or fp32"));
  }
  return dtype;
}

static std::vector<Range> NumericFlagRanges(const ServerOptions& o) {
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  return {
      {"threads", o.threads, 0, 4 * cores, "0 = one per core; at most 4 per hardware thread"},
      {"sampling_threads", o.sampling_threads, 0, 4 * cores,
       "0 = one per core; at most 4 per hardware thread"},
      {"kv_pool_mb", o.kv_pool_mb, 1, PhysicalMemoryMiB(), "at most this machine's memory"},
      {"kv_page_entries", o.kv_page_entries, 1, 4096},
      {"default_chunk_size", o.default_chunk_size, 1, 4096},
      {"max_queued", o.max_queued, 1, 1'000'000},
      {"max_running", o.max_running, 1, 65'536},
      {"max_tokens_per_step", o.max_tokens_per_step, 1, 1 << 20},
      {"max_prompt_tokens", o.max_prompt_tokens, 0, 1 << 24, "0 = the model's limit"},
      {"max_new_tokens", o.max_new_tokens, 0, 1 << 24, "0 = the model's limit"},
      {"max_prompt_bytes", o.max_prompt_bytes, 0, 1 << 30, "0 = 32 bytes per prompt token"},
      {"drain_grace_seconds", o.drain_grace_seconds, 0, 86'400},
      {"grpc_max_connection_age_seconds", o.grpc_max_connection_age_seconds, 0, 7 * 86'400,
       "0 = never"},
      {"grpc_max_connection_age_grace_seconds", o.grpc_max_connection_age_grace_seconds, 0, 86'400},
      {"tls_reload_seconds", o.tls.reload_seconds, 1, 86'400},
      {"openai_request_timeout_seconds", o.openai_request_timeout_seconds, 0, 7 * 86'400,
       "0 = none"},
  };
}

absl::StatusOr<bool> ParseOnOffFlag(absl::string_view flag, absl::string_view text) {
  if (text == "on") return true;
  if (text == "off") return false;
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", text, " is invalid: expected on or off"));
}

absl::StatusOr<engine::CudaAttention> ParseCudaAttentionFlag(absl::string_view text) {
  if (text == "auto") return engine::CudaAttention::kAuto;
  if (text == "split_kv") return engine::CudaAttention::kSplitKv;
  return absl::InvalidArgumentError(
      absl::StrCat("--cuda_attention=", text, " is invalid: expected auto or split_kv"));
}

absl::Status ValidateServerOptions(const ServerOptions& o) {
  if (o.device == "cuda" && o.kv_dtype != engine::KvDtype::kBf16) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv_dtype=", engine::KvDtypeName(o.kv_dtype),
                     " is invalid with --device=cuda: the CUDA backend stores bf16 KV"));
  }
  if (o.device == "cuda" && !engine::CudaBackendBuilt()) {
    return absl::FailedPreconditionError(
        "--device=cuda: this build has no CUDA backend; run with --device=cpu");
  }
  if (o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", o.device, " is invalid: expected cpu or cuda"));
  }
  if (!(o.gpu_memory_fraction >= 0 && o.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--gpu_memory_fraction=", o.gpu_memory_fraction,
                                                   " is invalid: expected a value in (0, 1]"));
  }
  if (o.gpu_memory_fraction > 0 && o.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--gpu_memory_fraction=", o.gpu_memory_fraction,
                                                   " needs --device=cuda (the CPU pool is sized by "
                                                   "--kv_pool_mb)"));
  }
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model_dir is empty");
  if (absl::StatusOr<std::unique_ptr<scheduler::AdmissionPolicy>> policy =
          scheduler::MakeAdmissionPolicy(o.pressure_policy);
      !policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--pressure_policy: ", policy.status().message()));
  }
  for (const Range& range : NumericFlagRanges(o)) {
    if (absl::Status s = CheckRange(range); !s.ok()) return s;
  }
  if (absl::StatusOr<HostPort> hp = ParseHostPort(o.listen, "listen"); !hp.ok()) {
    return hp.status();
  }
  if (absl::StatusOr<HostPort> hp = ParseHostPort(o.http_listen, "http_listen"); !hp.ok()) {
    return hp.status();
  }
  if (!o.openai_listen.empty()) {
    if (absl::StatusOr<HostPort> hp = ParseHostPort(o.openai_listen, "openai_listen"); !hp.ok()) {
      return hp.status();
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelLimits(const ServerOptions& o, const engine::ModelConfig& config) {
  const int64_t longest = config.max_position_embeddings - 1;
  for (const Range& range : {
           Range{"max_prompt_tokens", o.max_prompt_tokens, 0, longest,
                 "0 = the model's limit; the model's context is one more"},
           Range{"max_new_tokens", o.max_new_tokens, 0, longest,
                 "0 = the model's limit; the model's context is one more"},
       }) {
    if (absl::Status s = CheckRange(range); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ValidateChunkSizes(const ServerOptions& options, const engine::ModelConfig& config) {
  const std::vector<int> served = config.chunk_sizes();
  if (!config.serves_chunk_size(options.default_chunk_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--default_chunk_size=", options.default_chunk_size,
                     " is not served by the model; served chunk sizes: ", JoinSizes(served)));
  }
  for (const auto& [name, tier] : options.tiers) {
    for (int size : {tier.chunk_size, tier.coarsest_chunk_size}) {
      if (!config.serves_chunk_size(size)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--tiers: tier '", name, "' has chunk size ", size,
            ", which the model does not serve; served chunk sizes: ", JoinSizes(served)));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace catserve::server
