#include "server/server_options.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace catserve::server {
namespace {

bool IsTierName(absl::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string JoinSizes(const std::vector<int>& sizes) { return absl::StrJoin(sizes, ", "); }

absl::Status AtLeast(absl::string_view flag, int value, int minimum) {
  if (value >= minimum) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", value, " is invalid: it must be >= ", minimum));
}

}  // namespace

absl::StatusOr<std::map<std::string, int>> ParseTiers(absl::string_view text) {
  std::map<std::string, int> tiers;
  if (absl::StripAsciiWhitespace(text).empty()) return tiers;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    std::vector<absl::string_view> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    int size = 0;
    if (kv.size() != 2 || !IsTierName(absl::StripAsciiWhitespace(kv[0])) ||
        !absl::SimpleAtoi(kv[1], &size) || size <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tiers: bad entry '", entry,
                       "'; expected name=chunk_size, e.g. --tiers=quality=2,balanced=8"));
    }
    std::string name(absl::StripAsciiWhitespace(kv[0]));
    if (!tiers.emplace(name, size).second) {
      return absl::InvalidArgumentError(absl::StrCat("--tiers: tier '", name, "' given twice"));
    }
  }
  return tiers;
}

std::string FormatTiers(const std::map<std::string, int>& tiers) {
  return absl::StrJoin(tiers, ",", absl::PairFormatter("="));
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

absl::Status ValidateServerOptions(const ServerOptions& o) {
  if (o.device == "cuda" && o.kv_dtype != engine::KvDtype::kBf16) {
    return absl::InvalidArgumentError(
        absl::StrCat("--kv_dtype=", engine::KvDtypeName(o.kv_dtype),
                     " is invalid with --device=cuda: the CUDA backend stores bf16 KV"));
  }
  if (o.device == "cuda") {
    return absl::FailedPreconditionError(
        "--device=cuda: this build has no CUDA backend; run with --device=cpu");
  }
  if (o.device != "cpu") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", o.device, " is invalid: expected cpu or cuda"));
  }
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model_dir is empty");
  for (auto [flag, value, minimum] : std::vector<std::tuple<absl::string_view, int, int>>{
           {"threads", o.threads, 0},
           {"kv_pool_mb", o.kv_pool_mb, 1},
           {"kv_page_entries", o.kv_page_entries, 1},
           {"default_chunk_size", o.default_chunk_size, 1},
           {"max_queued", o.max_queued, 1},
           {"max_running", o.max_running, 1},
           {"max_tokens_per_step", o.max_tokens_per_step, 1},
           {"max_prompt_tokens", o.max_prompt_tokens, 0},
           {"max_new_tokens", o.max_new_tokens, 0},
           {"drain_grace_seconds", o.drain_grace_seconds, 0}}) {
    if (absl::Status s = AtLeast(flag, value, minimum); !s.ok()) return s;
  }
  if (absl::StatusOr<HostPort> hp = ParseHostPort(o.listen, "listen"); !hp.ok()) {
    return hp.status();
  }
  if (absl::StatusOr<HostPort> hp = ParseHostPort(o.http_listen, "http_listen"); !hp.ok()) {
    return hp.status();
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
  for (const auto& [name, size] : options.tiers) {
    if (!config.serves_chunk_size(size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tiers: tier '", name, "' has chunk size ", size,
          ", which the model does not serve; served chunk sizes: ", JoinSizes(served)));
    }
  }
  return absl::OkStatus();
}

}  // namespace catserve::server
