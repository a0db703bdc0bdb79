// Float64 reference for every bnorm operation, written for obviousness: two passes,
// plain loops, no blocking. Each output comes with a magnitude `mag` so that a float32
// result is accepted when |got - value| <= k * 2^-24 * mag (see Near / kUlp).
#ifndef BNORM_TEST_REFERENCE_H_
#define BNORM_TEST_REFERENCE_H_

#include <cmath>
#include <cstdint>
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
