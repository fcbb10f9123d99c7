#ifndef CATSERVE_TESTS_SUPPORT_REFERENCE_FORWARD_H_
#define CATSERVE_TESTS_SUPPORT_REFERENCE_FORWARD_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace catserve::engine {

// The oracle: one full forward of a CAT model over the interleaved sequence of docs/CAT_MODEL.md,
// with the attention mask written out explicitly. Slow and plain on purpose; the incremental
// engine is tested against it.
//
// Returns logits [N + 1, V] for tokens t_0..t_{N-1}: row i is the model's prediction of token i.
// Row i with i % l == 0 is the output at the separator S of block i / l (for i == N that is the
// trailing [fx_{K-1}, S] pair); any other row i is the output at token t_{i-1}.
absl::StatusOr<std::vector<float>> ReferenceForward(const ModelConfig& config,
                                                    const ModelWeights& weights,
                                                    absl::Span<const int32_t> tokens,
                                                    int chunk_size);

// The compressor alone: fx (length D) of one chunk of `chunk.size()` tokens at chunk index `index`.
std::vector<float> ReferenceCompress(const ModelConfig& config, const ModelWeights& weights,
                                     absl::Span<const int32_t> chunk, int index);

}  // namespace catserve::engine

#endif  // CATSERVE_TESTS_SUPPORT_REFERENCE_FORWARD_H_
