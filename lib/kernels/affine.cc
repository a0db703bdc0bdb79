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

template <typename T>
void AffinePlaneT(detail::Plane<const T> x, detail::Plane<T> y, int64_t k0, int64_t k1,
                  float sub, float mul, float add, bool relu, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  const VF vsub = hn::Set(d, sub);
  const Uniform m(mul), a(add);
  ForEachSegment(x, k0, k1, [&](int64_t off, int64_t, size_t len) BNORM_LAMBDA {
    const T* in = x.base + off;
    WriteRun(d, y.base + off, len, streaming,
             [&, relu](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
               const VF xc = hn::Sub(LoadPart(d, in + i, valid, 0.0f), vsub);
               const VF v = AffineLanes(d, xc, m, a, wide);
               return relu ? Relu(d, v) : v;
             });
  });
  if (stream) hwy::FlushStream();
}

template <typename T>
void AffineSliceT(const T* x, T* y, int64_t spatial, int64_t c, int64_t v0, int64_t v1,
                  const float* HWY_RESTRICT sub, const float* HWY_RESTRICT mul,
                  const float* HWY_RESTRICT add, bool relu, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  ForEachRunPiece(spatial, v0, v1, [&](int64_t off, size_t len, int64_t run) BNORM_LAMBDA {
    const int64_t ch = run % c;
    const float s = sub ? sub[ch] : 0.0f;
    const Uniform m(mul[ch]), a(add[ch]);
    const T* in = x + off;
    // Captured by value (scalars: SVE vectors cannot be): by reference, bfloat16 runs
    // reloaded the coefficients from the stack and broadcast them again for every
    // vector (the halves' stores may alias them), 3-9% slower.
    auto out = [d, in, s, m, a, relu](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
      const VF xc = hn::Sub(LoadPart(d, in + i, valid, 0.0f), hn::Set(d, s));
      const VF v = AffineLanes(d, xc, m, a, wide);
      return relu ? Relu(d, v) : v;
    };
    // Nothing to subtract (the affine op: BN folded to scale and shift): the float64
    // lanes convert x from memory where that pays (kWideFromMemory): AVX2 NCHW affine
    // on L2-resident denormals 1.86 -> 1.60 ns per vector, SSE4 3.45 -> 3.17.
    if constexpr (kWideFromMemory && std::is_same<T, float>::value) {
      if (s == 0.0f) {
        auto out0 = [d, in, m, a, relu](size_t i, size_t valid, bool& wide) BNORM_LAMBDA {
          const VF xv = LoadPart(d, in + i, valid, 0.0f);
          const VF v = valid == hn::Lanes(d) ? AffineLanes(d, xv, m, a, wide, LanesAt{in, i})
                                             : AffineLanes(d, xv, m, a, wide);
          return relu ? Relu(d, v) : v;
        };
        return WriteRun(d, y + off, len, streaming, out0);
      }
    }
    WriteRun(d, y + off, len, streaming, out);
  });
  if (stream) hwy::FlushStream();
}

template <typename T>
void AffineRunT(const T* x, T* y, int64_t len, const detail::AffinePattern& c, int64_t period,
                bool relu, bool stream) {
  const DF d;
  bool streaming = stream;  // cleared by WriteRun once a run took float64 lanes
  const detail::AffinePattern w = c;  // on the stack: no register for its address
  const float* HWY_RESTRICT sub = c.sub;
  const float* HWY_RESTRICT mul = c.mul;
  const float* HWY_RESTRICT add = c.add;
  const size_t p = static_cast<size_t>(period);
  size_t ph = 0;  // WriteRun visits the run in order: track i % period
  // (Captured by value but the phase, and w, from which the float64 lanes read the
  // addresses of the float64 patterns: see PatternAt. Otherwise as in AffineSliceT.)
  // Without sub (the affine op), the float64 lanes convert x from memory: NHWC affine
  // on L2-resident denormals AVX2 0.84x, AVX-512 0.92x the time.
  auto run = [&](auto has_sub) BNORM_LAMBDA {
    WriteRun(d, y, static_cast<size_t>(len), streaming,
             [d, x, sub, mul, add, p, relu, &ph, &w](size_t i, size_t valid, bool& wide)
                 BNORM_LAMBDA {
                   constexpr bool kSub = decltype(has_sub)::value;
                   VF xc = LoadPart(d, x + i, valid, 0.0f);
                   if constexpr (kSub) xc = hn::Sub(xc, CoefVec(d, sub + ph));
                   (void)sub;
                   const PatternAt m{mul + ph, &w.mul_w, ph}, a{add + ph, &w.add_w, ph};
                   VF v = xc;
                   // (Nested: clang checks the float-only branch for every T otherwise.)
                   if constexpr (std::is_same<T, float>::value) {
                     if constexpr (!kSub) {
                       v = valid == hn::Lanes(d) ? AffineLanes(d, xc, m, a, wide, LanesAt{x, i})
                                                 : AffineLanes(d, xc, m, a, wide);
                     } else {
                       v = AffineLanes(d, xc, m, a, wide);
                     }
                   } else {
                     v = AffineLanes(d, xc, m, a, wide);
                   }
                   ph = NextPhase(ph, valid, p);
                   return relu ? Relu(d, v) : v;
                 });
  };
  if (sub) {
    run(std::true_type());
  } else {
    run(std::false_type());
  }
  if (stream) hwy::FlushStream();
}

