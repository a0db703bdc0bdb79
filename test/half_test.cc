// Tests of the bfloat16 and float16 entry points on every target, both layouts:
// - each operation's half-precision result is the float32 path's result on the same
//   (widened) values, rounded once to nearest-even: statistics, saved and running
//   statistics and parameter gradients bit-identical to _f32, tensors bit-identical to
//   the float32 outputs rounded by this file's own reference rounding;
// - statistics against the float64 reference, tensors within one half-precision
//   rounding (plus the float32 tolerance) of it;
// - rounding ties, subnormals, overflow to Inf and NaN through the narrowing of every
//   target; determinism across thread counts; slices; errors name the argument.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// The reference conversions (double arithmetic, independent of the library's bits).
using ref::BF16;
using ref::F16;

// The C entry points of one element type (bnorm.hpp's table).
template <typename H>
using Api = bnorm::detail::Api<typename H::T>;

// A tensor in half precision with its exact float values.
template <typename H>
struct HalfTensor {
  std::vector<typename H::T> h;
  std::vector<float> f;
};

template <typename H>
HalfTensor<H> ToHalf(const std::vector<float>& v) {
  HalfTensor<H> t;
  for (float x : v) {
    t.h.push_back(H::Encode(H::Round(x)));
    t.f.push_back(static_cast<float>(H::Decode(t.h.back())));
  }
  return t;
}

// Poisoned output buffer of halves (0xFFFF: a NaN no computation returns).
template <typename H>
std::vector<typename H::T> Poisoned(size_t n) {
  return std::vector<typename H::T>(n, typename H::T{0xFFFF});
}

std::string HalfHex(uint16_t bits) {
  char text[8];
  std::snprintf(text, sizeof(text), "0x%04x", bits);
  return text;
}

// Checks got == the reference rounding of want (float32 outputs of the _f32 path).
template <typename H>
void CheckRounded(const char* what, const bnorm_shape& s, const std::vector<typename H::T>& got,
                  const float* want) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const typename H::T expect = H::Encode(H::Round(want[i]));
    const bool same =
        got[i].bits == expect.bits || (std::isnan(want[i]) && std::isnan(H::Decode(got[i])));
    if (same) continue;
    if (bad++ < kMaxReports)
      FAIL_CHECK(std::string(what)
                 << " at " << Where(s, static_cast<int64_t>(i)) << ": got " << HalfHex(got[i].bits)
                 << ", want " << HalfHex(expect.bits) << " (float32 " << Fmt(want[i]) << ")");
  }
  CHECK_MESSAGE(bad == 0, std::string(what)
                              << ": " << bad << " elements not the float32 result rounded once");
}

// Checks got within half an ulp (of its type) plus k float32 ulps of mag of the
// float64 reference.
template <typename H>
void CheckNearReference(const char* what, const bnorm_shape& s,
                        const std::vector<typename H::T>& got, const ref::Output& want, double k) {
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = H::Decode(got[i]), v = want.value[i];
    if (std::isnan(v) ? std::isnan(g)
                      : std::fabs(g - v) <= H::HalfUlp(v) + k * ref::kUlp * want.mag[i] + 1e-37)
      continue;
    if (bad++ < kMaxReports)
      FAIL_CHECK(std::string(what) << " at " << Where(s, static_cast<int64_t>(i)) << ": got "
                                   << Fmt(g) << ", want " << Fmt(v));
  }
  CHECK_MESSAGE(bad == 0, std::string(what)
                              << ": " << bad << " elements beyond one rounding of the reference");
}

template <typename H>
std::vector<bnorm_shape> HalfShapes(bnorm_layout layout) {
  std::vector<bnorm_shape> shapes = FewShapes(layout, 2);
  // Long channels (several blocks; NCHW channels beyond one work item, 256K values,
  // take the split path) and rows. Under an emulator the longest are left out.
  shapes.push_back(Shape(3, 5, 3001, layout));
  shapes.push_back(Shape(17, 70, 33, layout));
  if (!QuickRun()) shapes.push_back(Shape(2, 2, 140000, layout));
  return shapes;
}

