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

// Returns h + g * xc, the lanes where g or xc is denormal through float64.
HWY_INLINE VF AddProduct(DF d, VF g, VF xc, VF h) {
  bool took_wide;  // (only output runs need to know)
  return MulAddLanes(d, g, xc, h, hn::Or(Denormal(d, g), Denormal(d, xc)), took_wide);
}

// Returns h + g * xc where neither g nor xc is denormal; adds the products of the other
// lanes to the float64 sums lo and hi (lower and upper halves of the lanes) instead,
// which the caller adds to the block's sum: rounding them into h took h to float64 and
// back for every such vector (NCHW backward on L2-resident denormals, one thread on
// Sapphire Rapids: SSE4 2.15 -> 1.62x the time on normal data, AVX2 1.91 -> 1.64).
HWY_INLINE VF AddProductSplit(DF d, VF g, VF xc, VF h, hn::Vec<DW>& lo, hn::Vec<DW>& hi) {
  (void)hi;  // (unused on the scalar target)
  const auto tiny = hn::Or(Denormal(d, g), Denormal(d, xc));
  if (hn::AllFalse(d, tiny)) return hn::MulAdd(g, xc, h);
  auto add_wide = [&](VF gw, VF xw) BNORM_LAMBDA {
    const DW dw;
    const auto gs = Spill(d, gw);
    const auto xs = Spill(d, xw);
    lo = hn::MulAdd(WideArg(dw, gs, 0), WideArg(dw, xs, 0), lo);
#if HWY_TARGET != HWY_SCALAR
    hi = hn::MulAdd(WideArg(dw, gs, 1), WideArg(dw, xs, 1), hi);
#endif
  };
  if (hn::AllTrue(d, tiny)) {
    add_wide(g, xc);
    return h;
  }
  add_wide(hn::IfThenElseZero(tiny, g), hn::IfThenElseZero(tiny, xc));
  return hn::MulAdd(hn::IfThenZeroElse(tiny, g), hn::IfThenZeroElse(tiny, xc), h);
}

// Returns dx = k_dy * g + (k_xc * xc + k_0); the lanes where g or xc is denormal go
// through float64 (setting took_wide). The coefficients: Uniform or const float* (see
// CoefVec).
template <class K>
HWY_INLINE VF Dx(DF d, VF g, VF xc, K k_dy, K k_xc, K k_0, bool& took_wide) {
  const VF a = CoefVec(d, k_dy), b = CoefVec(d, k_xc), c = CoefVec(d, k_0);
  auto dx = [](auto, auto vg, auto vx, auto va, auto vb, auto vc)
                BNORM_LAMBDA { return hn::MulAdd(va, vg, hn::MulAdd(vb, vx, vc)); };
  return Guarded(
      d, hn::Or(Denormal(d, g), Denormal(d, xc)), took_wide,
      [&](VF vg, VF vx) BNORM_LAMBDA { return hn::MulAdd(a, vg, hn::MulAdd(b, vx, c)); },
      [&]() BNORM_LAMBDA {
        return Wide(d, dx, g, xc, CoefWide(k_dy), CoefWide(k_xc), CoefWide(k_0));
      },
      g, xc);
}

