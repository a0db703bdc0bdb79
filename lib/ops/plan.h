// How an operation cuts a tensor into work items: a function of the shape only, never
// of the thread count, so that results are bit-identical however many threads run.
#ifndef BNORM_LIB_OPS_PLAN_H_
#define BNORM_LIB_OPS_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/bnorm.h"
#include "lib/kernels/kernels.h"

namespace bnorm {
namespace detail {

// Values per plane work item (a chunk of one channel); a multiple of kBlock. A channel
// that fits one chunk is read once by training (statistics then normalization).
constexpr int64_t kChunk = 8 * kBlock;
// Planes of at most this many values are fused: training normalizes a channel right
// after its statistics, backward computes dx right after the sums, while the channel
// is in L2 (1 MiB): DRAM is read once (training 2T, backward 3T instead of 3T, 5T).
constexpr int64_t kFuseValues = 256 * 1024;
// Values per slice of an element-wise pass over a planes tensor in memory order.
constexpr int64_t kSliceValues = 64 * 1024;
// Values per rows work item, roughly.
constexpr int64_t kRowChunkValues = 128 * 1024;
// Below this many values a call runs on the calling thread (fan-out costs more).
constexpr int64_t kParallelValues = 64 * 1024;
// Rows mode: at least this many chunks of rows where a call may fan out.
constexpr int64_t kMinRowChunks = 4;
// NCHW channels with fewer values per image than this are handled as rows (runs this
// short would be mostly vector remainders).
constexpr int64_t kMinPlaneSpatial = 32;
// Rows are cut into runs whose length is a multiple of this many values (one AVX-512
// vector, two AVX2, four SSE4 ...): every target then sees the same runs.
constexpr int64_t kLogicalLanes = 16;

// Work items of one tensor, in one of two modes.
// Planes (NCHW): item = (channel, chunk of its values [K0, K1)).
// Rows (NHWC, or NCHW with spatial < kMinPlaneSpatial): the tensor is num_rows rows of
//   row_len = c * group values, value v of a row belonging to channel v / group.
//   Flat (period > 0): rows are handled as one contiguous run of period values
//   (period = lcm(row_len, 16) <= kMaxRun) repeating; item = chunk of rows.
//   Tiled (period == 0): item = (chunk of rows, tile of values [C0, C1) of each row).
struct Plan {
  bool rows_mode;
  int64_t c, count;       // channels, values per channel
  int64_t cb, ce;         // the channels this call works on, [cb, ce) (a slice, or all)
  int64_t chunks;         // planes: chunks per channel; rows: chunks of rows
  int64_t chunk_len;      // planes: values per chunk; rows: rows per chunk
  int64_t spatial;        // planes: values per image; rows: 1
  int64_t group, row_len, num_rows, period, tile, tiles;  // rows mode
  int64_t grain;          // items per task
  bool serial;            // run on the calling thread

  int64_t channels() const { return ce - cb; }
  int64_t items() const { return rows_mode ? chunks * tiles : channels() * chunks; }
  // Planes: whether training and backward handle a channel in one go (kFuseValues).
  bool fused() const { return !rows_mode && count <= kFuseValues; }
  // Planes: items of the fused passes are channels, grouped like the chunks.
  int64_t fused_grain() const {
    return count >= kParallelValues / 2 ? 1 : kParallelValues / 2 / count;
  }

  // Planes: item geometry.
  int64_t Channel(int64_t item) const { return cb + item / chunks; }
  int64_t K0(int64_t item) const { return (item % chunks) * chunk_len; }
  int64_t K1(int64_t item) const { return Min(count, K0(item) + chunk_len); }
  template <typename T>
  Plane<T> PlaneOf(T* base, int64_t ch) const {
    return Plane<T>{base + ch * spatial, spatial, c * spatial};
  }

  // Planes, element-wise passes: the slice's values of each image, in memory order,
  // cut into pieces of at most kSliceValues.
  int64_t PiecesPerImage() const {
    return Max(int64_t{1}, (channels() * spatial + kSliceValues - 1) / kSliceValues);
  }
  int64_t Slices() const { return count / spatial * PiecesPerImage(); }
  int64_t V0(int64_t slice) const {
    const int64_t image = slice / PiecesPerImage();
    return (image * c + cb) * spatial + (slice % PiecesPerImage()) * kSliceValues;
  }
  int64_t V1(int64_t slice) const {
    const int64_t image = slice / PiecesPerImage();
    return Min((image * c + ce) * spatial, V0(slice) + kSliceValues);
  }