template <typename H>
void CheckEveryOperation() {
  using T = typename H::T;
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : HalfShapes<H>(layout)) {
      INFO(H::kName, " shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 81);
      const HalfTensor<H> x = ToHalf<H>(RandomTensor(s, rng));
      const HalfTensor<H> dy = ToHalf<H>(RandomTensor(s, rng, 1.0));
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.5, 2),
                               beta = RandomVec(s.c, rng, -1, 1);
      const std::vector<float> mean = RandomVec(s.c, rng, -1, 1), var = RandomVec(s.c, rng, 0.5, 2);
      const size_t e = x.h.size(), c = static_cast<size_t>(s.c);
      const ref::Stats st = ref::Moments(s, x.f.data());
      ForEachTarget([&](const std::string&) {
        // moments: bit-identical to the float32 path, and to the float64 reference.
        std::vector<float> m(c), v(c), m32(c), v32(c);
        REQUIRE(Api<H>::moments(&s, x.h.data(), m.data(), v.data()) == bnorm_success);
        REQUIRE(bnorm_moments_f32(&s, x.f.data(), m32.data(), v32.data()) == bnorm_success);
        CheckSameBits("mean vs _f32", m.data(), m32.data(), c);
        CheckSameBits("var vs _f32", v.data(), v32.data(), c);
        CheckMoments("mean", m.data(), "var", v.data(), st, kVarRel);

        for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
          INFO("flags ", flags);
          // training, with running statistics.
          std::vector<T> y = Poisoned<H>(e);
          std::vector<float> y32(e), rm(c, 0.5f), rv(c, 2.0f), rm32 = rm, rv32 = rv;
          std::vector<float> sm(c), si(c), sm32(c), si32(c);
          REQUIRE(Api<H>::forward_training(&s, x.h.data(), y.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                   rm.data(), rv.data(), sm.data(), si.data(),
                                   flags) == bnorm_success);
          REQUIRE(bnorm_forward_training_f32(&s, x.f.data(), y32.data(), gamma.data(), beta.data(),
                                             1e-5f, 0.1f, rm32.data(), rv32.data(), sm32.data(),
                                             si32.data(), flags) == bnorm_success);
          CheckRounded<H>("training y", s, y, y32.data());
          CheckSameBits("saved_mean vs _f32", sm.data(), sm32.data(), c);
          CheckSameBits("saved_invstd vs _f32", si.data(), si32.data(), c);
          CheckSameBits("running_mean vs _f32", rm.data(), rm32.data(), c);
          CheckSameBits("running_var vs _f32", rv.data(), rv32.data(), c);
          const bool relu = flags != 0;
          CheckNearReference<H>(
              "training y (float64)", s, y,
              ref::ForwardTraining(s, x.f.data(), gamma.data(), beta.data(), 1e-5, relu).y,
              kOutUlps);

          // inference, in place.
          std::vector<T> yi = x.h;
          REQUIRE(Api<H>::forward_inference(&s, yi.data(), yi.data(), gamma.data(), beta.data(),
                                    mean.data(), var.data(), 1e-5f, flags) == bnorm_success);
          REQUIRE(bnorm_forward_inference_f32(&s, x.f.data(), y32.data(), gamma.data(), beta.data(),
                                              mean.data(), var.data(), 1e-5f,
                                              flags) == bnorm_success);
          CheckRounded<H>("inference y (in place)", s, yi, y32.data());
          CheckNearReference<H>("inference y (float64)", s, yi,
                                ref::ForwardInference(s, x.f.data(), gamma.data(), beta.data(),
                                                      mean.data(), var.data(), 1e-5, relu),
                                kOutUlps);

          // affine.
          std::vector<T> ya = Poisoned<H>(e);
          REQUIRE(Api<H>::affine(&s, x.h.data(), ya.data(), gamma.data(), beta.data(), flags) ==
                  bnorm_success);
          REQUIRE(bnorm_affine_f32(&s, x.f.data(), y32.data(), gamma.data(), beta.data(), flags) ==
                  bnorm_success);
          CheckRounded<H>("affine y", s, ya, y32.data());

          // backward (the ReLU mask from the half-precision training output).
          std::vector<float> yf(e);
          for (size_t i = 0; i < e; ++i) yf[i] = static_cast<float>(H::Decode(y[i]));
          std::vector<T> dx = Poisoned<H>(e);
          std::vector<float> dg(c), db(c), dx32(e), dg32(c), db32(c);
          REQUIRE(Api<H>::backward(&s, x.h.data(), dy.h.data(), sm.data(), si.data(), gamma.data(),
                                   y.data(), dx.data(), dg.data(), db.data(),
                                   flags) == bnorm_success);
          REQUIRE(bnorm_backward_f32(&s, x.f.data(), dy.f.data(), sm.data(), si.data(),
                                     gamma.data(), yf.data(), dx32.data(), dg32.data(), db32.data(),
                                     flags) == bnorm_success);
          CheckRounded<H>("dx", s, dx, dx32.data());
          CheckSameBits("dgamma vs _f32", dg.data(), dg32.data(), c);
          CheckSameBits("dbeta vs _f32", db.data(), db32.data(), c);
          const ref::Gradients want = ref::Backward(s, x.f.data(), dy.f.data(), sm.data(),
                                                    si.data(), gamma.data(), yf.data(), relu);
          CheckNearReference<H>("dx (float64)", s, dx, want.dx, kOutUlps);
        }
      });
    }
  }
}

