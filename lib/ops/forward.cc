// Forward drivers: training (statistics, then normalization; one read of DRAM when a
// channel fits one work item), inference, fold and affine.
#include <algorithm>
#include <cmath>

#include "lib/ops/ops.h"
#include "lib/parallel/parallel.h"

namespace bnorm {
namespace detail {

template <typename T>
void ApplyAffine(const Plan& p, const T* x, T* y, const float* sub, const float* mul,
                 const float* add, bool relu) {
  const bool stream = StreamOutput(p.count * p.c * int64_t{sizeof(T)});
  if (!p.rows_mode) {
    // In memory order: channel-major walks would jump between images.
    parallel::For(p.Slices(), 1, p.serial, [&](int64_t slice) {
      AffineSlice(x, y, p.spatial, p.c, p.V0(slice), p.V1(slice), sub, mul, add, relu, stream);
    });
    return;
  }
  // Rows: per-channel coefficients laid out as the values of a row (or period).
  const size_t size = static_cast<size_t>(p.PatternSize());
  const AffineScratch scratch = AffinePatternScratch(p);
  float* f = scratch.f;
  if (sub) FillPattern(p, sub, 0.0f, f);
  FillPattern(p, mul, 0.0f, f + size);
  FillPattern(p, add, 0.0f, f + 2 * size);
  std::copy(f + size, f + 3 * size, scratch.w);
  const AffinePattern pattern{sub ? f : nullptr, f + size, f + 2 * size, scratch.w,
                              scratch.w + size};
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    p.ForEachRun(item, [&](int64_t offset, int64_t len, int64_t period, int64_t at) {
      AffineRun(x + offset, y + offset, len, pattern.At(at), period, relu, stream);
    });
  });
}

AffineScratch AffinePatternScratch(const Plan& p) {
  const size_t size = static_cast<size_t>(p.PatternSize());
  return {Scratch<float, 3>(3 * size), Scratch<double, 3>(2 * size)};
}

namespace {

// Turns one channel's batch moments into the normalization y = (x - sub) * mul + add,
// and writes its saved and running statistics.
struct TrainingFinish {
  const float *gamma, *beta;
  double eps, momentum, unbias;
  float *running_mean, *running_var, *saved_mean, *saved_invstd;

  void operator()(int64_t ch, const Moments& m, float* sub, float* mul, float* add) const {
    const double invstd = 1.0 / std::sqrt(m.var + eps);
    *sub = static_cast<float>(m.mean);
    *mul = static_cast<float>((gamma ? gamma[ch] : 1.0) * invstd);
    *add = beta ? beta[ch] : 0.0f;
    if (saved_mean) saved_mean[ch] = static_cast<float>(m.mean);
    if (saved_invstd) saved_invstd[ch] = static_cast<float>(invstd);
    if (running_mean) {
      running_mean[ch] =
          static_cast<float>((1 - momentum) * running_mean[ch] + momentum * m.mean);
      running_var[ch] =
          static_cast<float>((1 - momentum) * running_var[ch] + momentum * m.var * unbias);
    }
  }
};

}  // namespace

template <typename T>
void ForwardTrainingOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
                       const float* gamma, const float* beta, float eps, float momentum,
                       float* running_mean, float* running_var, float* saved_mean,
                       float* saved_invstd, unsigned flags) {
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, range.begin, range.end);
  const bool relu = (flags & BNORM_FUSE_RELU) != 0;
  const double count = static_cast<double>(p.count);
  const TrainingFinish finish{gamma, beta, eps, momentum,
                              (flags & BNORM_RUNNING_VAR_BIASED) ? 1.0 : count / (count - 1),
                              running_mean, running_var, saved_mean, saved_invstd};
  if (p.fused()) {
    // Normalize each channel right after its statistics, while it is still in cache.
    const bool stream = StreamOutput(p.count * p.c * int64_t{sizeof(T)});
    parallel::For(p.channels(), p.fused_grain(), p.serial, [&](int64_t i) {
      const int64_t ch = p.cb + i;
      float sub, mul, add;
      finish(ch, StatsPlane(p.PlaneOf(x, ch), 0, p.count), &sub, &mul, &add);
      AffinePlane(p.PlaneOf(x, ch), p.PlaneOf(y, ch), 0, p.count, sub, mul, add, relu, stream);
    });
    return;
  }
  Moments* moments = Scratch<Moments, 1>(static_cast<size_t>(p.c));
  ChannelMoments(p, x, moments);
  float* sub = Scratch<float, 2>(static_cast<size_t>(3 * p.c));
  float* mul = sub + p.c;
  float* add = mul + p.c;
  // Every scratch buffer exists before the first output is written: running out of
  // memory must leave the outputs untouched.
  if (p.rows_mode) AffinePatternScratch(p);
  for (int64_t ch = p.cb; ch < p.ce; ++ch) finish(ch, moments[ch], sub + ch, mul + ch, add + ch);
  ApplyAffine(p, x, y, sub, mul, add, relu);
}

template <typename T>
void ForwardInferenceOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
                        const float* gamma, const float* beta, const float* mean,
                        const float* var, float eps, unsigned flags) {
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, range.begin, range.end);
  float* mul = Scratch<float, 2>(static_cast<size_t>(2 * p.c));
  float* add = mul + p.c;
  for (int64_t ch = p.cb; ch < p.ce; ++ch) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(var[ch]) + eps);
    mul[ch] = static_cast<float>((gamma ? gamma[ch] : 1.0) * invstd);
    add[ch] = beta ? beta[ch] : 0.0f;
  }
  ApplyAffine(p, x, y, mean, mul, add, (flags & BNORM_FUSE_RELU) != 0);
}

void FoldOp(int64_t c, const float* gamma, const float* beta, const float* mean,
            const float* var, float eps, float* scale, float* shift) {
  for (int64_t ch = 0; ch < c; ++ch) {
    // Read everything first: scale and shift may alias the inputs.
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    const double m = mean[ch], v = var[ch];
    const double k = g / std::sqrt(v + eps);
    scale[ch] = static_cast<float>(k);
    shift[ch] = static_cast<float>(b - m * k);
  }
}

template <typename T>
void AffineOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
              const float* scale, const float* shift, unsigned flags) {
  ApplyAffine(MakePlan(s, (flags & BNORM_SERIAL) != 0, range.begin, range.end), x, y, nullptr,
              scale, shift, (flags & BNORM_FUSE_RELU) != 0);
}

#define BNORM_FORWARD_OPS(T, S)                                                            \
  template void ApplyAffine(const Plan&, const T*, T*, const float*, const float*,        \
                            const float*, bool);                                          \
  template void ForwardTrainingOp(const bnorm_shape&, const Channels&, const T*, T*,      \
                                  const float*, const float*, float, float, float*, float*, \
                                  float*, float*, unsigned);                              \
  template void ForwardInferenceOp(const bnorm_shape&, const Channels&, const T*, T*,     \
                                   const float*, const float*, const float*, const float*, \
                                   float, unsigned);                                      \
  template void AffineOp(const bnorm_shape&, const Channels&, const T*, T*, const float*, \
                         const float*, unsigned);
BNORM_FOR_TYPES(BNORM_FORWARD_OPS)
#undef BNORM_FORWARD_OPS

}  // namespace detail
}  // namespace bnorm
