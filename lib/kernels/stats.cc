// Statistics kernels: per-channel count, mean and variance of one work item, as
// blocks reduced in float32 by two passes over L1-resident data (shift by the block's
// first value, then deviations from the block mean), merged in float64 (Chan).
#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "lib/kernels/stats.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "lib/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm {
namespace HWY_NAMESPACE {

// Returns the moments of `count` values from sums over the block: m = block shift
// mean, s1 = sum(x - m), s2 = sum((x - m)^2). Falls back to float64 over the values
// (recompute(m) -> moments) when float32 overflowed (|x - m|^2 beyond FLT_MAX).
template <class Recompute>
detail::Moments FinishBlock(double count, float m, float s1, float s2, Recompute recompute) {
  if (!std::isfinite(s1) || !std::isfinite(s2)) return recompute();
  const double d1 = static_cast<double>(s1) / count;
  double var = static_cast<double>(s2) / count - d1 * d1;
  if (var < 0) var = 0;
  return detail::Moments{count, m + d1, var};
}

// Returns the float64 two-pass moments of the values visited by for_each(fn(value)).
template <class ForEach>
detail::Moments ExactMoments(double count, ForEach for_each) {
  double sum = 0, m2 = 0;
  for_each([&](float v) { sum += v; });
  const double mean = sum / count;
  for_each([&](float v) { m2 += (v - mean) * (v - mean); });
  return detail::Moments{count, mean, m2 / count};
}

// Returns the moments of block [b0, b1) of an NCHW channel.
detail::Moments BlockPlane(const detail::Plane<const float>& x, int64_t b0, int64_t b1) {
  const DF d;
  const float* HWY_RESTRICT base = x.base;
  const float first = base[(b0 / x.spatial) * x.stride + b0 % x.spatial];
  const double count = static_cast<double>(b1 - b0);

  // Pass 1: shifted sum, exact zero for constant data.
  const VF shift = hn::Set(d, first);
  VF sum = hn::Zero(d);
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
    const float* p = base + off;
    size_t i = 0;
    for (; i + hn::Lanes(d) <= len; i += hn::Lanes(d)) sum = hn::Add(sum, hn::Sub(hn::LoadU(d, p + i), shift));
    if (i < len) sum = hn::Add(sum, hn::Sub(LoadPart(d, p + i, len - i, first), shift));
  });
  const float m = first + static_cast<float>(SumLanes(d, sum) / count);

  // Pass 2: deviations from m (padding lanes contribute exactly 0).
  const VF mv = hn::Set(d, m);
  VF s1 = hn::Zero(d), s2 = hn::Zero(d);
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
    const float* p = base + off;
    for (size_t i = 0; i < len; i += hn::Lanes(d)) {
      const VF dev = hn::Sub(LoadPart(d, p + i, HWY_MIN(hn::Lanes(d), len - i), m), mv);
      s1 = hn::Add(s1, dev);
      s2 = hn::MulAdd(dev, dev, s2);
    }
  });
  return FinishBlock(count, m, SumLanes(d, s1), SumLanes(d, s2), [&] {
    return ExactMoments(count, [&](auto fn) {
      ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
        for (size_t i = 0; i < len; ++i) fn(base[off + i]);
      });
    });
  });
}

detail::Moments StatsPlane(detail::Plane<const float> x, int64_t k0, int64_t k1) {
  const int64_t block = PlaneBlock(DF());
  detail::Moments total;
  for (int64_t b0 = k0; b0 < k1; b0 += block) {
    detail::Merge(total, BlockPlane(x, b0, HWY_MIN(k1, b0 + block)));
  }
  return total;
}

void StatsRows(const float* HWY_RESTRICT x, int64_t c, int64_t r0, int64_t r1, int64_t c0,
               int64_t c1, detail::Moments* HWY_RESTRICT moments) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const int64_t width = c1 - c0;
  const int64_t rows_per_block = RowsPerBlock(width);
  HWY_ALIGN float shift[detail::kTile + kMaxLanes], s1[detail::kTile + kMaxLanes],
      s2[detail::kTile + kMaxLanes];
  for (int64_t ch = 0; ch < width; ++ch) moments[ch] = detail::Moments();

  for (int64_t rb = r0; rb < r1; rb += rows_per_block) {
    const int64_t re = HWY_MIN(r1, rb + rows_per_block);
    const double count = static_cast<double>(re - rb);
    const VF inv_count = hn::Set(d, static_cast<float>(1.0 / count));
    for (int64_t j = 0; j < width; j += static_cast<int64_t>(N)) {
      const size_t valid = static_cast<size_t>(HWY_MIN(static_cast<int64_t>(N), width - j));
      const float* HWY_RESTRICT col = x + c0 + j;
      const VF first = LoadPart(d, col + rb * c, valid, 0.0f);
      VF sum = hn::Zero(d);
      for (int64_t r = rb + 1; r < re; ++r) {
        sum = hn::Add(sum, hn::Sub(LoadPart(d, col + r * c, valid, 0.0f), first));
      }
      const VF m = hn::MulAdd(sum, inv_count, first);
      VF a1 = hn::Zero(d), a2 = hn::Zero(d);
      for (int64_t r = rb; r < re; ++r) {
        const VF dev = hn::Sub(LoadPart(d, col + r * c, valid, 0.0f), m);
        a1 = hn::Add(a1, dev);
        a2 = hn::MulAdd(dev, dev, a2);
      }
      hn::Store(m, d, shift + j);
      hn::Store(a1, d, s1 + j);
      hn::Store(a2, d, s2 + j);
    }
    for (int64_t ch = 0; ch < width; ++ch) {
      detail::Merge(moments[ch], FinishBlock(count, shift[ch], s1[ch], s2[ch], [&] {
        return ExactMoments(count, [&](auto fn) {
          for (int64_t r = rb; r < re; ++r) fn(x[r * c + c0 + ch]);
        });
      }));
    }
  }
}

int64_t StatsTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {
namespace {
HWY_EXPORT(StatsPlane);
HWY_EXPORT(StatsRows);
HWY_EXPORT(StatsTarget);
}  // namespace

Moments StatsPlane(Plane<const float> x, int64_t k0, int64_t k1) {
  return BNORM_DISPATCH(StatsPlane)(x, k0, k1);
}

void StatsRows(const float* x, int64_t c, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
               Moments* moments) {
  BNORM_DISPATCH(StatsRows)(x, c, r0, r1, c0, c1, moments);
}

int64_t StatsTarget() { return BNORM_DISPATCH(StatsTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