TEST_CASE("half: every operation is the float32 path rounded once (bf16)") {
  CheckEveryOperation<BF16>();
}
TEST_CASE("half: every operation is the float32 path rounded once (f16)") {
  CheckEveryOperation<F16>();
}

// y = x + shift through affine (scale 1): exact in float32, then one rounding.
template <typename H>
void CheckRounding(const std::vector<std::pair<double, double>>& cases) {
  using T = typename H::T;
  for (bnorm_layout layout : kLayouts) {
    const int64_t n = static_cast<int64_t>(cases.size());
    // Every case in every lane position: n copies of each value in one channel.
    const bnorm_shape s = Shape(1, 1, n * 37, layout);
    std::vector<T> x, y = Poisoned<H>(static_cast<size_t>(s.spatial));
    std::vector<float> shift = {0};
    for (int64_t i = 0; i < s.spatial; ++i) x.push_back(H::Encode(cases[i % n].first));
    ForEachTarget([&](const std::string&) {
      for (int64_t k = 0; k < n; ++k) {
        shift[0] = static_cast<float>(cases[k].second);
        const float one = 1.0f;
        REQUIRE(Api<H>::affine(&s, x.data(), y.data(), &one, shift.data(), 0) == bnorm_success);
        for (int64_t i = k; i < s.spatial; i += n) {
          const double exact = cases[k].first + cases[k].second;
          const T want = H::Encode(H::Round(exact));
          INFO(H::kName, " ", Fmt(cases[k].first), " + ", Fmt(cases[k].second), " at ", i);
          CHECK(y[i].bits == want.bits);
        }
      }
    });
  }
}

