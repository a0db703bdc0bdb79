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

// Returns the float64 moments of block [b0, b1) of an NCHW channel, whole vectors
// widened to float64 and tails one value at a time. For blocks whose float32 sums
// overflowed, and for blocks of tiny values: float32 sums of denormals take x86
// microcode assists (~150 cycles each; e.g. two denormals adding up to a normal
// number), which made moments 2.5x slower.
//
// One pass over the data: float64 sums of x - f and (x - f)^2, f the block's first
// value (0 if that is not finite: the moments are not finite then either). Shifted by
// a value of the data, the variance loses at most a factor n of float64's precision
// ((f - mean)^2 <= n * var), 2^-38 relative for a block of 32768 values. (Two passes,
// sum then squares, read the block twice: out of cache, SSE4 moments on denormals took
// 1.9x the time of normal data.)
template <typename T>
detail::Moments WideBlockPlane(const detail::Plane<const T>& x, int64_t b0, int64_t b1) {
  const double count = static_cast<double>(b1 - b0);
#if HWY_TARGET == HWY_SCALAR
  return ExactMoments(count, [&](auto fn) {
    ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
      for (size_t i = 0; i < len; ++i) fn(detail::ToFloat(x.base[off + i]));
    });
  });
#else
  const DF d;
  const DW dd;
  const size_t N = hn::Lanes(d);
  const float first = detail::ToFloat(x.base[(b0 / x.spatial) * x.stride + b0 % x.spatial]);
  const double f = std::isfinite(first) ? first : 0.0;
  const auto vf = hn::Set(dd, f);
  // Every two whole vectors of the block in float64 (a single one padded with f, which
  // deviates by exactly 0) go to four chains of sums and squares, as the float32 path
  // has (two were latency-bound: AVX2 moments took 2.1x longer on tiny data than on
  // normal data out of cache), prefetching ahead (PrefetchAhead: without, SSE4 moments
  // out of cache took 1.9x the time of normal data, 0.9x with). float32 values are
  // converted from memory where kWideFromMemory (see there).
  auto half = [&](const T* HWY_RESTRICT q, size_t h) BNORM_LAMBDA {
    if (kWideFromMemory && std::is_same<T, float>::value) {
      return WideArg(dd, reinterpret_cast<const float*>(q), h);
    }
    return WideArg(dd, LoadAs(d, q), h);
  };
  auto s0 = hn::Zero(dd), s1 = hn::Zero(dd), s2 = hn::Zero(dd), s3 = hn::Zero(dd);
  auto q0 = hn::Zero(dd), q1 = hn::Zero(dd), q2 = hn::Zero(dd), q3 = hn::Zero(dd);
  auto body = [&](auto a, auto b, auto c, auto e) BNORM_LAMBDA {
    const auto da = hn::Sub(a, vf), db = hn::Sub(b, vf);
    const auto dc = hn::Sub(c, vf), de = hn::Sub(e, vf);
    s0 = hn::Add(s0, da);
    s1 = hn::Add(s1, db);
    s2 = hn::Add(s2, dc);
    s3 = hn::Add(s3, de);
    q0 = hn::MulAdd(da, da, q0);
    q1 = hn::MulAdd(db, db, q1);
    q2 = hn::MulAdd(dc, dc, q2);
    q3 = hn::MulAdd(de, de, q3);
  };
  double sum_tail = 0, sq_tail = 0;
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) BNORM_LAMBDA {
    const T* HWY_RESTRICT p = x.base + off;
    size_t i = 0;
    for (; i + 2 * N <= len; i += 2 * N) {
      PrefetchAhead(p + i);
      body(half(p + i, 0), half(p + i, 1), half(p + i + N, 0), half(p + i + N, 1));
    }
    for (; i + N <= len; i += N) body(half(p + i, 0), half(p + i, 1), vf, vf);
    for (; i < len; ++i) {
      const double dv = static_cast<double>(detail::ToFloat(p[i])) - f;
      sum_tail += dv;
      sq_tail += dv * dv;
    }
  });
  const double sum =
      hn::GetLane(hn::SumOfLanes(dd, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)))) + sum_tail;
  const double sq =
      hn::GetLane(hn::SumOfLanes(dd, hn::Add(hn::Add(q0, q1), hn::Add(q2, q3)))) + sq_tail;
  const double d1 = sum / count;
  double var = sq / count - d1 * d1;
  if (var < 0) var = 0;
  return detail::Moments{count, f + d1, var};
