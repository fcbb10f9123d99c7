// ModelConfig: the hyper-parameters of a CAT model, read from its Hugging Face style config.json.
//
// The keys, their meaning and their defaults are those of docs/CAT_MODEL.md (and of the reference
// CATConfig). A ModelConfig returned by ParseModelConfig or LoadModelConfig has every default
// applied and has passed every validation rule below, so the rest of the engine may rely on the
// invariants without re-checking them:
//   - every size and count lies in its sane range (config.cc's kIntRanges): vocab_size <= 2^22,
//     hidden_size and compressor_hidden_size <= 2^16, layer and head counts <= 1024, chunk sizes
//     <= 1024, max_position_embeddings <= 2^20, both MLP widths in [1, 2^20];
//   - num_heads divides hidden_size, num_kv_heads divides num_heads, head_dim() is even (RoPE);
//   - compressor_num_heads divides compressor_hidden_size, compressor_head_dim() is even;
//   - max_chunk_size and min_train_chunk_size are powers of two, min_train_chunk_size <=
//     max_chunk_size <= max_position_embeddings;
//   - compressor_num_kv_heads divides compressor_num_heads;
//   - pad/bos/eos token ids lie in [0, vocab_size);
//   - rope_theta in [1, 1e12], every epsilon in [1e-12, 1], hidden_ratio in [1/64, 64], and
//     every size in the range Validate's tables give (engine/config.cc).
//
// ModelConfig is a plain value type: copyable, no hidden state, safe to share between threads.

#ifndef CATSERVE_ENGINE_MODEL_CONFIG_H_
#define CATSERVE_ENGINE_MODEL_CONFIG_H_

#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace catserve::engine {

struct ModelConfig {
  // Field defaults are those of docs/CAT_MODEL.md; the dependent ones (num_kv_heads and the
  // compressor_* sizes) are written out for the default decoder, so a default-constructed
  // ModelConfig equals the parse of {"model_type": "cat"}.
  int vocab_size = 32000;              // V
  int hidden_size = 2048;              // D, also the width of every fx (dim_fx)
  int num_hidden_layers = 24;          // L
  int num_heads = 32;                  // H
  int num_kv_heads = 32;               // Hkv; default H
  int compressor_hidden_size = 1024;   // Dc; default D/2
  int compressor_num_layers = 6;       // Lc; default max(1, L/4)
  int compressor_num_heads = 16;       // Hc; default max(1, H/2)
  int max_chunk_size = 16;             // M
  int min_train_chunk_size = 2;        // smallest trained chunk size
  int max_position_embeddings = 2048;  // P
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double hidden_ratio = 4.0;
  std::optional<int> intermediate_size;  // when set, both MLPs use it
  bool qk_norm = false;
  bool qkv_bias = false;
  bool tie_word_embeddings = false;
  int pad_token_id = 0;  // null in config.json means 0
  int bos_token_id = 1;
  int eos_token_id = 2;
  double qk_norm_eps = 1e-5;  // epsilon of the decoder's per-head q/k RMSNorm

  // The compressor's own block settings, for checkpoints whose compressor is configured apart
  // from the decoder (the official code builds it from its own config). Unset (null or absent in
  // config.json), each is what a compressor had before these keys existed: no GQA, the decoder's
  // intermediate_size rule, norm_eps and qk_norm_eps, and no q/k norm or q/k/v bias
  // (docs/CAT_MODEL.md: decoder only). Read them through the accessors below.
  std::optional<int> compressor_num_kv_heads;
  std::optional<int> compressor_intermediate;  // key compressor_intermediate_size
  std::optional<double> compressor_norm_eps;
  bool compressor_qk_norm = false;
  std::optional<double> compressor_qk_norm_eps;
  bool compressor_qkv_bias = false;

  // compressor_num_kv_heads, else compressor_num_heads.
  int compressor_kv_heads() const;
  // compressor_norm_eps, else norm_eps.
  double compressor_eps() const;
  // compressor_qk_norm_eps, else qk_norm_eps.
  double compressor_qk_eps() const;

  // D / H.
  int head_dim() const;
  // Dc / Hc.
  int compressor_head_dim() const;

  // SwiGLU hidden widths: intermediate_size when set, else
  // 256 * ceil(int(width * hidden_ratio * 2 / 3) / 256) with width D (decoder) or Dc (compressor);
  // the compressor's is compressor_intermediate_size when that key is set.
  int decoder_intermediate_size() const;
  int compressor_intermediate_size() const;

  // The chunk sizes the weights were trained for, hence the ones a request may ask for: the
  // powers of two from min_train_chunk_size to max_chunk_size, ascending.
  std::vector<int> chunk_sizes() const;
  // True iff l is one of chunk_sizes().
  bool serves_chunk_size(int l) const;

  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// Parses the text of a config.json. Unknown keys are ignored (HF configs carry many); a key whose
// value is null takes its default. Returns INVALID_ARGUMENT when the text is not a JSON object,
// when model_type is not "cat", when a value has the wrong JSON type (a string or a fraction where
// an integer is expected, ...), when an integer is outside the int range, when dim_fx is present
// and differs from hidden_size, or when any rule listed at the top of this file fails. The message
// names the field, its value and the rule, e.g. "config.json: num_heads (5) must divide hidden_size
// (64)".
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text);

// Reads and parses model_dir/config.json. NOT_FOUND when the file does not exist, another code
// when it cannot be read, otherwise as ParseModelConfig.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& model_dir);

}  // namespace catserve::engine

#endif  // CATSERVE_ENGINE_MODEL_CONFIG_H_
