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
  const size_t N = hn::Lanes(d);
  const VF shift = hn::Set(d, first);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
    const float* HWY_RESTRICT p = base + off;
    Visit4(
        d, len,
        [&](size_t i) HWY_ATTR {
          a0 = hn::Add(a0, hn::Sub(hn::LoadU(d, p + i), shift));
          a1 = hn::Add(a1, hn::Sub(hn::LoadU(d, p + i + N), shift));
          a2 = hn::Add(a2, hn::Sub(hn::LoadU(d, p + i + 2 * N), shift));
          a3 = hn::Add(a3, hn::Sub(hn::LoadU(d, p + i + 3 * N), shift));
        },
        [&](size_t i, size_t valid) HWY_ATTR {
          a0 = hn::Add(a0, hn::Sub(LoadPart(d, p + i, valid, first), shift));
        });
  });
  const VF sum = hn::Add(hn::Add(a0, a1), hn::Add(a2, a3));
  const float m = first + static_cast<float>(SumLanes(d, sum) / count);

  // Pass 2: deviations from m (padding lanes contribute exactly 0).
  const VF mv = hn::Set(d, m);
  VF s1a = hn::Zero(d), s1b = hn::Zero(d), s2a = hn::Zero(d), s2b = hn::Zero(d);
  VF s1c = hn::Zero(d), s1d = hn::Zero(d), s2c = hn::Zero(d), s2d = hn::Zero(d);
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
    const float* HWY_RESTRICT p = base + off;
    Visit4(
        d, len,
        [&](size_t i) HWY_ATTR {
          const VF da = hn::Sub(hn::LoadU(d, p + i), mv);
          const VF db = hn::Sub(hn::LoadU(d, p + i + N), mv);
          const VF dc = hn::Sub(hn::LoadU(d, p + i + 2 * N), mv);
          const VF dd = hn::Sub(hn::LoadU(d, p + i + 3 * N), mv);
          s1a = hn::Add(s1a, da);
          s2a = hn::MulAdd(da, da, s2a);
          s1b = hn::Add(s1b, db);
          s2b = hn::MulAdd(db, db, s2b);
          s1c = hn::Add(s1c, dc);
          s2c = hn::MulAdd(dc, dc, s2c);
          s1d = hn::Add(s1d, dd);
          s2d = hn::MulAdd(dd, dd, s2d);
        },
        [&](size_t i, size_t valid) HWY_ATTR {
          const VF da = hn::Sub(LoadPart(d, p + i, valid, m), mv);
          s1a = hn::Add(s1a, da);
          s2a = hn::MulAdd(da, da, s2a);
        });
  });
  const VF s1 = hn::Add(hn::Add(s1a, s1b), hn::Add(s1c, s1d));
  const VF s2 = hn::Add(hn::Add(s2a, s2b), hn::Add(s2c, s2d));
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

void StatsRegion(detail::Region<const float> x, detail::Moments* HWY_RESTRICT per_position) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t len = static_cast<size_t>(x.len);
  const int64_t rows_per_block = RowsPerBlock(x.len);
  // Per-position float32 sums of one block; lanes past len stay 0 (padding loads 0).
  HWY_ALIGN float shift[detail::kMaxRun + kMaxLanes], sum[detail::kMaxRun + kMaxLanes],
      s2[detail::kMaxRun + kMaxLanes];
  for (size_t pos = 0; pos < len; ++pos) per_position[pos] = detail::Moments();

  for (int64_t rb = 0; rb < x.rows; rb += rows_per_block) {
    const int64_t re = HWY_MIN(x.rows, rb + rows_per_block);
    const double count = static_cast<double>(re - rb);
    // Pass 1: sums shifted by the block's first run (exact zeros for constant data).
    const float* HWY_RESTRICT first = x.base + rb * x.stride;
    for (size_t j = 0; j < len; j += N) {
      hn::Store(LoadPart(d, first + j, HWY_MIN(N, len - j), 0.0f), d, shift + j);
      hn::Store(hn::Zero(d), d, sum + j);
    }
    for (int64_t r = rb + 1; r < re; ++r) {
      const float* HWY_RESTRICT run = x.base + r * x.stride;
      for (size_t j = 0; j < len; j += N) {
        const VF v = hn::Sub(LoadPart(d, run + j, HWY_MIN(N, len - j), 0.0f), hn::Load(d, shift + j));
        hn::Store(hn::Add(hn::Load(d, sum + j), v), d, sum + j);
      }
    }
    // The block mean per position replaces the shift; sum becomes sum(x - m).
    const VF inv_count = hn::Set(d, static_cast<float>(1.0 / count));
    for (size_t j = 0; j < len; j += N) {
      hn::Store(hn::MulAdd(hn::Load(d, sum + j), inv_count, hn::Load(d, shift + j)), d, shift + j);
      hn::Store(hn::Zero(d), d, sum + j);
      hn::Store(hn::Zero(d), d, s2 + j);
    }
    // Pass 2: deviations from the block mean, while the block is in L1/L2.
    for (int64_t r = rb; r < re; ++r) {
      const float* HWY_RESTRICT run = x.base + r * x.stride;
      for (size_t j = 0; j < len; j += N) {
        const VF dev = hn::Sub(LoadPart(d, run + j, HWY_MIN(N, len - j), 0.0f), hn::Load(d, shift + j));
        hn::Store(hn::Add(hn::Load(d, sum + j), dev), d, sum + j);
        hn::Store(hn::MulAdd(dev, dev, hn::Load(d, s2 + j)), d, s2 + j);
      }
    }
    for (size_t pos = 0; pos < len; ++pos) {
      detail::Merge(per_position[pos], FinishBlock(count, shift[pos], sum[pos], s2[pos], [&] {
        return ExactMoments(count, [&](auto fn) {
          for (int64_t r = rb; r < re; ++r) fn(x.base[r * x.stride + static_cast<int64_t>(pos)]);
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
HWY_EXPORT(StatsRegion);
HWY_EXPORT(StatsTarget);
}  // namespace

Moments StatsPlane(Plane<const float> x, int64_t k0, int64_t k1) {
  return BNORM_DISPATCH(StatsPlane)(x, k0, k1);
}

void StatsRegion(Region<const float> x, Moments* per_position) {
  BNORM_DISPATCH(StatsRegion)(x, per_position);
}

int64_t StatsTarget() { return BNORM_DISPATCH(StatsTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