  // Rows: item geometry. Row values [Lo, Hi) belong to the slice's channels.
  int64_t Lo() const { return cb * group; }
  int64_t Hi() const { return ce * group; }
  bool whole() const { return cb == 0 && ce == c; }
  int64_t Chunk(int64_t item) const { return item / tiles; }
  int64_t R0(int64_t item) const { return Chunk(item) * chunk_len; }
  int64_t R1(int64_t item) const { return Min(num_rows, R0(item) + chunk_len); }
  int64_t C0(int64_t item) const { return (item % tiles) * tile; }
  int64_t C1(int64_t item) const { return Min(row_len, C0(item) + tile); }
  // Channels [first, last) of the slice whose values the item holds (may be empty).
  int64_t FirstChannel(int64_t item) const { return period ? cb : Max(cb, C0(item) / group); }
  int64_t LastChannel(int64_t item) const { return period ? ce : Min(ce, C1(item) / group); }
  // Calls fn(pos, ch) for positions [0, len) of a region starting at row value col,
  // ch the channel of the position (stepping, not dividing, per position).
  template <class Fn>
  void ForEachPosition(int64_t col, int64_t len, Fn fn) const {
    int64_t ch = (col % row_len) / group, within = (col % row_len) % group;
    for (int64_t pos = 0; pos < len; ++pos) {
      fn(pos, ch);
      if (++within == group) {
        within = 0;
        if (++ch == c) ch = 0;
      }
    }
  }

  // Calls fn(offset, len, stride, runs, block_runs, col) for the regions of an item
  // that hold the slice's values, in order: `runs` runs of `len` values from value
  // `offset` of the tensor, `stride` apart, position 0 at row value `col`, blocked as
  // the whole region (block_runs). A slice visits the parts of the whole call's
  // regions, position by position in the same order, so its results are the same.
  template <class Fn>
  void ForEachRegion(int64_t item, Fn fn) const {
    const int64_t r0 = R0(item), r1 = R1(item);
    const int64_t lo = Lo(), hi = Hi();
    if (period == 0) {
      const int64_t c0 = Max(C0(item), lo), c1 = Min(C1(item), hi);
      if (c0 < c1) fn(r0 * row_len + c0, c1 - c0, row_len, r1 - r0, BlockRuns(C1(item) - C0(item)), c0);
      return;
    }
    const int64_t values = (r1 - r0) * row_len;
    const int64_t runs = values / period;
    const int64_t rest = (values - runs * period) / row_len;  // rows after the last full run
    const int64_t rest_offset = r0 * row_len + runs * period;
    if (whole()) {
      if (runs > 0) fn(r0 * row_len, period, period, runs, BlockRuns(period), int64_t{0});
      if (rest > 0) fn(rest_offset, row_len, row_len, rest, BlockRuns(row_len), int64_t{0});
      return;
    }
    for (int64_t copy = 0; runs > 0 && copy < period / row_len; ++copy) {
      fn(r0 * row_len + copy * row_len + lo, hi - lo, period, runs, BlockRuns(period), lo);
    }
    if (rest > 0) fn(rest_offset + lo, hi - lo, row_len, rest, BlockRuns(row_len), lo);
  }

  // Calls fn(offset, len, period, pattern_offset) for the contiguous runs of an item
  // in the slice: values [offset, offset + len) of the tensor use pattern values from
  // pattern_offset, repeating every `period`.
  template <class Fn>
  void ForEachRun(int64_t item, Fn fn) const {
    const int64_t r0 = R0(item), r1 = R1(item);
    if (period && whole()) return fn(r0 * row_len, (r1 - r0) * row_len, period, int64_t{0});
    const int64_t c0 = Max(period ? 0 : C0(item), Lo());
    const int64_t c1 = Min(period ? row_len : C1(item), Hi());
    if (c0 >= c1) return;
    for (int64_t r = r0; r < r1; ++r) fn(r * row_len + c0, c1 - c0, c1 - c0, c0);
  }

  // Values of the per-position patterns: a row, or a period, plus padding.
  int64_t PatternSize() const { return (period > row_len ? period : row_len) + kPatternPad; }

  static int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
  static int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }
};

// Returns the plan for a validated, non-empty shape, for channels [cb, ce) (all
// channels unless a slice). `serial_flag`: BNORM_SERIAL. The cutting into items
// depends on the shape only: a slice is cut as the whole tensor.
Plan MakePlan(const bnorm_shape& shape, bool serial_flag, int64_t cb, int64_t ce);

// Writes pattern[v] = per_channel[channel of row value v] for v in [0, PatternSize())
// whose channel is in the plan's slice (others are left alone), with per_channel null
// meaning `fill`.
void FillPattern(const Plan& p, const float* per_channel, float fill, float* pattern);

// Returns this thread's scratch of at least `size` T, grown (never shrunk) as needed:
// no allocation once a thread has seen its largest shape. `slot` separates buffers
// used at the same time.
template <typename T, int slot>
T* Scratch(std::size_t size) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

}  // namespace detail
}  // namespace bnorm

#endif  // BNORM_LIB_OPS_PLAN_H_