#endif
}

// Returns the moments of block [b0, b1) of an NCHW channel.
template <typename T>
detail::Moments BlockPlane(const detail::Plane<const T>& x, int64_t b0, int64_t b1) {
  const DF d;
  const T* HWY_RESTRICT base = x.base;
  const float first = detail::ToFloat(base[(b0 / x.spatial) * x.stride + b0 % x.spatial]);
  // Tiny values (but not zeros, common after a ReLU) take the float64 path.
  if (first != 0.0f && std::fabs(first) < 0x1p-64f) return WideBlockPlane(x, b0, b1);
  const double count = static_cast<double>(b1 - b0);

  // Pass 1: shifted sum, exact zero for constant data.
  const size_t N = hn::Lanes(d);
  const VF shift = hn::Set(d, first);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) {
    const T* HWY_RESTRICT p = base + off;
    Visit4(
        d, len,
        [&](size_t i) HWY_ATTR {
          a0 = hn::Add(a0, hn::Sub(LoadAs(d, p + i), shift));
          a1 = hn::Add(a1, hn::Sub(LoadAs(d, p + i + N), shift));
          a2 = hn::Add(a2, hn::Sub(LoadAs(d, p + i + 2 * N), shift));
          a3 = hn::Add(a3, hn::Sub(LoadAs(d, p + i + 3 * N), shift));
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
    const T* HWY_RESTRICT p = base + off;
    Visit4(
        d, len,
        [&](size_t i) HWY_ATTR {
          const VF da = hn::Sub(LoadAs(d, p + i), mv);
          const VF db = hn::Sub(LoadAs(d, p + i + N), mv);
          const VF dc = hn::Sub(LoadAs(d, p + i + 2 * N), mv);
          const VF dd = hn::Sub(LoadAs(d, p + i + 3 * N), mv);
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
  return FinishBlock(count, m, SumLanes(d, s1), SumLanes(d, s2),
                     [&] { return WideBlockPlane(x, b0, b1); });
}

template <typename T>
detail::Moments StatsPlaneT(detail::Plane<const T> x, int64_t k0, int64_t k1) {
  const int64_t block = PlaneBlock(DF());
  detail::Moments total;
  for (int64_t b0 = k0; b0 < k1; b0 += block) {
    detail::Merge(total, BlockPlane(x, b0, HWY_MIN(k1, b0 + block)));
  }
  return total;
}

// Two-pass sums of `valid` columns (one vector) over `runs` runs at `stride` of a block:
// m = block mean (first run + sum(x - first run) / runs: exact for constant data),
// s1 = sum(x - m), s2 = sum((x - m)^2). Lanes past `valid` are 0. The first pass
// prefetches the next block.
template <typename T>
HWY_INLINE void ColumnSums1(DF d, const T* HWY_RESTRICT p, int64_t stride, int64_t runs,
                            size_t valid, VF inv_count, float* HWY_RESTRICT m,
                            float* HWY_RESTRICT s1, float* HWY_RESTRICT s2) {
  auto load = [&](int64_t r) { return LoadPartNoPrefetch(d, p + r * stride, valid, 0.0f); };
  const VF first = load(0);
  VF a = hn::Zero(d);
  for (int64_t r = 1; r < runs; ++r) {
    PrefetchBlockAhead(p + r * stride, runs * stride, valid * sizeof(T));
    a = hn::Add(a, hn::Sub(load(r), first));
  }
  const VF mean = hn::MulAdd(a, inv_count, first);
  VF b1 = hn::Zero(d), b2 = hn::Zero(d);
  for (int64_t r = 0; r < runs; ++r) {
    const VF dev = hn::Sub(load(r), mean);
    b1 = hn::Add(b1, dev);
    b2 = hn::MulAdd(dev, dev, b2);
  }
  hn::Store(mean, d, m);
  hn::Store(b1, d, s1);
  hn::Store(b2, d, s2);
}

// As ColumnSums1 for four whole vectors of columns (four independent chains).
template <typename T>
HWY_INLINE void ColumnSums4(DF d, const T* HWY_RESTRICT p, int64_t stride, int64_t runs,
                            VF inv_count, float* HWY_RESTRICT m, float* HWY_RESTRICT s1,
                            float* HWY_RESTRICT s2) {
  const size_t N = hn::Lanes(d);
  const VF f0 = LoadAs(d, p), f1 = LoadAs(d, p + N), f2 = LoadAs(d, p + 2 * N),
           f3 = LoadAs(d, p + 3 * N);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  const int64_t ahead = runs * stride;  // the same columns of the next block
  for (int64_t r = 1; r < runs; ++r) {
    const T* HWY_RESTRICT q = p + r * stride;
    PrefetchBlockAhead(q, ahead, 4 * N * sizeof(T));
    a0 = hn::Add(a0, hn::Sub(LoadNoPrefetch(d, q), f0));
    a1 = hn::Add(a1, hn::Sub(LoadNoPrefetch(d, q + N), f1));
    a2 = hn::Add(a2, hn::Sub(LoadNoPrefetch(d, q + 2 * N), f2));
    a3 = hn::Add(a3, hn::Sub(LoadNoPrefetch(d, q + 3 * N), f3));
  }
  const VF m0 = hn::MulAdd(a0, inv_count, f0), m1 = hn::MulAdd(a1, inv_count, f1),
           m2 = hn::MulAdd(a2, inv_count, f2), m3 = hn::MulAdd(a3, inv_count, f3);
  VF b0 = hn::Zero(d), b1 = hn::Zero(d), b2 = hn::Zero(d), b3 = hn::Zero(d);
  VF c0 = hn::Zero(d), c1 = hn::Zero(d), c2 = hn::Zero(d), c3 = hn::Zero(d);
  for (int64_t r = 0; r < runs; ++r) {
    const T* HWY_RESTRICT q = p + r * stride;
    const VF d0 = hn::Sub(LoadNoPrefetch(d, q), m0), d1 = hn::Sub(LoadNoPrefetch(d, q + N), m1),
             d2 = hn::Sub(LoadNoPrefetch(d, q + 2 * N), m2),
             d3 = hn::Sub(LoadNoPrefetch(d, q + 3 * N), m3);
    b0 = hn::Add(b0, d0);
    b1 = hn::Add(b1, d1);
    b2 = hn::Add(b2, d2);
    b3 = hn::Add(b3, d3);
    c0 = hn::MulAdd(d0, d0, c0);
    c1 = hn::MulAdd(d1, d1, c1);
    c2 = hn::MulAdd(d2, d2, c2);
    c3 = hn::MulAdd(d3, d3, c3);
  }
  hn::Store(m0, d, m);
  hn::Store(m1, d, m + N);
  hn::Store(m2, d, m + 2 * N);
  hn::Store(m3, d, m + 3 * N);
  hn::Store(b0, d, s1);
  hn::Store(b1, d, s1 + N);
  hn::Store(b2, d, s1 + 2 * N);
  hn::Store(b3, d, s1 + 3 * N);
  hn::Store(c0, d, s2);
  hn::Store(c1, d, s2 + N);
  hn::Store(c2, d, s2 + 2 * N);
  hn::Store(c3, d, s2 + 3 * N);
}

template <typename T>
void StatsRegionT(detail::Region<const T> x, detail::Moments* HWY_RESTRICT per_position) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t len = static_cast<size_t>(x.len);
  const int64_t rows_per_block = x.block_runs;
  // Per-position float32 sums of one block; lanes past len stay 0 (padding loads 0).
  HWY_ALIGN float shift[detail::kMaxRun + kMaxLanes], sum[detail::kMaxRun + kMaxLanes],
      s2[detail::kMaxRun + kMaxLanes];
  // Running moments per position (float64, one count for all positions).
  HWY_ALIGN double mean[detail::kMaxRun], var[detail::kMaxRun];
  for (size_t pos = 0; pos < len; ++pos) mean[pos] = var[pos] = 0;
  bool slow[detail::kMaxRun];  // Inf/NaN or float32 overflow seen at this position
  for (size_t pos = 0; pos < len; ++pos) slow[pos] = false;
  double total = 0;

  for (int64_t rb = 0; rb < x.rows; rb += rows_per_block) {
    const int64_t re = HWY_MIN(x.rows, rb + rows_per_block);
    const double count = static_cast<double>(re - rb);
    // Two passes over the block, a few columns at a time so the sums stay in registers.
    const T* HWY_RESTRICT block = x.base + rb * x.stride;
    const int64_t runs = re - rb;
    const VF inv_count = hn::Set(d, static_cast<float>(1.0 / count));
    size_t j = 0;
    for (; j + 4 * N <= len; j += 4 * N) {
      ColumnSums4(d, block + j, x.stride, runs, inv_count, shift + j, sum + j, s2 + j);
    }
    for (; j < len; j += N) {
      ColumnSums1(d, block + j, x.stride, runs, HWY_MIN(N, len - j), inv_count, shift + j,
                  sum + j, s2 + j);
    }
    // Fold the block into the running moments. Positions whose sums overflowed float32
    // or whose data is not finite (now or in an earlier block) go one by one through
    // FinishBlock/Merge; the others through a float64 loop that vectorizes (all
    // positions share the counts). The choice is per position, so a position's result
    // never depends on its neighbours (channel slices are bit-identical to the whole).
    bool any_slow = false;
    for (size_t j = 0; j < len; j += N) {
      const auto finite = hn::And(hn::IsFinite(hn::Load(d, sum + j)), hn::IsFinite(hn::Load(d, s2 + j)));
      if (hn::AllTrue(d, finite)) continue;
      for (size_t pos = j; pos < HWY_MIN(len, j + N); ++pos) {
        slow[pos] |= !(std::isfinite(sum[pos]) && std::isfinite(s2[pos]));
      }
    }
    for (size_t pos = 0; pos < len; ++pos) any_slow |= slow[pos];
    const double wb = count / (total + count), wa = total / (total + count);
    for (size_t pos = 0; pos < len; ++pos) {
      const double d1 = sum[pos] / count;
      const double block_mean = shift[pos] + d1;
      const double block_var = HWY_MAX(s2[pos] / count - d1 * d1, 0.0);
      const double delta = block_mean - mean[pos];
      const double new_mean = mean[pos] + delta * wb;
      const double new_var = wa * var[pos] + wb * block_var + wa * wb * delta * delta;
      mean[pos] = slow[pos] ? mean[pos] : new_mean;
      var[pos] = slow[pos] ? var[pos] : new_var;
    }
    for (size_t pos = 0; any_slow && pos < len; ++pos) {
      if (!slow[pos]) continue;
      detail::Moments m{total, mean[pos], var[pos]};
      detail::Merge(m, FinishBlock(count, shift[pos], sum[pos], s2[pos], [&] {
        return ExactMoments(count, [&](auto fn) {
          for (int64_t r = rb; r < re; ++r) {
            fn(detail::ToFloat(x.base[r * x.stride + static_cast<int64_t>(pos)]));
          }
        });
      }));
      mean[pos] = m.mean;
      var[pos] = m.var;
    }
    total += count;
  }
  for (size_t pos = 0; pos < len; ++pos) per_position[pos] = detail::Moments{total, mean[pos], var[pos]};
}

// Non-template names for HWY_EXPORT, one per element type.
#define BNORM_STATS_KERNELS(T, S)                                                        \
  detail::Moments StatsPlane##S(detail::Plane<const T> x, int64_t k0, int64_t k1) {      \
    return StatsPlaneT(x, k0, k1);                                                       \
  }                                                                                      \
  void StatsRegion##S(detail::Region<const T> x, detail::Moments* per_position) {        \
    StatsRegionT(x, per_position);                                                       \
  }
BNORM_FOR_TYPES(BNORM_STATS_KERNELS)
#undef BNORM_STATS_KERNELS

int64_t StatsTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {

#define BNORM_STATS_DISPATCH(T, S)                                                       \
  namespace {                                                                            \
  HWY_EXPORT(StatsPlane##S);                                                             \
  HWY_EXPORT(StatsRegion##S);                                                            \
  }                                                                                      \
  template <>                                                                            \
  Moments StatsPlane<T>(Plane<const T> x, int64_t k0, int64_t k1) {                      \
    return BNORM_DISPATCH(StatsPlane##S)(x, k0, k1);                                     \
  }                                                                                      \
  template <>                                                                            \
  void StatsRegion<T>(Region<const T> x, Moments* per_position) {                        \
    BNORM_DISPATCH(StatsRegion##S)(x, per_position);                                     \
  }
BNORM_FOR_TYPES(BNORM_STATS_DISPATCH)
#undef BNORM_STATS_DISPATCH

namespace {
HWY_EXPORT(StatsTarget);
}  // namespace

int64_t StatsTarget() { return BNORM_DISPATCH(StatsTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
