// Float64 reference for every bnorm operation, written for obviousness: two passes,
// plain loops, no blocking. Each output comes with a magnitude `mag` so that a float32
// result is accepted when |got - value| <= k * 2^-24 * mag (see Near / kUlp).
#ifndef BNORM_TEST_REFERENCE_H_
#define BNORM_TEST_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "bnorm/bnorm.h"

namespace bnorm {
namespace ref {

using Vec = std::vector<double>;

// One float32 unit of rounding.
constexpr double kUlp = 1.0 / 16777216.0;

// Returns the offset of element (image i, channel ch, spatial position sp).
inline int64_t Offset(const bnorm_shape& s, int64_t i, int64_t ch, int64_t sp) {
  return s.layout == bnorm_nchw ? (i * s.c + ch) * s.spatial + sp
                                : (i * s.spatial + sp) * s.c + ch;
}
inline int64_t Count(const bnorm_shape& s) { return s.n * s.spatial; }
inline int64_t Elements(const bnorm_shape& s) { return s.n * s.c * s.spatial; }

// A reference result: value, and the magnitude the rounding error scales with.
struct Output {
  Vec value, mag;
};

// Returns whether `got` matches `value` within k ulps of `mag` (NaN must match NaN,
// an infinity must match exactly).
inline bool Near(double got, double value, double mag, double k) {
  if (std::isnan(value)) return std::isnan(got);
  if (std::isinf(value)) return got == value;
  if (!std::isfinite(got)) return false;
  return std::fabs(got - value) <= k * kUlp * mag + 1e-37;
}

// --- Half precision: exact conversions in double arithmetic, independent of the
// library's bits (the inputs of the half-precision checks are values of the type).

inline uint32_t FloatBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

// Returns v rounded to nearest-even with `mant` mantissa bits and minimum normal
// exponent `emin`, or +-Inf beyond `max`.
inline double RoundTo(double v, int mant, int emin, double max) {
  if (std::isnan(v) || std::isinf(v) || v == 0) return v;
  const int e = std::max(std::ilogb(v), emin);
  const double ulp = std::ldexp(1.0, e - mant);
  const double r = std::nearbyint(v / ulp) * ulp;  // default rounding: ties to even
  if (std::fabs(r) > max) return std::copysign(HUGE_VAL, v);
  return r;
}

struct BF16 {
  using T = bnorm_bf16;
  static constexpr const char* kName = "bf16";
  // The largest finite bfloat16: (2 - 2^-7) * 2^127.
  static double Max() { return std::ldexp(2.0 - std::ldexp(1.0, -7), 127); }
  static double Round(double v) { return RoundTo(v, 7, -126, Max()); }
  static T Encode(double v) {  // v representable (or Inf / NaN)
    const float f = std::isnan(v) ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(v);
    return T{static_cast<uint16_t>(FloatBits(f) >> 16)};
  }
  static double Decode(T h) {
    const uint32_t b = static_cast<uint32_t>(h.bits) << 16;
    float f;
    std::memcpy(&f, &b, sizeof(f));
    return f;
  }
  // Half an ulp of |v| (the rounding error bound).
  static double HalfUlp(double v) {
    return std::ldexp(1.0, std::max(std::ilogb(std::max(std::fabs(v), 1e-300)), -126) - 8);
  }
};

struct F16 {
  using T = bnorm_f16;
  static constexpr const char* kName = "f16";
  static double Max() { return 65504.0; }
  static double Round(double v) { return RoundTo(v, 10, -14, Max()); }
  static T Encode(double v) {
    uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    const double a = std::fabs(v);
    if (std::isnan(v)) return T{0x7e00};
    if (std::isinf(v)) return T{static_cast<uint16_t>(sign | 0x7c00)};
    if (a < std::ldexp(1.0, -14))
      return T{static_cast<uint16_t>(sign | static_cast<uint16_t>(a * 16777216.0))};
    const int e = std::ilogb(a);
    const double m = a / std::ldexp(1.0, e) - 1.0;  // [0, 1)
    return T{static_cast<uint16_t>(sign | ((e + 15) << 10) | static_cast<uint16_t>(m * 1024.0))};
  }
  static double Decode(T h) {
    const int e = (h.bits >> 10) & 0x1f, m = h.bits & 0x3ff;
    const double sign = (h.bits & 0x8000) ? -1.0 : 1.0;
    if (e == 0) return sign * std::ldexp(m, -24);
    if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
    return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
  }
  static double HalfUlp(double v) {
    return std::ldexp(1.0, std::max(std::ilogb(std::max(std::fabs(v), 1e-300)), -14) - 11);
  }
};

// float32 in the same form, for checks written over the three element types: its
// outputs carry no rounding beyond the float32 tolerance.
struct F32 {
  using T = float;
  static constexpr const char* kName = "f32";
  static double Max() { return std::numeric_limits<float>::max(); }
  static double Round(double v) { return static_cast<float>(v); }
  static T Encode(double v) { return static_cast<float>(v); }
  static double Decode(T f) { return f; }
  static double HalfUlp(double) { return 0; }
};

// Per-channel mean and biased variance, two passes in float64.
struct Stats {
  Vec mean, var;
};
inline Stats Moments(const bnorm_shape& s, const float* x) {
  Stats st{Vec(s.c, 0.0), Vec(s.c, 0.0)};
  const double count = static_cast<double>(Count(s));
  for (int64_t ch = 0; ch < s.c; ++ch) {
    double sum = 0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) sum += x[Offset(s, i, ch, sp)];
    const double mean = sum / count;
    double m2 = 0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const double d = x[Offset(s, i, ch, sp)] - mean;
        m2 += d * d;
      }
    st.mean[ch] = mean;
    st.var[ch] = m2 / count;
  }
  return st;
}