TEST_CASE("half: narrowing rounds to nearest even, keeps subnormals, overflows to Inf") {
  const double inf = HUGE_VAL;
  // bfloat16: 8 significant bits. Ties both ways, a non-tie, subnormals, overflow, Inf.
  CheckRounding<BF16>({
      {1 + std::ldexp(1, -7), std::ldexp(1, -8)},  // tie, odd below: up to 1 + 2^-6
      {1.0, std::ldexp(1, -8)},                    // tie, even below: stays 1
      {-1.0 - std::ldexp(1, -7), -std::ldexp(1, -8)},
      {1.0, std::ldexp(1, -8) + std::ldexp(1, -20)},  // just above the tie: up
      {std::ldexp(1, -133), std::ldexp(1, -134)},     // subnormal tie: odd, up
      {0.0, std::ldexp(3, -140)},                     // float32-subnormal, rounds
      {BF16::Max(), std::ldexp(1, 119)},              // max + half ulp: Inf
      {BF16::Max(), std::ldexp(1, 118)},              // below the tie: max
      {inf, 1.0},
      {-inf, 1.0},
  });
  // float16: 11 significant bits, subnormals below 2^-14, largest 65504.
  CheckRounding<F16>({
      {1 + std::ldexp(1, -10), std::ldexp(1, -11)},  // tie, odd below: up
      {1.0, std::ldexp(1, -11)},                     // tie, even below: stays
      {-1.0 - std::ldexp(1, -10), -std::ldexp(1, -11)},
      {0.0, std::ldexp(1, -25)},                  // half the smallest subnormal: 0
      {0.0, std::ldexp(3, -25)},                  // 1.5 x smallest: up to 2^-23
      {0.0, std::ldexp(1, -30)},                  // below half the smallest: 0
      {std::ldexp(1, -14), -std::ldexp(1, -25)},  // normal to subnormal, tie
      {65504.0, 15.0},                            // 65519: max
      {65504.0, 16.0},                            // 65520: tie, Inf
      {65504.0, 1e6},                             // far beyond: Inf
      {-65504.0, -16.0},
      {inf, 1.0},
      {-inf, -1.0},
  });
}

template <typename H>
void CheckSpecialValues() {
  using T = typename H::T;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = HUGE_VAL;
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(2, 3, 21, layout);
    std::mt19937 rng = Rng(s, 5);
    HalfTensor<H> x = ToHalf<H>(RandomTensor(s, rng));
    // Channel 0 gets a NaN, channel 1 an Inf; channel 2 stays finite.
    x.h[ref::Offset(s, 1, 0, 4)] = H::Encode(nan);
    x.h[ref::Offset(s, 0, 1, 7)] = H::Encode(inf);
    for (size_t i = 0; i < x.h.size(); ++i) x.f[i] = static_cast<float>(H::Decode(x.h[i]));
    ForEachTarget([&](const std::string&) {
      INFO(H::kName, " ", ShapeString(s));
      std::vector<float> m(3), v(3), m32(3), v32(3);
      REQUIRE(Api<H>::moments(&s, x.h.data(), m.data(), v.data()) == bnorm_success);
      REQUIRE(bnorm_moments_f32(&s, x.f.data(), m32.data(), v32.data()) == bnorm_success);
      CHECK(std::isnan(m[0]));
      CHECK(m[1] == HUGE_VALF);
      CHECK(std::isfinite(m[2]));
      CheckSameBits("moments (NaN, Inf) vs _f32", m.data(), m32.data(), 3);
      // Affine keeps NaN a NaN and Inf an Inf.
      std::vector<T> y = Poisoned<H>(x.h.size());
      std::vector<float> y32(x.h.size());
      const std::vector<float> scale = {2, -2, 1}, shift = {1, 1, 1};
      REQUIRE(Api<H>::affine(&s, x.h.data(), y.data(), scale.data(), shift.data(), 0) ==
              bnorm_success);
      REQUIRE(bnorm_affine_f32(&s, x.f.data(), y32.data(), scale.data(), shift.data(), 0) ==
              bnorm_success);
      CHECK(std::isnan(H::Decode(y[ref::Offset(s, 1, 0, 4)])));
      CHECK(H::Decode(y[ref::Offset(s, 0, 1, 7)]) == -inf);
      CheckRounded<H>("affine (NaN, Inf)", s, y, y32.data());
    });
  }
}

TEST_CASE("half: NaN and Inf as IEEE says, other channels untouched") {
  CheckSpecialValues<BF16>();
  CheckSpecialValues<F16>();
}

