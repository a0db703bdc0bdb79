// Backward kernels: per-channel sums of dy and dy * (x - mean) (float32 inside a block,
// float64 across blocks), and dx = k_dy * dy + k_xc * (x - mean) + k_0, with dy masked
// where y <= 0 when the forward pass fused a ReLU.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "lib/kernels/backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "lib/kernels/common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm {
namespace HWY_NAMESPACE {

// Returns dy, zeroed where y <= 0 when y is given (y_part is only read then).
template <class LoadY>
HWY_INLINE VF MaskedDy(DF d, VF dy, bool relu, LoadY load_y) {
  return relu ? hn::IfThenZeroElse(hn::Le(load_y(), hn::Zero(d)), dy) : dy;
}

void BackwardSumsPlane(detail::Plane<const float> x, detail::Plane<const float> dy,
                       detail::Plane<const float> y, int64_t k0, int64_t k1, float mean,
                       double* sum_dy, double* sum_dy_xc) {
  const DF d;
  const bool relu = y.base != nullptr;
  const VF vmean = hn::Set(d, mean);
  const int64_t block = PlaneBlock(d);
  double total_dy = 0, total_dy_xc = 0;
  for (int64_t b0 = k0; b0 < k1; b0 += block) {
    VF a_dy = hn::Zero(d), a_dy_xc = hn::Zero(d);
    ForEachSegment(x, b0, HWY_MIN(k1, b0 + block), [&](int64_t off, int64_t, size_t len) {
      for (size_t i = 0; i < len; i += hn::Lanes(d)) {
        const size_t valid = HWY_MIN(hn::Lanes(d), len - i);
        // Padding lanes: dy = 0 and x = mean contribute exactly 0.
        const VF g = MaskedDy(d, LoadPart(d, dy.base + off + i, valid, 0.0f), relu,
                              [&] { return LoadPart(d, y.base + off + i, valid, 1.0f); });
        const VF xc = hn::Sub(LoadPart(d, x.base + off + i, valid, mean), vmean);
        a_dy = hn::Add(a_dy, g);
        a_dy_xc = hn::MulAdd(g, xc, a_dy_xc);
      }
    });
    total_dy += SumLanes(d, a_dy);
    total_dy_xc += SumLanes(d, a_dy_xc);
  }
  *sum_dy = total_dy;
  *sum_dy_xc = total_dy_xc;
}

void BackwardDxPlane(detail::Plane<const float> x, detail::Plane<const float> dy,
                     detail::Plane<const float> y, detail::Plane<float> dx, int64_t k0,
                     int64_t k1, float mean, float k_dy, float k_xc, float k_0, bool stream) {
  const DF d;
  const bool relu = y.base != nullptr;
  const VF vmean = hn::Set(d, mean), vk_dy = hn::Set(d, k_dy), vk_xc = hn::Set(d, k_xc),
           vk_0 = hn::Set(d, k_0);
  ForEachSegment(x, k0, k1, [&](int64_t off, int64_t, size_t len) {
    WriteRun(d, dx.base + off, len, stream, [&](size_t i, size_t valid) HWY_ATTR {
      const VF g = MaskedDy(d, LoadPart(d, dy.base + off + i, valid, 0.0f), relu,
                            [&] { return LoadPart(d, y.base + off + i, valid, 1.0f); });
      const VF xc = hn::Sub(LoadPart(d, x.base + off + i, valid, mean), vmean);
      return hn::MulAdd(vk_dy, g, hn::MulAdd(vk_xc, xc, vk_0));
    });
  });
  if (stream) hwy::FlushStream();
}

void BackwardSumsRows(const float* x, const float* dy, const float* y, int64_t c, int64_t r0,
                      int64_t r1, int64_t c0, int64_t c1, const float* mean, double* sum_dy,
                      double* sum_dy_xc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const bool relu = y != nullptr;
  const int64_t width = c1 - c0;
  const int64_t rows_per_block = RowsPerBlock(width);
  HWY_ALIGN float b_dy[detail::kTile + kMaxLanes], b_dy_xc[detail::kTile + kMaxLanes];
  for (int64_t ch = 0; ch < width; ++ch) sum_dy[ch] = sum_dy_xc[ch] = 0;
  for (int64_t rb = r0; rb < r1; rb += rows_per_block) {
    const int64_t re = HWY_MIN(r1, rb + rows_per_block);
    for (int64_t j = 0; j < width; j += static_cast<int64_t>(N)) {
      const size_t valid = static_cast<size_t>(HWY_MIN(static_cast<int64_t>(N), width - j));
      const VF vmean = LoadPart(d, mean + c0 + j, valid, 0.0f);
      VF a_dy = hn::Zero(d), a_dy_xc = hn::Zero(d);
      for (int64_t r = rb; r < re; ++r) {
        const int64_t off = r * c + c0 + j;
        const VF g = MaskedDy(d, LoadPart(d, dy + off, valid, 0.0f), relu,
                              [&] { return LoadPart(d, y + off, valid, 1.0f); });
        const VF xc = hn::Sub(LoadPart(d, x + off, valid, 0.0f), vmean);
        a_dy = hn::Add(a_dy, g);
        a_dy_xc = hn::MulAdd(g, xc, a_dy_xc);
      }
      hn::Store(a_dy, d, b_dy + j);
      hn::Store(a_dy_xc, d, b_dy_xc + j);
    }
    for (int64_t ch = 0; ch < width; ++ch) {
      sum_dy[ch] += b_dy[ch];
      sum_dy_xc[ch] += b_dy_xc[ch];
    }
  }
}

void BackwardDxRows(const float* x, const float* dy, const float* y, float* dx, int64_t c,
                    int64_t r0, int64_t r1, int64_t c0, int64_t c1, const float* mean,
                    const float* k_dy, const float* k_xc, const float* k_0, bool stream) {
  const DF d;
  const bool relu = y != nullptr;
  const size_t width = static_cast<size_t>(c1 - c0);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t row = r * c + c0;
    WriteRun(d, dx + row, width, stream, [&](size_t i, size_t valid) HWY_ATTR {
      const size_t ch = static_cast<size_t>(c0) + i;
      const VF g = MaskedDy(d, LoadPart(d, dy + row + i, valid, 0.0f), relu,
                            [&] { return LoadPart(d, y + row + i, valid, 1.0f); });
      const VF xc = hn::Sub(LoadPart(d, x + row + i, valid, 0.0f), LoadPart(d, mean + ch, valid, 0.0f));
      return hn::MulAdd(LoadPart(d, k_dy + ch, valid, 0.0f), g,
                        hn::MulAdd(LoadPart(d, k_xc + ch, valid, 0.0f), xc,
                                   LoadPart(d, k_0 + ch, valid, 0.0f)));
    });
  }
  if (stream) hwy::FlushStream();
}

