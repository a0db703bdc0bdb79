// Work plans: how tensors are cut into items (shape-only, for determinism).
#include "lib/ops/plan.h"

namespace bnorm {
namespace detail {
namespace {

int64_t Gcd(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Plan MakePlan(const bnorm_shape& shape, bool serial_flag, int64_t cb, int64_t ce) {
  Plan p{};
  const int64_t n = shape.n, c = shape.c, spatial = shape.spatial;
  p.c = c;
  p.cb = cb;
  p.ce = ce;
  p.count = n * spatial;
  // Whether the shape is worth fanning out (the cutting never depends on serial_flag).
  const bool fans_out = p.count * c >= kParallelValues;
  p.serial = serial_flag || !fans_out;
  // One channel is one contiguous plane; NHWC and short NCHW planes are rows.
  p.rows_mode = c > 1 && (shape.layout == bnorm_nhwc || spatial < kMinPlaneSpatial);
  if (!p.rows_mode) {
    p.spatial = c == 1 ? p.count : spatial;  // c == 1: the whole tensor is one run
    p.chunk_len = p.count < kChunk ? p.count : kChunk;
    p.chunks = CeilDiv(p.count, p.chunk_len);
    p.grain = p.chunk_len >= kParallelValues / 2 ? 1 : kParallelValues / 2 / p.chunk_len;
    return p;
  }
  p.spatial = 1;
  p.group = shape.layout == bnorm_nhwc ? 1 : spatial;
  p.row_len = c * p.group;
  p.num_rows = p.count / p.group;
  const int64_t period = p.row_len / Gcd(p.row_len, kLogicalLanes) * kLogicalLanes;
  int64_t unit;  // rows per chunk are a multiple of this
  if (period <= kMaxRun) {
    p.period = period;
    p.tile = p.row_len;
    p.tiles = 1;
    unit = period / p.row_len;
  } else {
    // Tiles hold whole channels and whole logical vectors.
    const int64_t lcm = p.group / Gcd(p.group, kLogicalLanes) * kLogicalLanes;
    p.tile = kMaxRun / lcm * lcm;
    p.tiles = CeilDiv(p.row_len, p.tile);
    unit = 8;
  }
  const int64_t width = p.tile < p.row_len ? p.tile : p.row_len;
  int64_t rows = CeilDiv(CeilDiv(kRowChunkValues, width), unit) * unit;
  if (p.tiles == 1 && fans_out) {
    // A tensor worth spreading over threads gets at least kMinRowChunks items (a
    // batch-1 NHWC tensor of 100K values would otherwise be one item, on one core).
    rows = Plan::Min(rows, CeilDiv(CeilDiv(p.num_rows, kMinRowChunks), unit) * unit);
  }
  p.chunk_len = rows < p.num_rows ? rows : p.num_rows;
  p.chunks = CeilDiv(p.num_rows, p.chunk_len);
  p.grain = 1;
  return p;
}

void FillPattern(const Plan& p, const float* per_channel, float fill, float* pattern) {
  p.ForEachPosition(0, p.PatternSize(), [&](int64_t v, int64_t ch) {
    if (ch >= p.cb && ch < p.ce) pattern[v] = per_channel ? per_channel[ch] : fill;
  });
}

}  // namespace detail
}  // namespace bnorm