template <typename H>
void CheckDeterminismAndSlices() {
  using T = typename H::T;
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = layout == bnorm_nchw ? Shape(2, 3, QuickRun() ? 40000 : 140000, layout)
                                               : Shape(QuickRun() ? 60 : 300, 40, 49, layout);
    std::mt19937 rng = Rng(s, 9);
    const HalfTensor<H> x = ToHalf<H>(RandomTensor(s, rng));
    const size_t e = x.h.size(), c = static_cast<size_t>(s.c);
    ForEachTarget([&](const std::string&) {
      INFO(H::kName, " ", ShapeString(s));
      std::vector<T> y1(e), y2(e), y3(e);
      std::vector<float> m1(c), i1(c), m2(c), i2(c), m3(c), i3(c);
      REQUIRE(Api<H>::forward_training(&s, x.h.data(), y1.data(), nullptr, nullptr, 1e-5f, 0.1f, nullptr,
                               nullptr, m1.data(), i1.data(), 0) == bnorm_success);
      REQUIRE(Api<H>::forward_training(&s, x.h.data(), y2.data(), nullptr, nullptr, 1e-5f, 0.1f, nullptr,
                               nullptr, m2.data(), i2.data(), BNORM_SERIAL) == bnorm_success);
      // The same from two uneven channel slices.
      const int64_t cut = s.c / 3;
      REQUIRE(Api<H>::forward_training_slice(&s, 0, cut, x.h.data(), y3.data(), nullptr, nullptr, 1e-5f,
                                     0.1f, nullptr, nullptr, m3.data(), i3.data(),
                                     0) == bnorm_success);
      REQUIRE(Api<H>::forward_training_slice(&s, cut, s.c, x.h.data(), y3.data(), nullptr, nullptr, 1e-5f,
                                     0.1f, nullptr, nullptr, m3.data(), i3.data(),
                                     0) == bnorm_success);
      CHECK(std::memcmp(y1.data(), y2.data(), e * sizeof(T)) == 0);
      CHECK(std::memcmp(y1.data(), y3.data(), e * sizeof(T)) == 0);
      CheckSameBits("saved_mean serial", m1.data(), m2.data(), c);
      CheckSameBits("saved_mean slices", m1.data(), m3.data(), c);
      CheckSameBits("saved_invstd slices", i1.data(), i3.data(), c);
    });
  }
}

TEST_CASE("half: bit-identical threaded, serial and from channel slices") {
  CheckDeterminismAndSlices<BF16>();
  CheckDeterminismAndSlices<F16>();
}