// The magnitudes that mean and variance errors scale with: |mean| + std, and var.
inline double MeanMag(double mean, double var) { return std::fabs(mean) + std::sqrt(var); }

inline double Relu(double v) { return v < 0 ? 0.0 : v; }

// y = (x - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch] (+ ReLU), where `sd` is the
// channel's standard deviation used to widen mag by the statistics' own rounding
// (pass zeros when mean and invstd are given exactly, as in inference).
inline Output Normalize(const bnorm_shape& s, const float* x, const Vec& mean,
                        const Vec& invstd, const Vec& sd, const float* gamma,
                        const float* beta, bool relu) {
  Output out{Vec(Elements(s)), Vec(Elements(s))};
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t ch = 0; ch < s.c; ++ch)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = Offset(s, i, ch, sp);
        const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
        const double v = (x[o] - mean[ch]) * invstd[ch] * g + b;
        out.value[o] = relu ? Relu(v) : v;
        out.mag[o] = (std::fabs(x[o]) + std::fabs(mean[ch]) + sd[ch]) *
                         std::fabs(invstd[ch] * g) + std::fabs(b);
      }
  return out;
}

// Training forward: batch statistics, invstd, and y.
struct Training {
  Stats stats;
  Vec invstd;
  Output y;
};
inline Training ForwardTraining(const bnorm_shape& s, const float* x, const float* gamma,
                                const float* beta, double eps, bool relu) {
  Training t;
  t.stats = Moments(s, x);
  t.invstd.resize(s.c);
  Vec sd(s.c);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    t.invstd[ch] = 1.0 / std::sqrt(t.stats.var[ch] + eps);
    sd[ch] = std::sqrt(t.stats.var[ch]);
  }
  t.y = Normalize(s, x, t.stats.mean, t.invstd, sd, gamma, beta, relu);
  return t;
}

// Running statistics after one training step (unbiased variance unless `biased`).
inline void RunningUpdate(const Stats& st, int64_t count, double momentum, bool biased,
                          Vec& running_mean, Vec& running_var) {
  const double correction = biased ? 1.0 : static_cast<double>(count) / (count - 1);
  for (size_t ch = 0; ch < st.mean.size(); ++ch) {
    running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * st.mean[ch];
    running_var[ch] = (1 - momentum) * running_var[ch] + momentum * st.var[ch] * correction;
  }
}