// Non-template names for HWY_EXPORT, one per element type.
#define BNORM_AFFINE_KERNELS(T, S)                                                        \
  void AffinePlane##S(detail::Plane<const T> x, detail::Plane<T> y, int64_t k0, int64_t k1, \
                      float sub, float mul, float add, bool relu, bool stream) {          \
    AffinePlaneT(x, y, k0, k1, sub, mul, add, relu, stream);                              \
  }                                                                                        \
  void AffineSlice##S(const T* x, T* y, int64_t spatial, int64_t c, int64_t v0, int64_t v1, \
                      const float* sub, const float* mul, const float* add, bool relu,    \
                      bool stream) {                                                       \
    AffineSliceT(x, y, spatial, c, v0, v1, sub, mul, add, relu, stream);                  \
  }                                                                                        \
  void AffineRun##S(const T* x, T* y, int64_t len, const detail::AffinePattern& c,       \
                    int64_t period, bool relu, bool stream) {                              \
    AffineRunT(x, y, len, c, period, relu, stream);                                        \
  }
BNORM_FOR_TYPES(BNORM_AFFINE_KERNELS)
#undef BNORM_AFFINE_KERNELS

int64_t AffineTarget() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "lib/kernels/dispatch.h"

namespace bnorm {
namespace detail {

#define BNORM_AFFINE_DISPATCH(T, S)                                                        \
  namespace {                                                                              \
  HWY_EXPORT(AffinePlane##S);                                                              \
  HWY_EXPORT(AffineSlice##S);                                                              \
  HWY_EXPORT(AffineRun##S);                                                                \
  }                                                                                        \
  template <>                                                                              \
  void AffinePlane<T>(Plane<const T> x, Plane<T> y, int64_t k0, int64_t k1, float sub,     \
                      float mul, float add, bool relu, bool stream) {                      \
    BNORM_DISPATCH(AffinePlane##S)(x, y, k0, k1, sub, mul, add, relu, stream);             \
  }                                                                                        \
  template <>                                                                              \
  void AffineSlice<T>(const T* x, T* y, int64_t spatial, int64_t c, int64_t v0, int64_t v1, \
                      const float* sub, const float* mul, const float* add, bool relu,     \
                      bool stream) {                                                       \
    BNORM_DISPATCH(AffineSlice##S)(x, y, spatial, c, v0, v1, sub, mul, add, relu, stream); \
  }                                                                                        \
  template <>                                                                              \
  void AffineRun<T>(const T* x, T* y, int64_t len, const AffinePattern& c, int64_t period, \
                    bool relu, bool stream) {                                              \
    BNORM_DISPATCH(AffineRun##S)(x, y, len, c, period, relu, stream);                      \
  }
BNORM_FOR_TYPES(BNORM_AFFINE_DISPATCH)
#undef BNORM_AFFINE_DISPATCH

namespace {
HWY_EXPORT(AffineTarget);
}  // namespace

int64_t AffineTarget() { return BNORM_DISPATCH(AffineTarget)(); }

}  // namespace detail
}  // namespace bnorm
#endif  // HWY_ONCE
