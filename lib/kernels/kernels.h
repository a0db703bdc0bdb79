// Kernel entry points: one call processes one work item (a chunk of one channel in
// NCHW, a block of rows x channels in NHWC) on the active target. No Highway types
// here; the drivers in lib/ops/ cut the work and call these. Tensor elements (T) are
// float, bnorm_bf16 or bnorm_f16: widened to float32 on load, every sum and product in
// float32 or float64, rounded to T once on store (to nearest, ties to even).
#ifndef BNORM_LIB_KERNELS_KERNELS_H_
#define BNORM_LIB_KERNELS_KERNELS_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "bnorm/bnorm.h"

namespace bnorm {
namespace detail {

// Returns a tensor element as float32 (exact).
inline float ToFloat(float v) { return v; }
inline float ToFloat(bnorm_bf16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline float ToFloat(bnorm_f16 v) {
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu, mant = v.bits & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float32
    const float m = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&bits, &m, sizeof(bits));
  } else if (exp == 31) {  // Inf or NaN
    bits = 0x7f800000u | (mant << 13);
  } else {
    bits = ((exp + 112) << 23) | (mant << 13);
  }
  bits |= sign;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Calls M(T, SUFFIX) for every tensor element type (kernel files instantiate their
// templates under names with the suffix, for HWY_EXPORT).
#define BNORM_FOR_TYPES(M) M(float, F32) M(bnorm_bf16, BF16) M(bnorm_f16, F16)

// Values per statistics block: a block is reduced in float32 (two passes while it
// sits in L1), blocks are merged in float64 with Chan's formula, in order.
constexpr int64_t kBlock = 8192;

// One channel of an NCHW tensor: its k-th value (k in [0, n*spatial)) lives at
// base[(k / spatial) * stride + k % spatial], stride = c * spatial.
template <typename T>
struct Plane {
  T* base;
  int64_t spatial, stride;
};

// Count, mean and biased variance of a set of values, in float64.
struct Moments {
  double count = 0, mean = 0, var = 0;
};

// Merges `b` into `a` with Chan's formula (variance form: no overflow of M2).
inline void Merge(Moments& a, const Moments& b) {
  if (b.count == 0) return;
  if (a.count == 0) {
    a = b;
    return;
  }
  const double count = a.count + b.count;
  const double inv = 1.0 / count;
  const double wb = b.count * inv, wa = a.count * inv;
  if (!std::isfinite(a.mean) || !std::isfinite(b.mean)) {
    // Inf or NaN data: the mean is what IEEE gives for the sum (+Inf stays +Inf,
    // +Inf with -Inf is NaN), the variance is NaN, as a two-pass float64 gives.
    a.mean = wa * a.mean + wb * b.mean;
    a.var = std::numeric_limits<double>::quiet_NaN();
    a.count = count;
    return;
  }
  const double delta = b.mean - a.mean;
  a.mean += delta * wb;
  a.var = wa * a.var + wb * b.var + wa * wb * delta * delta;
  a.count = count;
}

// Returns the HWY_TARGET of the code the kernels dispatch to now (all kernel files
// agree; this checks that they do and reports 0 if they do not).
int64_t DispatchedTarget();
int64_t StatsTarget();     // HWY_TARGET of the dispatched stats kernels
int64_t AffineTarget();    // ... of the affine kernels
int64_t BackwardTarget();  // ... of the backward kernels

// --- NCHW: one channel, values [k0, k1) -------------------------------------------

// Returns the moments of values [k0, k1) of `x`, blocks of kBlock from k0 merged in order.
template <typename T>
Moments StatsPlane(Plane<const T> x, int64_t k0, int64_t k1);

// Writes y[k] = (x[k] - sub) * mul + add (+ ReLU) for k in [k0, k1). y may equal x.
// `stream` uses non-temporal stores.
template <typename T>
void AffinePlane(Plane<const T> x, Plane<T> y, int64_t k0, int64_t k1, float sub, float mul,
                 float add, bool relu, bool stream);

// Writes y = (x - sub[ch]) * mul[ch] + add[ch] (+ ReLU) for the values [v0, v1) of an
// NCHW tensor in memory order (runs of `spatial` values, channel = run % c); sub may be
// null (0). y may equal x.
template <typename T>
void AffineSlice(const T* x, T* y, int64_t spatial, int64_t c, int64_t v0, int64_t v1,
                 const float* sub, const float* mul, const float* add, bool relu, bool stream);

// Sums over [k0, k1): dy' and dy' * (x - mean), dy' = dy masked where y <= 0 when y
// is not null.
template <typename T>
void BackwardSumsPlane(Plane<const T> x, Plane<const T> dy, Plane<const T> y, int64_t k0,
                       int64_t k1, float mean, double* sum_dy, double* sum_dy_xc);

// Writes dx = k_dy * dy' + k_xc * (x - mean) + k_0 for k in [k0, k1). dx may equal dy or x.
template <typename T>
void BackwardDxPlane(Plane<const T> x, Plane<const T> dy, Plane<const T> y, Plane<T> dx,
                     int64_t k0, int64_t k1, float mean, float k_dy, float k_xc, float k_0,
                     bool stream);

// Writes dx = k_dy[ch] * dy' + k_xc[ch] * (x - mean[ch]) + k_0[ch] for the values
// [v0, v1) of an NCHW tensor in memory order, as AffineSlice.
template <typename T>
void BackwardDxSlice(const T* x, const T* dy, const T* y, T* dx, int64_t spatial, int64_t c,
                     int64_t v0, int64_t v1, const float* mean, const float* k_dy,
                     const float* k_xc, const float* k_0, bool stream);

// --- Rows: a tensor seen as rows of values (NHWC, or NCHW with small spatial) -------
// A region is `rows` runs of `len` values, run r at base + r * stride. Per-position
// results are indexed by the position in a run, [0, len).

// Most values of one run (per-position sums live on the stack).
constexpr int64_t kMaxRun = 1024;

// Float32 sums are kept short for accuracy: at most kTermsPerLane terms per lane
// before a block is folded into float64 (error ~ sqrt(128) ulps, not sqrt(count)).
constexpr int64_t kTermsPerLane = 128;

// Returns the runs per block for runs of `len` values: about 32K values (128 KiB: the
// second pass reads L2), at least 32 runs to amortize the float64 work per position,
// at most kTermsPerLane. Per-position results depend on it: a part of a region is
// processed with the block_runs of the whole.
constexpr int64_t BlockRuns(int64_t len) {
  return len <= 0 ? kTermsPerLane
                  : (32768 / len < 32 ? 32 : (32768 / len > kTermsPerLane ? kTermsPerLane : 32768 / len));
}

template <typename T>
struct Region {
  T* base;
  int64_t len, stride, rows;
  int64_t block_runs;  // runs per float32 block (BlockRuns of the whole region)
};

// Writes the moments of every position of the region (over its runs), blocks of runs
// merged in order. len <= kMaxRun.
template <typename T>
void StatsRegion(Region<const T> x, Moments* per_position);

// Writes sums over the runs of dy' and dy' * (x - mean[pos]) per position, dy' = dy
// masked where y <= 0 when y.base is not null. len <= kMaxRun.
template <typename T>
void BackwardSumsRegion(Region<const T> x, Region<const T> dy, Region<const T> y,
                        const float* mean, double* sum_dy, double* sum_dy_xc);

// Coefficients repeating with `period` values: value i uses coef[i % period]. Arrays
// hold period + kPatternPad values (the first kPatternPad repeated), so that a vector
// load at any phase stays inside.
constexpr int64_t kPatternPad = 64;

// AffineRun's coefficient patterns (see kPatternPad; sub null: nothing to subtract),
// and float64 copies of mul and add for the lanes that go through float64 (denormal
// x - sub), which read them without converting (converted in the loop instead, AVX-512
// NHWC affine on L2-resident denormals took 1.1x the time).
struct AffinePattern {
  const float *sub, *mul, *add;
  const double *mul_w, *add_w;
  // The patterns from value `at` on.
  AffinePattern At(int64_t at) const {
    return {sub ? sub + at : nullptr, mul + at, add + at, mul_w + at, add_w + at};
  }
};

// Writes y[i] = (x[i] - sub[i % period]) * mul[i % period] + add[i % period] (+ ReLU)
// for i in [0, len), coefficients from c. y may equal x. `stream`: non-temporal stores.
template <typename T>
void AffineRun(const T* x, T* y, int64_t len, const AffinePattern& c, int64_t period, bool relu,
               bool stream);

// Writes dx[i] = k_dy * dy' + k_xc * (x - mean) + k_0 with coefficients [i % period],
// dy' = dy masked where y <= 0 when y is not null. dx may equal dy or x.
template <typename T>
void BackwardDxRun(const T* x, const T* dy, const T* y, T* dx, int64_t len, const float* mean,
                   const float* k_dy, const float* k_xc, const float* k_0, int64_t period,
                   bool stream);

}  // namespace detail
}  // namespace bnorm

#endif  // BNORM_LIB_KERNELS_KERNELS_H_