// Outputs of at least 8 MiB go out with non-temporal stores, whole vectors after a
// head that aligns them (two float32 vectors narrowed per store for halves). Every
// output here starts one element past an aligned address, so the head is never empty;
// the float32 outputs (which stream too) are held to the float64 reference, the
// halves to them rounded once. Under an emulator (where one such call takes seconds),
// bf16 affine on the NCHW shape only, against the float32 output.
template <typename H>
void CheckLargeOutputs(const bnorm_shape& s) {
  using T = typename H::T;
  std::mt19937 rng = Rng(s, 33);
  const HalfTensor<H> x = ToHalf<H>(RandomTensor(s, rng));
  const std::vector<float> gamma = RandomSigned(s.c, rng, 0.5, 2), beta = RandomVec(s.c, rng, -1, 1);
  const std::vector<float> mean = RandomVec(s.c, rng, -1, 1), var = RandomVec(s.c, rng, 0.5, 2);
  const HalfTensor<H> dy = QuickRun() ? HalfTensor<H>{} : ToHalf<H>(RandomTensor(s, rng, 1.0));
  const size_t e = x.h.size(), c = static_cast<size_t>(s.c);
  REQUIRE(e * sizeof(T) >= (size_t{8} << 20));
  std::vector<T> yh_buf(e + 1), dxh_buf(e + 1);
  std::vector<float> y_buf(e + 1), dx_buf(e + 1);
  T* yh = yh_buf.data() + 1;
  T* dxh = dxh_buf.data() + 1;
  float* y = y_buf.data() + 1;
  float* dx = dx_buf.data() + 1;
  const auto rounded = [&](const char* what, const T* got, const float* want) {
    CheckRounded<H>(what, s, std::vector<T>(got, got + e), want);
  };
  ForEachTarget([&](const std::string&) {
    INFO(H::kName, " ", ShapeString(s));
    REQUIRE(bnorm_affine_f32(&s, x.f.data(), y, gamma.data(), beta.data(), BNORM_FUSE_RELU) ==
            bnorm_success);
    REQUIRE(Api<H>::affine(&s, x.h.data(), yh, gamma.data(), beta.data(), BNORM_FUSE_RELU) ==
            bnorm_success);
    rounded("affine y", yh, y);
    if (QuickRun()) return;
    CheckTensor("affine y (float32)", s, y, ref::Affine(s, x.f.data(), gamma.data(), beta.data(), true),
                kOutUlps);
    std::vector<float> sm(c), si(c);
    REQUIRE(Api<H>::moments(&s, x.h.data(), sm.data(), si.data()) == bnorm_success);
    for (size_t ch = 0; ch < c; ++ch) si[ch] = 1.0f / std::sqrt(si[ch] + 1e-5f);
    {
      REQUIRE(bnorm_forward_inference_f32(&s, x.f.data(), y, gamma.data(), beta.data(),
                                          mean.data(), var.data(), 1e-5f, 0) == bnorm_success);
      CheckTensor("inference y (float32)", s, y,
                  ref::ForwardInference(s, x.f.data(), gamma.data(), beta.data(), mean.data(),
                                        var.data(), 1e-5, false),
                  kOutUlps);
      REQUIRE(Api<H>::forward_inference(&s, x.h.data(), yh, gamma.data(), beta.data(),
                                        mean.data(), var.data(), 1e-5f, 0) == bnorm_success);
      rounded("inference y", yh, y);
      std::vector<float> m32(c), i32(c);
      REQUIRE(bnorm_forward_training_f32(&s, x.f.data(), y, gamma.data(), beta.data(), 1e-5f,
                                         0.1f, nullptr, nullptr, m32.data(), i32.data(),
                                         0) == bnorm_success);
      REQUIRE(Api<H>::forward_training(&s, x.h.data(), yh, gamma.data(), beta.data(), 1e-5f,
                                       0.1f, nullptr, nullptr, sm.data(), si.data(),
                                       0) == bnorm_success);
      rounded("training y", yh, y);
      CheckSameBits("saved_invstd vs _f32", si.data(), i32.data(), c);
    }
    std::vector<float> dg(c), db(c), dg32(c), db32(c);
    REQUIRE(bnorm_backward_f32(&s, x.f.data(), dy.f.data(), sm.data(), si.data(), gamma.data(),
                               nullptr, dx, dg32.data(), db32.data(), 0) == bnorm_success);
    CheckTensor("dx (float32)", s, dx,
                ref::Backward(s, x.f.data(), dy.f.data(), sm.data(), si.data(), gamma.data(),
                              nullptr, false)
                    .dx,
                kOutUlps);
    REQUIRE(Api<H>::backward(&s, x.h.data(), dy.h.data(), sm.data(), si.data(), gamma.data(),
                             nullptr, dxh, dg.data(), db.data(), 0) == bnorm_success);
    rounded("dx", dxh, dx);
    CheckSameBits("dgamma vs _f32", dg.data(), dg32.data(), c);
  });
}

TEST_CASE("half: outputs of 8 MiB and more (non-temporal stores)") {
  // 4.2M values: NCHW planes of odd length; NHWC rows of 37 channels.
  CheckLargeOutputs<BF16>(Shape(2, 3, 700003, bnorm_nchw));
  if (QuickRun()) return;
  CheckLargeOutputs<F16>(Shape(2, 3, 700003, bnorm_nchw));
  CheckLargeOutputs<BF16>(Shape(3, 37, 37801, bnorm_nhwc));
  CheckLargeOutputs<F16>(Shape(3, 37, 37801, bnorm_nhwc));
}

