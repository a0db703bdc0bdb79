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

// Values per NCHW work item (a chunk of one channel); a multiple of kBlock. A channel
// that fits one chunk is read once by training (statistics then normalization).
constexpr int64_t kChunk = 32 * kBlock;
// Values per NHWC work item, roughly (rows x channel tile).
constexpr int64_t kRowChunkValues = 64 * 1024;
// Below this many values a call runs on the calling thread (fan-out costs more).
constexpr int64_t kParallelValues = 64 * 1024;

// Work items of one tensor. NCHW: item = (channel, chunk of values k in [k0, k1)).
// NHWC: item = (chunk of rows [r0, r1), tile of channels [c0, c1)).
struct Plan {
  bool nhwc;
  int64_t n, c, spatial;  // after folding degenerate layouts (see MakePlan)
  int64_t count;          // values per channel
  int64_t chunks;         // chunks per channel (NCHW) or row chunks (NHWC)
  int64_t chunk_len;      // values (NCHW) or rows (NHWC) per chunk
  int64_t tiles;          // NHWC channel tiles
  int64_t grain;          // items per task
  bool serial;            // run on the calling thread

  int64_t items() const { return nhwc ? chunks * tiles : c * chunks; }

  // NCHW item geometry.
  int64_t Channel(int64_t item) const { return item / chunks; }
  int64_t K0(int64_t item) const { return (item % chunks) * chunk_len; }
  int64_t K1(int64_t item) const { return Min(count, K0(item) + chunk_len); }
  template <typename T>
  Plane<T> PlaneOf(T* base, int64_t ch) const {
    return Plane<T>{base + ch * spatial, spatial, c * spatial};
  }

  // NHWC item geometry.
  int64_t Chunk(int64_t item) const { return item / tiles; }
  int64_t R0(int64_t item) const { return Chunk(item) * chunk_len; }
  int64_t R1(int64_t item) const { return Min(count, R0(item) + chunk_len); }
  int64_t C0(int64_t item) const { return (item % tiles) * kTile; }
  int64_t C1(int64_t item) const { return Min(c, C0(item) + kTile); }

  static int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
};

// Returns the plan for a validated, non-empty shape. `serial_flag`: BNORM_SERIAL.
Plan MakePlan(const bnorm_shape& shape, bool serial_flag);

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