// Inference forward with given float statistics.
inline Output ForwardInference(const bnorm_shape& s, const float* x, const float* gamma,
                               const float* beta, const float* mean, const float* var,
                               double eps, bool relu) {
  Vec m(s.c), invstd(s.c), zero(s.c, 0.0);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    m[ch] = mean[ch];
    invstd[ch] = 1.0 / std::sqrt(static_cast<double>(var[ch]) + eps);
  }
  return Normalize(s, x, m, invstd, zero, gamma, beta, relu);
}

// scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
struct Folded {
  Output scale, shift;
};
inline Folded Fold(int64_t c, const float* gamma, const float* beta, const float* mean,
                   const float* var, double eps) {
  Folded f{{Vec(c), Vec(c)}, {Vec(c), Vec(c)}};
  for (int64_t ch = 0; ch < c; ++ch) {
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    const double scale = g / std::sqrt(static_cast<double>(var[ch]) + eps);
    f.scale.value[ch] = scale;
    f.scale.mag[ch] = std::fabs(scale);
    f.shift.value[ch] = b - mean[ch] * scale;
    f.shift.mag[ch] = std::fabs(b) + std::fabs(mean[ch] * scale);
  }
  return f;
}

// y = x * scale[ch] + shift[ch] (+ ReLU).
inline Output Affine(const bnorm_shape& s, const float* x, const float* scale,
                     const float* shift, bool relu) {
  Output out{Vec(Elements(s)), Vec(Elements(s))};
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t ch = 0; ch < s.c; ++ch)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = Offset(s, i, ch, sp);
        const double v = static_cast<double>(x[o]) * scale[ch] + shift[ch];
        out.value[o] = relu ? Relu(v) : v;
        out.mag[o] = std::fabs(static_cast<double>(x[o]) * scale[ch]) + std::fabs(shift[ch]);
      }
  return out;
}

// Backward: dbeta = sum(dy'), dgamma = sum(dy' * xhat), dx = gamma * invstd *
// (dy' - dbeta/count - xhat * dgamma/count), where dy' = dy masked by y > 0 with ReLU.
struct Gradients {
  Output dx, dgamma, dbeta;
};
inline Gradients Backward(const bnorm_shape& s, const float* x, const float* dy,
                          const float* saved_mean, const float* saved_invstd,
                          const float* gamma, const float* y, bool relu) {
  Gradients g{{Vec(Elements(s)), Vec(Elements(s))}, {Vec(s.c), Vec(s.c)}, {Vec(s.c), Vec(s.c)}};
  const double count = static_cast<double>(Count(s));
  auto dy_at = [&](int64_t o) -> double {
    return relu && y[o] <= 0 ? 0.0 : static_cast<double>(dy[o]);
  };
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double mean = saved_mean[ch], invstd = saved_invstd[ch];
    double sum_dy = 0, sum_dy_xhat = 0, abs_dy = 0, abs_dy_xhat = 0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = Offset(s, i, ch, sp);
        const double xhat = (x[o] - mean) * invstd;
        sum_dy += dy_at(o);
        sum_dy_xhat += dy_at(o) * xhat;
        abs_dy += std::fabs(dy_at(o));
        abs_dy_xhat += std::fabs(dy_at(o) * xhat) + std::fabs(dy_at(o) * mean * invstd);
      }
    g.dbeta.value[ch] = sum_dy;
    g.dbeta.mag[ch] = abs_dy;
    g.dgamma.value[ch] = sum_dy_xhat;
    g.dgamma.mag[ch] = abs_dy_xhat;
    const double k = (gamma ? gamma[ch] : 1.0) * invstd;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = Offset(s, i, ch, sp);
        const double xhat = (x[o] - mean) * invstd;
        g.dx.value[o] = k * (dy_at(o) - sum_dy / count - xhat * sum_dy_xhat / count);
        g.dx.mag[o] = std::fabs(k) * (std::fabs(dy_at(o)) + abs_dy / count +
                                      (std::fabs(xhat) + std::fabs(mean * invstd)) *
                                          abs_dy_xhat / count);
      }
  }
  return g;
}

}  // namespace ref
}  // namespace bnorm

#endif  // BNORM_TEST_REFERENCE_H_