template <typename T>
void BackwardSumsPlaneT(detail::Plane<const T> x, detail::Plane<const T> dy,
                        detail::Plane<const T> y, int64_t k0, int64_t k1, float mean,
                        double* sum_dy, double* sum_dy_xc) {
  const DF d;
  const bool relu = y.base != nullptr;
  const VF vmean = hn::Set(d, mean);
  const size_t N = hn::Lanes(d);
  const int64_t block = PlaneBlock(d);
  const DW dw;
  double total_dy = 0, total_dy_xc = 0;
  for (int64_t b0 = k0; b0 < k1; b0 += block) {
    VF g0 = hn::Zero(d), g1 = hn::Zero(d), g2 = hn::Zero(d), g3 = hn::Zero(d);
    VF h0 = hn::Zero(d), h1 = hn::Zero(d), h2 = hn::Zero(d), h3 = hn::Zero(d);
    hn::Vec<DW> lo = hn::Zero(dw), hi = hn::Zero(dw);  // (AddProductSplit)
    const int64_t b1 = HWY_MIN(k1, b0 + block);
    ForEachSegment(x, b0, b1, [&](int64_t off, int64_t, size_t len) BNORM_LAMBDA {
      const T* HWY_RESTRICT px = x.base + off;
      const T* HWY_RESTRICT pdy = dy.base + off;
      const T* HWY_RESTRICT py = relu ? y.base + off : nullptr;
      // Accumulates dy' into g and dy' * (x - mean) into h for `valid` lanes at i.
      auto step = [&](size_t i, size_t valid, VF& g, VF& h) BNORM_LAMBDA {
        // Padding lanes: dy = 0 and x = mean contribute exactly 0.
        const VF gi = MaskedDy(d, LoadPart(d, pdy + i, valid, 0.0f), relu,
                               [&] { return LoadPart(d, py + i, valid, 1.0f); });
        const VF xc = hn::Sub(LoadPart(d, px + i, valid, mean), vmean);
        g = hn::Add(g, gi);
        h = AddProductSplit(d, gi, xc, h, lo, hi);
      };
      Visit4(
          d, len,
          [&](size_t i) BNORM_LAMBDA {
            step(i, N, g0, h0);
            step(i + N, N, g1, h1);
            step(i + 2 * N, N, g2, h2);
            step(i + 3 * N, N, g3, h3);
          },
          [&](size_t i, size_t valid) BNORM_LAMBDA { step(i, valid, g0, h0); });
    });
    total_dy += SumLanes(d, hn::Add(hn::Add(g0, g1), hn::Add(g2, g3)));
    total_dy_xc += SumLanes(d, hn::Add(hn::Add(h0, h1), hn::Add(h2, h3))) +
                   hn::GetLane(hn::SumOfLanes(dw, hn::Add(lo, hi)));
  }
  *sum_dy = total_dy;
  *sum_dy_xc = total_dy_xc;
}

template <typename T>
void BackwardDxPlaneT(detail::Plane<const T> x, detail::Plane<const T> dy,
                      detail::Plane<const T> y, detail::Plane<T> dx, int64_t k0, int64_t k1,
                      float mean, float k_dy, float k_xc, float k_0, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  const bool relu = y.base != nullptr;
  const VF vmean = hn::Set(d, mean);
  const Uniform c_dy(k_dy), c_xc(k_xc), c_0(k_0);
  ForEachSegment(x, k0, k1, [&](int64_t off, int64_t, size_t len) BNORM_LAMBDA {
    WriteRun(d, dx.base + off, len, streaming,
             [&](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
      const VF g = MaskedDy(d, LoadPart(d, dy.base + off + i, valid, 0.0f), relu,
                            [&] { return LoadPart(d, y.base + off + i, valid, 1.0f); });
      const VF xc = hn::Sub(LoadPart(d, x.base + off + i, valid, mean), vmean);
      return Dx(d, g, xc, c_dy, c_xc, c_0, wide);
    });
  });
  if (stream) hwy::FlushStream();
}

template <typename T>
void BackwardDxSliceT(const T* x, const T* dy, const T* y, T* dx, int64_t spatial, int64_t c,
                      int64_t v0, int64_t v1, const float* HWY_RESTRICT mean,
                      const float* HWY_RESTRICT k_dy, const float* HWY_RESTRICT k_xc,
                      const float* HWY_RESTRICT k_0, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  const bool relu = y != nullptr;
  ForEachRunPiece(spatial, v0, v1, [&](int64_t off, size_t len, int64_t run) BNORM_LAMBDA {
    const int64_t ch = run % c;
    const VF vmean = hn::Set(d, mean[ch]);
    const Uniform c_dy(k_dy[ch]), c_xc(k_xc[ch]), c_0(k_0[ch]);
    WriteRun(d, dx + off, len, streaming, [&](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
      const VF g = MaskedDy(d, LoadPart(d, dy + off + i, valid, 0.0f), relu,
                            [&] { return LoadPart(d, y + off + i, valid, 1.0f); });
      const VF xc = hn::Sub(LoadPart(d, x + off + i, valid, 0.0f), vmean);
      return Dx(d, g, xc, c_dy, c_xc, c_0, wide);
    });
  });
  if (stream) hwy::FlushStream();
}