int64_t BackwardTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {
namespace {
HWY_EXPORT(BackwardSumsPlane);
HWY_EXPORT(BackwardDxPlane);
HWY_EXPORT(BackwardSumsRows);
HWY_EXPORT(BackwardDxRows);
HWY_EXPORT(BackwardTarget);
}  // namespace

void BackwardSumsPlane(Plane<const float> x, Plane<const float> dy, Plane<const float> y,
                       int64_t k0, int64_t k1, float mean, double* sum_dy, double* sum_dy_xc) {
  BNORM_DISPATCH(BackwardSumsPlane)(x, dy, y, k0, k1, mean, sum_dy, sum_dy_xc);
}

void BackwardDxPlane(Plane<const float> x, Plane<const float> dy, Plane<const float> y,
                     Plane<float> dx, int64_t k0, int64_t k1, float mean, float k_dy,
                     float k_xc, float k_0, bool stream) {
  BNORM_DISPATCH(BackwardDxPlane)(x, dy, y, dx, k0, k1, mean, k_dy, k_xc, k_0, stream);
}

void BackwardSumsRows(const float* x, const float* dy, const float* y, int64_t c, int64_t r0,
                      int64_t r1, int64_t c0, int64_t c1, const float* mean, double* sum_dy,
                      double* sum_dy_xc) {
  BNORM_DISPATCH(BackwardSumsRows)(x, dy, y, c, r0, r1, c0, c1, mean, sum_dy, sum_dy_xc);
}

void BackwardDxRows(const float* x, const float* dy, const float* y, float* dx, int64_t c,
                    int64_t r0, int64_t r1, int64_t c0, int64_t c1, const float* mean,
                    const float* k_dy, const float* k_xc, const float* k_0, bool stream) {
  BNORM_DISPATCH(BackwardDxRows)(x, dy, y, dx, c, r0, r1, c0, c1, mean, k_dy, k_xc, k_0, stream);
}

int64_t BackwardTarget() { return BNORM_DISPATCH(BackwardTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
