// RequestParser: turns a catserve.v1.GenerateRequest into the scheduler's GenerationRequest,
// checking what only this transport knows and then the model's rules (scheduler::ValidateRequest).
#ifndef CATSERVE_SERVER_REQUEST_PARSER_H_
#define CATSERVE_SERVER_REQUEST_PARSER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "catserve/v1/generation.pb.h"
#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "scheduler/request.h"
#include "server/tiers.h"

namespace catserve::server {

// What a request may ask for, after the flags' limits are applied to the model's.
// What --max_prompt_bytes=0 means: this many bytes per prompt token allowed.
inline constexpr int kPromptBytesPerToken = 32;

struct ServingLimits {
  int max_prompt_tokens = 0;
  // A text prompt longer than this is refused before it is tokenized.
  int64_t max_prompt_bytes = 0;
  int max_new_tokens = 0;
  int max_context = 0;  // prompt + generated tokens: the model's max_position_embeddings
};

// A validated request: what the scheduler runs plus what the server handles itself.
struct ParsedGeneration {
  scheduler::GenerationRequest request;
  std::vector<std::string> stop_strings;
};

// Thread-safe (immutable after construction).
class RequestParser {
 public:
  // `tokenizer` must outlive the parser. `tiers` map names to chunk sizes the model serves, as
  // does `default_chunk_size` (see ValidateChunkSizes).
  RequestParser(const engine::Tokenizer* tokenizer, const engine::ModelConfig& config,
                const ServingLimits& limits, int default_chunk_size,
                std::map<std::string, Tier> tiers);

  // Converts `request` and validates it; `deadline` becomes the scheduler's deadline and
  // `random_seed` the seed when the request sets none. Every error is INVALID_ARGUMENT and its
  // message names the field and what to change. Checked here: what only this transport knows
  // (both chunk_size and tier, an unknown tier, an empty prompt, the text's bytes, the flags'
  // limits on max_tokens and prompt tokens, an empty stop string); then every rule of the model
  // by scheduler::ValidateRequest, their one owner.
  absl::StatusOr<ParsedGeneration> Parse(const v1::GenerateRequest& request, absl::Time deadline,
                                         uint64_t random_seed) const;

  // The chunk size `request` asks for (its own, its tier's or the default), served or not;
  // INVALID_ARGUMENT as Parse for an unknown tier or both set.
  absl::StatusOr<int> ResolveChunkSize(const v1::GenerateRequest& request) const;
  bool serves_chunk_size(int chunk_size) const { return config_.serves_chunk_size(chunk_size); }

  const ServingLimits& limits() const { return limits_; }
  int default_chunk_size() const { return default_chunk_size_; }
  const std::map<std::string, Tier>& tiers() const { return tiers_; }

 private:
  absl::StatusOr<std::vector<int32_t>> Prompt(const v1::GenerateRequest& request) const;

  const engine::Tokenizer* tokenizer_;
  const engine::ModelConfig config_;
  const ServingLimits limits_;
  const int default_chunk_size_;
  const std::map<std::string, Tier> tiers_;
};

}  // namespace catserve::server

#endif  // CATSERVE_SERVER_REQUEST_PARSER_H_
