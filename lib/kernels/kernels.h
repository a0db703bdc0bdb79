// Kernel entry points: one call processes one work item (a chunk of one channel in
// NCHW, a block of rows x channels in NHWC) on the active target. No Highway types
// here; the drivers in lib/ops/ cut the work and call these.
#ifndef BNORM_LIB_KERNELS_KERNELS_H_
#define BNORM_LIB_KERNELS_KERNELS_H_

#include <cmath>
#include <cstdint>
#include <limits>

namespace bnorm {
namespace detail {

// Values per statistics block: a block is reduced in float32 (two passes while it
// sits in L1), blocks are merged in float64 with Chan's formula, in order.
constexpr int64_t kBlock = 2048;

// Most channels of one NHWC work item (the kernels keep per-channel sums on the stack).
constexpr int64_t kTile = 512;

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
  const double wb = b.count / count, wa = a.count / count;
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
Moments StatsPlane(Plane<const float> x, int64_t k0, int64_t k1);

// Writes y[k] = (x[k] - sub) * mul + add (+ ReLU) for k in [k0, k1). y may equal x.
// `stream` uses non-temporal stores.
void AffinePlane(Plane<const float> x, Plane<float> y, int64_t k0, int64_t k1, float sub,
                 float mul, float add, bool relu, bool stream);

// Sums over [k0, k1): dy' and dy' * (x - mean), dy' = dy masked where y <= 0 when y
// is not null.
void BackwardSumsPlane(Plane<const float> x, Plane<const float> dy, Plane<const float> y,
                       int64_t k0, int64_t k1, float mean, double* sum_dy, double* sum_dy_xc);

// Writes dx = k_dy * dy' + k_xc * (x - mean) + k_0 for k in [k0, k1). dx may equal dy or x.
void BackwardDxPlane(Plane<const float> x, Plane<const float> dy, Plane<const float> y,
                     Plane<float> dx, int64_t k0, int64_t k1, float mean, float k_dy,
                     float k_xc, float k_0, bool stream);

// --- NHWC: rows [r0, r1) of length c, channels [c0, c1) -----------------------------
// Per-channel arrays are indexed by ch - c0 (outputs) or by ch (inputs), as stated.

// Writes moments[ch - c0] of the rows, blocks of rows merged in order.
void StatsRows(const float* x, int64_t c, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
               Moments* moments);

// Writes y = (x - sub[ch]) * mul[ch] + add[ch] (+ ReLU); sub may be null (0). Arrays
// indexed by ch.
void AffineRows(const float* x, float* y, int64_t c, int64_t r0, int64_t r1, int64_t c0,
                int64_t c1, const float* sub, const float* mul, const float* add, bool relu,
                bool stream);

// Writes sum_dy[ch - c0] and sum_dy_xc[ch - c0]; mean indexed by ch; y may be null.
void BackwardSumsRows(const float* x, const float* dy, const float* y, int64_t c, int64_t r0,
                      int64_t r1, int64_t c0, int64_t c1, const float* mean, double* sum_dy,
                      double* sum_dy_xc);

// Writes dx = k_dy[ch] * dy' + k_xc[ch] * (x - mean[ch]) + k_0[ch]; arrays indexed by ch.
void BackwardDxRows(const float* x, const float* dy, const float* y, float* dx, int64_t c,
                    int64_t r0, int64_t r1, int64_t c0, int64_t c1, const float* mean,
                    const float* k_dy, const float* k_xc, const float* k_0, bool stream);

}  // namespace detail
}  // namespace bnorm

#endif  // BNORM_LIB_KERNELS_KERNELS_H_