// Adds the block sums of dy' and dy' * (x - mean) of `valid` columns (one vector)
// over `runs` runs to g and h. Padding lanes (dy = 0) contribute 0. Prefetches the
// next block (PrefetchBlockAhead).
template <typename T>
HWY_INLINE void ColumnGrad1(DF d, const T* HWY_RESTRICT px, const T* HWY_RESTRICT pdy,
                            const T* HWY_RESTRICT py, int64_t stride, int64_t runs,
                            size_t valid, VF mean, float* HWY_RESTRICT g, float* HWY_RESTRICT h) {
  const bool relu = py != nullptr;
  VF a = hn::Zero(d), b = hn::Zero(d);
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t o = r * stride;
    PrefetchBlockAhead(px + o, runs * stride, valid * sizeof(T));
    PrefetchBlockAhead(pdy + o, runs * stride, valid * sizeof(T));
    if (relu) PrefetchBlockAhead(py + o, runs * stride, valid * sizeof(T));
    const VF gi = MaskedDy(d, LoadPartNoPrefetch(d, pdy + o, valid, 0.0f), relu,
                           [&] { return LoadPartNoPrefetch(d, py + o, valid, 1.0f); });
    const VF xc = hn::Sub(LoadPartNoPrefetch(d, px + o, valid, 0.0f), mean);
    a = hn::Add(a, gi);
    b = AddProduct(d, gi, xc, b);
  }
  hn::Store(a, d, g);
  hn::Store(b, d, h);
}

// As ColumnGrad1 for two whole vectors of columns (independent chains).
template <typename T>
HWY_INLINE void ColumnGrad2(DF d, const T* HWY_RESTRICT px, const T* HWY_RESTRICT pdy,
                            const T* HWY_RESTRICT py, int64_t stride, int64_t runs,
                            VF mean0, VF mean1, float* HWY_RESTRICT g, float* HWY_RESTRICT h) {
  const size_t N = hn::Lanes(d);
  const bool relu = py != nullptr;
  VF a0 = hn::Zero(d), b0 = hn::Zero(d), a1 = hn::Zero(d), b1 = hn::Zero(d);
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t o = r * stride;
    PrefetchBlockAhead(px + o, runs * stride, 2 * N * sizeof(T));
    PrefetchBlockAhead(pdy + o, runs * stride, 2 * N * sizeof(T));
    if (relu) PrefetchBlockAhead(py + o, runs * stride, 2 * N * sizeof(T));
    const VF g0 =
        MaskedDy(d, LoadNoPrefetch(d, pdy + o), relu, [&] { return LoadNoPrefetch(d, py + o); });
    const VF g1 = MaskedDy(d, LoadNoPrefetch(d, pdy + o + N), relu,
                           [&] { return LoadNoPrefetch(d, py + o + N); });
    a0 = hn::Add(a0, g0);
    a1 = hn::Add(a1, g1);
    const VF xc0 = hn::Sub(LoadNoPrefetch(d, px + o), mean0);
    const VF xc1 = hn::Sub(LoadNoPrefetch(d, px + o + N), mean1);
    b0 = AddProduct(d, g0, xc0, b0);
    b1 = AddProduct(d, g1, xc1, b1);
  }
  hn::Store(a0, d, g);
  hn::Store(a1, d, g + N);
  hn::Store(b0, d, h);
  hn::Store(b1, d, h + N);
}

