#ifndef CATSERVE_TESTS_COMMON_TEST_MODELS_H_
#define CATSERVE_TESTS_COMMON_TEST_MODELS_H_

#include "engine/model/config.h"

namespace catserve::testing {

// The shapes of the committed fixture models (tests/fixtures/tiny and tiny_gqa), used with
// RandomModelWeights where a test needs a model but not the fixture's weights.
inline engine::ModelConfig TinyConfig(bool gqa) {
  engine::ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 64;
  c.num_hidden_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = gqa ? 2 : 4;
  c.compressor_hidden_size = 32;
  c.compressor_num_layers = gqa ? 2 : 1;
  c.compressor_num_heads = 2;
  c.max_chunk_size = 16;
  c.min_train_chunk_size = 1;
  c.max_position_embeddings = 128;
  c.qk_norm = gqa;
  c.qkv_bias = gqa;
  c.tie_word_embeddings = gqa;
  if (gqa) c.intermediate_size = 96;
  return c;
}

}  // namespace catserve::testing

#endif  // CATSERVE_TESTS_COMMON_TEST_MODELS_H_
