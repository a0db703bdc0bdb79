// Work plans: how tensors are cut into items (shape-only, for determinism).
#include "lib/ops/plan.h"

namespace bnorm {
namespace detail {

Plan MakePlan(const bnorm_shape& shape, bool serial_flag) {
  Plan p{};
  p.n = shape.n;
  p.c = shape.c;
  p.spatial = shape.spatial;
  p.nhwc = shape.layout == bnorm_nhwc;
  // Fold layouts that are the same memory order: one channel is one contiguous plane;
  // NCHW with spatial 1 is rows of c channels.
  if (p.c == 1) {
    p.nhwc = false;
    p.spatial = p.n * p.spatial;
    p.n = 1;
  } else if (!p.nhwc && p.spatial == 1) {
    p.nhwc = true;
  }
  p.count = p.n * p.spatial;
  const int64_t values = p.count * p.c;
  if (p.nhwc) {
    p.tiles = (p.c + kTile - 1) / kTile;
    const int64_t width = p.c < kTile ? p.c : kTile;
    int64_t rows = (kRowChunkValues + width - 1) / width;
    rows = (rows + 7) / 8 * 8;  // whole statistics blocks (of at least 8 rows)
    p.chunk_len = rows < p.count ? rows : p.count;
    p.chunks = (p.count + p.chunk_len - 1) / p.chunk_len;
    p.grain = 1;
  } else {
    p.tiles = 1;
    p.chunk_len = p.count < kChunk ? p.count : kChunk;
    p.chunks = (p.count + p.chunk_len - 1) / p.chunk_len;
    // Enough channels per task to be worth a task.
    p.grain = p.chunk_len >= kParallelValues / 2 ? 1 : kParallelValues / 2 / p.chunk_len;
  }
  p.serial = serial_flag || values < kParallelValues;
  return p;
}

}  // namespace detail
}  // namespace bnorm