template <typename T>
void BackwardSumsRegionT(detail::Region<const T> x, detail::Region<const T> dy,
                         detail::Region<const T> y, const float* HWY_RESTRICT mean,
                         double* HWY_RESTRICT sum_dy, double* HWY_RESTRICT sum_dy_xc) {
  const DF d;
  const size_t N = hn::Lanes(d);
  const size_t len = static_cast<size_t>(x.len);
  const int64_t rows_per_block = x.block_runs;
  HWY_ALIGN float b_dy[detail::kMaxRun + kMaxLanes], b_dy_xc[detail::kMaxRun + kMaxLanes];
  for (size_t pos = 0; pos < len; ++pos) sum_dy[pos] = sum_dy_xc[pos] = 0;
  for (int64_t rb = 0; rb < x.rows; rb += rows_per_block) {
    const int64_t runs = HWY_MIN(x.rows, rb + rows_per_block) - rb;
    const T* HWY_RESTRICT px = x.base + rb * x.stride;
    const T* HWY_RESTRICT pdy = dy.base + rb * dy.stride;
    const T* HWY_RESTRICT py = y.base ? y.base + rb * y.stride : nullptr;
    // Float32 block sums a few columns at a time (sums in registers), then float64.
    size_t j = 0;
    for (; j + 2 * N <= len; j += 2 * N) {
      ColumnGrad2(d, px + j, pdy + j, py ? py + j : nullptr, x.stride, runs,
                  hn::LoadU(d, mean + j), hn::LoadU(d, mean + j + N), b_dy + j, b_dy_xc + j);
    }
    for (; j < len; j += N) {
      const size_t valid = HWY_MIN(N, len - j);
      ColumnGrad1(d, px + j, pdy + j, py ? py + j : nullptr, x.stride, runs, valid,
                  LoadPart(d, mean + j, valid, 0.0f), b_dy + j, b_dy_xc + j);
    }
    for (size_t pos = 0; pos < len; ++pos) {
      sum_dy[pos] += b_dy[pos];
      sum_dy_xc[pos] += b_dy_xc[pos];
    }
  }
}

template <typename T>
void BackwardDxRunT(const T* x, const T* dy, const T* y, T* dx, int64_t len,
                    const float* HWY_RESTRICT mean, const float* HWY_RESTRICT k_dy,
                    const float* HWY_RESTRICT k_xc, const float* HWY_RESTRICT k_0,
                    int64_t period, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  const bool relu = y != nullptr;
  const size_t p = static_cast<size_t>(period);
  size_t ph = 0;  // WriteRun visits the run in order: track i % period
  WriteRun(
      d, dx, static_cast<size_t>(len), streaming,
      [&](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
        const VF g = MaskedDy(d, LoadPart(d, dy + i, valid, 0.0f), relu,
                              [&] { return LoadPart(d, y + i, valid, 1.0f); });
        const VF xc = hn::Sub(LoadPart(d, x + i, valid, 0.0f), CoefVec(d, mean + ph));
        const VF v = Dx(d, g, xc, k_dy + ph, k_xc + ph, k_0 + ph, wide);
        ph = NextPhase(ph, valid, p);
        return v;
      });
  if (stream) hwy::FlushStream();
}

// Non-template names for HWY_EXPORT, one per element type.
#define BNORM_BACKWARD_KERNELS(T, S)                                                       \
  void BackwardSumsPlane##S(detail::Plane<const T> x, detail::Plane<const T> dy,           \
                            detail::Plane<const T> y, int64_t k0, int64_t k1, float mean,  \
                            double* sum_dy, double* sum_dy_xc) {                           \
    BackwardSumsPlaneT(x, dy, y, k0, k1, mean, sum_dy, sum_dy_xc);                         \
  }                                                                                        \
  void BackwardDxPlane##S(detail::Plane<const T> x, detail::Plane<const T> dy,             \
                          detail::Plane<const T> y, detail::Plane<T> dx, int64_t k0,       \
                          int64_t k1, float mean, float k_dy, float k_xc, float k_0,       \
                          bool stream) {                                                   \
    BackwardDxPlaneT(x, dy, y, dx, k0, k1, mean, k_dy, k_xc, k_0, stream);                 \
  }                                                                                        \
  void BackwardDxSlice##S(const T* x, const T* dy, const T* y, T* dx, int64_t spatial,     \
                          int64_t c, int64_t v0, int64_t v1, const float* mean,            \
                          const float* k_dy, const float* k_xc, const float* k_0,          \
                          bool stream) {                                                   \
    BackwardDxSliceT(x, dy, y, dx, spatial, c, v0, v1, mean, k_dy, k_xc, k_0, stream);     \
  }                                                                                        \
  void BackwardSumsRegion##S(detail::Region<const T> x, detail::Region<const T> dy,        \
                             detail::Region<const T> y, const float* mean, double* sum_dy, \
                             double* sum_dy_xc) {                                          \
    BackwardSumsRegionT(x, dy, y, mean, sum_dy, sum_dy_xc);                                \
  }                                                                                        \
  void BackwardDxRun##S(const T* x, const T* dy, const T* y, T* dx, int64_t len,           \
                        const float* mean, const float* k_dy, const float* k_xc,           \
                        const float* k_0, int64_t period, bool stream) {                   \
    BackwardDxRunT(x, dy, y, dx, len, mean, k_dy, k_xc, k_0, period, stream);              \
  }
