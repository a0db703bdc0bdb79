// Batch statistics driver: per-item partial moments, merged per channel in item order.
#include "lib/ops/ops.h"

namespace bnorm {
namespace detail {

template <typename T>
void ChannelMoments(const Plan& p, const T* x, Moments* moments) {
  if (!p.rows_mode) {
    if (p.chunks == 1) {  // one item per channel: no partials to merge
      parallel::For(p.channels(), p.grain, p.serial, [&](int64_t i) {
        moments[p.cb + i] = StatsPlane(p.PlaneOf(x, p.cb + i), 0, p.count);
      });
      return;
    }
    Moments* partial = Scratch<Moments, 0>(static_cast<size_t>(p.items()));
    parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
      partial[item] = StatsPlane(p.PlaneOf(x, p.Channel(item)), p.K0(item), p.K1(item));
    });
    MergeChannels(p, [&](int64_t ch) {
      Moments m;
      for (int64_t k = 0; k < p.chunks; ++k) Merge(m, partial[(ch - p.cb) * p.chunks + k]);
      moments[ch] = m;
    });
    return;
  }
  // Rows: per-position moments of each region, merged into partial[chunk * c + ch] in
  // position order, then over chunks in order.
  Moments* partial = Scratch<Moments, 0>(static_cast<size_t>(p.chunks * p.c));
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    Moments* out = partial + p.Chunk(item) * p.c;
    for (int64_t ch = p.FirstChannel(item); ch < p.LastChannel(item); ++ch) out[ch] = Moments();
    Moments per_position[kMaxRun];
    p.ForEachRegion(item, [&](int64_t offset, int64_t len, int64_t stride, int64_t runs,
                              int64_t block_runs, int64_t col) {
      StatsRegion(Region<const T>{x + offset, len, stride, runs, block_runs}, per_position);
      p.ForEachPosition(col, len, [&](int64_t pos, int64_t ch) { Merge(out[ch], per_position[pos]); });
    });
  });
  MergeChannels(p, [&](int64_t ch) {
    Moments m;
    for (int64_t k = 0; k < p.chunks; ++k) Merge(m, partial[k * p.c + ch]);
    moments[ch] = m;
  });
}

template <typename T>
void MomentsOp(const bnorm_shape& s, const Channels& range, const T* x, float* mean,
               float* var, unsigned flags) {
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, range.begin, range.end);
  Moments* moments = Scratch<Moments, 1>(static_cast<size_t>(p.c));
  ChannelMoments(p, x, moments);
  for (int64_t ch = p.cb; ch < p.ce; ++ch) {
    mean[ch] = static_cast<float>(moments[ch].mean);
    var[ch] = static_cast<float>(moments[ch].var);
  }
}

#define BNORM_MOMENTS_OPS(T, S)                                                         \
  template void ChannelMoments(const Plan&, const T*, Moments*);                       \
  template void MomentsOp(const bnorm_shape&, const Channels&, const T*, float*, float*, \
                          unsigned);
BNORM_FOR_TYPES(BNORM_MOMENTS_OPS)
#undef BNORM_MOMENTS_OPS

}  // namespace detail
}  // namespace bnorm
