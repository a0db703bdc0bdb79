// Affine kernels: y = (x - sub) * mul + add (+ ReLU) per channel, the one transform
// behind inference, training's normalization and bnorm_affine.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "lib/kernels/affine.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "lib/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm {
namespace HWY_NAMESPACE {

void AffinePlane(detail::Plane<const float> x, detail::Plane<float> y, int64_t k0, int64_t k1,
                 float sub, float mul, float add, bool relu, bool stream) {
  const DF d;
  const VF vsub = hn::Set(d, sub), vmul = hn::Set(d, mul), vadd = hn::Set(d, add);
  ForEachSegment(x, k0, k1, [&](int64_t off, int64_t, size_t len) {
    const float* in = x.base + off;
    float* out = y.base + off;
    WriteRun(d, out, len, stream, [&](size_t i, size_t valid) HWY_ATTR {
      const VF v = hn::MulAdd(hn::Sub(LoadPart(d, in + i, valid, 0.0f), vsub), vmul, vadd);
      return relu ? Relu(d, v) : v;
    });
  });
  if (stream) hwy::FlushStream();
}

void AffineRows(const float* x, float* y, int64_t c, int64_t r0, int64_t r1,
                int64_t c0, int64_t c1, const float* HWY_RESTRICT sub,
                const float* HWY_RESTRICT mul, const float* HWY_RESTRICT add, bool relu,
                bool stream) {
  const DF d;
  const size_t width = static_cast<size_t>(c1 - c0);
  for (int64_t r = r0; r < r1; ++r) {
    const float* in = x + r * c + c0;
    WriteRun(d, y + r * c + c0, width, stream, [&](size_t i, size_t valid) HWY_ATTR {
      const size_t ch = static_cast<size_t>(c0) + i;
      const VF centered = sub ? hn::Sub(LoadPart(d, in + i, valid, 0.0f), LoadPart(d, sub + ch, valid, 0.0f))
                              : LoadPart(d, in + i, valid, 0.0f);
      const VF v = hn::MulAdd(centered, LoadPart(d, mul + ch, valid, 0.0f),
                              LoadPart(d, add + ch, valid, 0.0f));
      return relu ? Relu(d, v) : v;
    });
  }
  if (stream) hwy::FlushStream();
}

int64_t AffineTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {
namespace {
HWY_EXPORT(AffinePlane);
HWY_EXPORT(AffineRows);
HWY_EXPORT(AffineTarget);
}  // namespace

void AffinePlane(Plane<const float> x, Plane<float> y, int64_t k0, int64_t k1, float sub,
                 float mul, float add, bool relu, bool stream) {
  BNORM_DISPATCH(AffinePlane)(x, y, k0, k1, sub, mul, add, relu, stream);
}

void AffineRows(const float* x, float* y, int64_t c, int64_t r0, int64_t r1, int64_t c0,
                int64_t c1, const float* sub, const float* mul, const float* add, bool relu,
                bool stream) {
  BNORM_DISPATCH(AffineRows)(x, y, c, r0, r1, c0, c1, sub, mul, add, relu, stream);
}

int64_t AffineTarget() { return BNORM_DISPATCH(AffineTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