TEST_CASE("half: bad arguments are refused, outputs untouched, messages name them") {
  const bnorm_shape s = Shape(2, 3, 5, bnorm_nchw);
  std::vector<bnorm_bf16> x(30, bnorm_bf16{0x3f80}), y(30, bnorm_bf16{0x1234});
  std::vector<float> m(3, 7.0f), v(3, 7.0f), one(3, 1.0f);
  CHECK(bnorm_moments_bf16(&s, nullptr, m.data(), v.data()) == bnorm_invalid_argument);
  CHECK(std::string(bnorm_last_error()).find("bnorm_moments_bf16: x") == 0);
  CHECK(m[0] == 7.0f);
  // A y that starts one element (2 bytes) after x overlaps it.
  std::vector<bnorm_f16> xh(31, bnorm_f16{0x3c00});
  CHECK(bnorm_affine_f16(&s, xh.data(), xh.data() + 1, one.data(), one.data(), 0) ==
        bnorm_invalid_argument);
  CHECK(std::string(bnorm_last_error()).find("bnorm_affine_f16: y: overlaps x") == 0);
  CHECK(xh[1].bits == 0x3c00);
  // Adjacent (not overlapping) halves are fine, and so is exactly in place.
  std::vector<bnorm_f16> two(60, bnorm_f16{0x3c00});
  CHECK(bnorm_affine_f16(&s, two.data(), two.data() + 30, one.data(), one.data(), 0) ==
        bnorm_success);
  CHECK(two[30].bits == 0x4000);  // 1 * 1 + 1 = 2
  CHECK(bnorm_affine_bf16(&s, x.data(), x.data(), one.data(), one.data(), 0) == bnorm_success);
  CHECK(x[0].bits == 0x4000);  // bfloat16 2.0
  const bnorm_shape huge = Shape(int64_t{1} << 40, int64_t{1} << 20, 1 << 3, bnorm_nchw);
  CHECK(bnorm_forward_inference_bf16(&huge, x.data(), y.data(), nullptr, nullptr, m.data(),
                                     v.data(), 1e-5f, 0) == bnorm_invalid_argument);
  CHECK(std::string(bnorm_last_error()).find("sizeof(bnorm_bf16) overflows") != std::string::npos);
  CHECK(y[0].bits == 0x1234);
  CHECK(bnorm_backward_slice_f16(&s, 2, 1, xh.data(), xh.data(), m.data(), v.data(), nullptr,
                                 nullptr, nullptr, m.data(), v.data(),
                                 0) == bnorm_invalid_argument);
  CHECK(std::string(bnorm_last_error()).find("bnorm_backward_slice_f16: c_begin, c_end") == 0);
}

TEST_CASE("half: C++ API takes the element type as a template argument") {
  const bnorm::Shape s{2, 3, 5, bnorm::Layout::kNHWC};
  std::vector<bnorm_bf16> x(30), y(30);
  for (size_t i = 0; i < x.size(); ++i) x[i] = BF16::Encode(BF16::Round(0.25 * i - 3));
  std::vector<float> mean(3), var(3), cm(3), cv(3), gamma(3, 2.0f), beta(3, 0.5f);
  bnorm::Moments<bnorm_bf16>(s, x, mean, var);
  const bnorm_shape cs = s.c_shape();
  REQUIRE(bnorm_moments_bf16(&cs, x.data(), cm.data(), cv.data()) == bnorm_success);
  CheckSameBits("C++ mean", mean.data(), cm.data(), 3);
  bnorm::Affine<bnorm_bf16>(s, x, y, gamma, beta, bnorm::kFuseRelu);
  for (size_t i = 0; i < y.size(); ++i) {
    CHECK(BF16::Decode(y[i]) == BF16::Round(std::max(0.0, 2 * BF16::Decode(x[i]) + 0.5)));
  }
  std::vector<bnorm_f16> xf(30, bnorm_f16{0x3c00}), yf(29);
  CHECK_THROWS_AS(bnorm::Affine<bnorm_f16>(s, xf, yf, gamma, beta), bnorm::Error);
  // float stays the default element type.
  std::vector<float> x32(30, 1.0f), y32(30);
  bnorm::Affine(s, x32, y32, gamma, beta);
  CHECK(y32[7] == 2.5f);
}

}  // namespace
}  // namespace test
}  // namespace bnorm