BNORM_FOR_TYPES(BNORM_BACKWARD_KERNELS)
#undef BNORM_BACKWARD_KERNELS

int64_t BackwardTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {

#define BNORM_BACKWARD_DISPATCH(T, S)                                                      \
  namespace {                                                                              \
  HWY_EXPORT(BackwardSumsPlane##S);                                                        \
  HWY_EXPORT(BackwardDxPlane##S);                                                          \
  HWY_EXPORT(BackwardDxSlice##S);                                                          \
  HWY_EXPORT(BackwardSumsRegion##S);                                                       \
  HWY_EXPORT(BackwardDxRun##S);                                                            \
  }                                                                                        \
  template <>                                                                              \
  void BackwardSumsPlane<T>(Plane<const T> x, Plane<const T> dy, Plane<const T> y,         \
                            int64_t k0, int64_t k1, float mean, double* sum_dy,            \
                            double* sum_dy_xc) {                                           \
    BNORM_DISPATCH(BackwardSumsPlane##S)(x, dy, y, k0, k1, mean, sum_dy, sum_dy_xc);       \
  }                                                                                        \
  template <>                                                                              \
  void BackwardDxPlane<T>(Plane<const T> x, Plane<const T> dy, Plane<const T> y,           \
                          Plane<T> dx, int64_t k0, int64_t k1, float mean, float k_dy,     \
                          float k_xc, float k_0, bool stream) {                            \
    BNORM_DISPATCH(BackwardDxPlane##S)(x, dy, y, dx, k0, k1, mean, k_dy, k_xc, k_0, stream); \
  }                                                                                        \
  template <>                                                                              \
  void BackwardDxSlice<T>(const T* x, const T* dy, const T* y, T* dx, int64_t spatial,     \
                          int64_t c, int64_t v0, int64_t v1, const float* mean,            \
                          const float* k_dy, const float* k_xc, const float* k_0,          \
                          bool stream) {                                                   \
    BNORM_DISPATCH(BackwardDxSlice##S)(x, dy, y, dx, spatial, c, v0, v1, mean, k_dy, k_xc,  \
                                       k_0, stream);                                       \
  }                                                                                        \
  template <>                                                                              \
  void BackwardSumsRegion<T>(Region<const T> x, Region<const T> dy, Region<const T> y,     \
                             const float* mean, double* sum_dy, double* sum_dy_xc) {       \
    BNORM_DISPATCH(BackwardSumsRegion##S)(x, dy, y, mean, sum_dy, sum_dy_xc);              \
  }                                                                                        \
  template <>                                                                              \
  void BackwardDxRun<T>(const T* x, const T* dy, const T* y, T* dx, int64_t len,           \
                        const float* mean, const float* k_dy, const float* k_xc,           \
                        const float* k_0, int64_t period, bool stream) {                   \
    BNORM_DISPATCH(BackwardDxRun##S)(x, dy, y, dx, len, mean, k_dy, k_xc, k_0, period,     \
                                     stream);                                              \
  }
BNORM_FOR_TYPES(BNORM_BACKWARD_DISPATCH)
#undef BNORM_BACKWARD_DISPATCH

namespace {
HWY_EXPORT(BackwardTarget);
}  // namespace

int64_t BackwardTarget() { return BNORM_DISPATCH(BackwardTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
