// Which kernel runs each item's decoder attention in a step, and the host metadata each kernel
// needs for its items. An item's route depends on its own rows and the model's head shape only,
// never on the other items of the step, so batching does not change an item's attention:
//   - kPrefill: an item of at least prefill_min_rows rows, when the prefill kernel takes the shape
//     (prefill_attention.h: tensor cores over the item's rows at once);
//   - kFlashInfer: any other item, when this build has FlashInfer's decode for the shape
//     (flashinfer_decode.h: one request per row, compressed range in tiles, then local);
//   - kSplitKv: catserve's own split-KV kernel (kernels.h) for the rest, and for every item when
//     the engine is asked for its own kernels only (the oracle's twin).
#ifndef CATSERVE_ENGINE_CUDA_ATTENTION_ROUTES_H_
#define CATSERVE_ENGINE_CUDA_ATTENTION_ROUTES_H_

#include <cstdint>
#include <vector>

#include "engine/cuda/flashinfer_decode.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda/split_kv_meta.h"
#include "engine/step/step_plan.h"

namespace catserve::engine::cuda {

enum class AttentionKernel { kSplitKv, kFlashInfer, kPrefill };

// The least rows for which an item goes to the prefill kernel by default: a decode item has one
// or two (a completed chunk's F, then S or its token), a prompt of n tokens at chunk l about n/l.
inline constexpr int kPrefillMinRows = 16;

struct AttentionRouteOptions {
  bool flashinfer = false;  // FlashInfer's decode takes this model's heads
  bool prefill = false;     // the prefill kernel takes this model's heads
  int page_entries = 0;
  int prefill_min_rows = kPrefillMinRows;
};

struct AttentionRoutes {
  std::vector<AttentionKernel> item_kernel;  // per item

  // kSplitKv: the items of `meta` on this route, renumbered (their splits first_split..., and
  // the splits' item index, point into these lists); partial slots as in `meta`.
  std::vector<SplitKvItem> split_items;
  std::vector<SplitKvSplit> splits;
  int split_max_item_rows = 0;

  // kPrefill: the step's item indices on this route.
  std::vector<int32_t> prefill_items;

  // kFlashInfer (flashinfer_decode.h's FlashInferDecodeMeta, host side). Both paged views span
  // every decoder row; rows of other routes have no pages.
  std::vector<int32_t> compressed_indptr, compressed_pages, compressed_last_len;
  std::vector<int32_t> local_indptr, local_pages, local_last_len;
  std::vector<int32_t> tile_request, tile_index;  // per compressed block
  std::vector<int32_t> local_request;             // per local block
  std::vector<FlashInferRow> flashinfer_rows;
  // Empty, or (after PadForGraph) per block whether it runs: 1 or 0.
  std::vector<uint8_t> tile_valid, local_valid;
};

// `meta` is BuildSplitKvMeta's over `plan` and all of the step's items.
AttentionRoutes RouteAttention(const StepPlan& plan, const SplitKvMeta& meta,
                               const AttentionRouteOptions& options);

// The FlashInfer metadata of a step padded to the fixed shape of a CUDA graph: `rows` decoder
// rows (at least the step's; the rows added have no pages, no blocks, and a FlashInferRow that
// merges nothing, so their output is zeros), `tile_blocks` compressed blocks (at least the
// step's; the blocks added, and the local blocks up to `rows`, are marked not to run), and the
// local page list `local_pages` long (at least the step's), so that every list but the
// compressed pages has one length for every step of that shape.
void PadForGraph(AttentionRoutes& routes, int rows, int tile_blocks, int local_pages);

}  // namespace catserve::engine::cuda

#endif  // CATSERVE_ENGINE_CUDA_ATTENTION_ROUTES_H_
