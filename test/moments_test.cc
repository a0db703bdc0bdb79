// Tests of bnorm_moments_f32: per-channel mean and biased variance on every target,
// layout and edge shape, and on shapes long enough to be cut into many chunks.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// Runs moments on `x` of shape `s` on every target and checks mean, var, canaries and
// that x was only read.
void CheckMomentsAllTargets(const bnorm_shape& s, const std::vector<float>& x, size_t misalign,
                            double var_rel) {
  const ref::Stats want = ref::Moments(s, x.data());
  Buffer bx(x, misalign), mean(s.c, (misalign + 1) % 4), var(s.c, (misalign + 3) % 4);
  ForEachTarget([&](const std::string&) {
    mean.Poison();
    var.Poison();
    REQUIRE(bnorm_moments_f32(&s, bx.data(), mean.data(), var.data()) == bnorm_success);
    CheckMoments("mean", mean.data(), "var", var.data(), want, var_rel);
    CheckSameBits("x (an input) was modified", bx.data(), x.data(), x.size());
    BNORM_CHECK_CANARIES(bx);
    BNORM_CHECK_CANARIES(mean);
    BNORM_CHECK_CANARIES(var);
  });
}

TEST_CASE("moments: every edge shape, layout and target") {
  for (bnorm_layout layout : kLayouts) {
    size_t index = 0;
    for (const bnorm_shape& s : EdgeShapes(layout)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 1);
      CheckMomentsAllTargets(s, RandomTensor(s, rng), index++ % 4, kVarRel);
    }
  }
}

TEST_CASE("moments: long channels cut into many chunks") {
  for (const bnorm_shape& s : LargeShapes()) {
    INFO("shape ", ShapeString(s));
    std::mt19937 rng = Rng(s, 2);
    CheckMomentsAllTargets(s, RandomTensor(s, rng), 1, kVarRel);
  }
}

TEST_CASE("moments: one value per channel has mean x and variance 0") {
  for (bnorm_layout layout : kLayouts) {
    for (int64_t c : {1, 3, 16, 17, 1000}) {
      const bnorm_shape s = Shape(1, c, 1, layout);
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 3);
      const std::vector<float> x = RandomTensor(s, rng);
      Buffer bx(x, 0), mean(c, 1), var(c, 2);
      ForEachTarget([&](const std::string&) {
        mean.Poison();
        var.Poison();
        REQUIRE(bnorm_moments_f32(&s, bx.data(), mean.data(), var.data()) == bnorm_success);
        CheckSameBits("mean", mean.data(), x.data(), c);
        const std::vector<float> zeros(c, 0.0f);
        CheckSameBits("var", var.data(), zeros.data(), c);
      });
    }
  }
}

TEST_CASE("moments: layouts agree on the same logical tensor") {
  // The same values stored NCHW and NHWC give the same statistics (within tolerance of
  // the reference, which is layout-independent by construction).
  const bnorm_shape nchw = Shape(3, 19, 41, bnorm_nchw);
  bnorm_shape nhwc = nchw;
  nhwc.layout = bnorm_nhwc;
  std::mt19937 rng = Rng(nchw, 4);
  const std::vector<float> a = RandomTensor(nchw, rng);
  std::vector<float> b(a.size());
  for (int64_t i = 0; i < nchw.n; ++i)
    for (int64_t ch = 0; ch < nchw.c; ++ch)
      for (int64_t sp = 0; sp < nchw.spatial; ++sp)
        b[ref::Offset(nhwc, i, ch, sp)] = a[ref::Offset(nchw, i, ch, sp)];
  const ref::Stats want_a = ref::Moments(nchw, a.data()), want_b = ref::Moments(nhwc, b.data());
  for (int64_t ch = 0; ch < nchw.c; ++ch) {
    CHECK(want_a.mean[ch] == doctest::Approx(want_b.mean[ch]).epsilon(1e-12));
    CHECK(want_a.var[ch] == doctest::Approx(want_b.var[ch]).epsilon(1e-12));
  }
  CheckMomentsAllTargets(nchw, a, 0, kVarRel);
  CheckMomentsAllTargets(nhwc, b, 0, kVarRel);
}

// The tolerances must reject the bugs they are meant to catch. These checks run the
// acceptance predicates (not the library) on deliberately wrong results.
TEST_CASE("tolerances: a naive float32 E[x^2] - E[x]^2 variance is rejected") {
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(4, 5, 250, layout);
    std::mt19937 rng = Rng(s, 5);
    // |mean| = 1e4 std, as in numerics_test.
    std::vector<float> x(ref::Elements(s));
    std::normal_distribution<double> normal;
    for (int64_t ch = 0; ch < s.c; ++ch) {
      const double sd = std::exp2(Uniform(rng, -4, 4));
      for (int64_t i = 0; i < s.n; ++i)
        for (int64_t sp = 0; sp < s.spatial; ++sp)
          x[ref::Offset(s, i, ch, sp)] = static_cast<float>(1e4 * sd + sd * normal(rng));
    }
    const ref::Stats want = ref::Moments(s, x.data());
    std::vector<float> naive(s.c);
    for (int64_t ch = 0; ch < s.c; ++ch) {
      float sum = 0, sum2 = 0;
      for (int64_t i = 0; i < s.n; ++i)
        for (int64_t sp = 0; sp < s.spatial; ++sp) {
          const float v = x[ref::Offset(s, i, ch, sp)];
          sum += v;
          sum2 += v * v;
        }
      const float count = static_cast<float>(ref::Count(s));
      naive[ch] = sum2 / count - (sum / count) * (sum / count);
    }
    ref::Vec mag(want.var);
    CHECK(CountFar(naive.data(), want.var, mag, kVarRelBigMean / ref::kUlp) == s.c);
  }
}

TEST_CASE("tolerances: an off-by-one element in mean, variance or y is rejected") {
  std::vector<bnorm_shape> shapes = EdgeShapes(bnorm_nchw, 3);
  for (const bnorm_shape& s : LargeShapes()) shapes.push_back(s);
  for (const bnorm_shape& s : shapes) {
    INFO("shape ", ShapeString(s));
    std::mt19937 rng = Rng(s, 6);
    const std::vector<float> x = RandomTensor(s, rng);
    const ref::Stats want = ref::Moments(s, x.data());
    ref::Vec mean_mag(s.c);
    for (int64_t ch = 0; ch < s.c; ++ch) mean_mag[ch] = ref::MeanMag(want.mean[ch], want.var[ch]);
    // Statistics of all values but the last of each channel.
    bnorm_shape shorter = s;
    std::vector<float> xs;
    if (s.spatial > 1) {
      shorter.spatial = s.spatial - 1;  // drop the last position of every image ...
    } else {
      shorter.n = s.n - 1;  // ... or the last image
    }
    xs.resize(ref::Elements(shorter));
    for (int64_t i = 0; i < shorter.n; ++i)
      for (int64_t ch = 0; ch < s.c; ++ch)
        for (int64_t sp = 0; sp < shorter.spatial; ++sp)
          xs[ref::Offset(shorter, i, ch, sp)] = x[ref::Offset(s, i, ch, sp)];
    const ref::Stats fewer = ref::Moments(shorter, xs.data());
    const std::vector<float> fewer_mean = ToFloat(fewer.mean), fewer_var = ToFloat(fewer.var);
    const int64_t bad_mean = CountFar(fewer_mean.data(), want.mean, mean_mag, kMeanUlps);
    ref::Vec var_mag(want.var);
    const int64_t bad_var = CountFar(fewer_var.data(), want.var, var_mag, kVarRel / ref::kUlp);
    CHECK(bad_mean + bad_var >= (s.c + 1) / 2);
    // Variance divided by count - 1 (or count + 1): every channel rejected.
    std::vector<float> var_m1(s.c), var_p1(s.c);
    const double count = static_cast<double>(ref::Count(s));
    for (int64_t ch = 0; ch < s.c; ++ch) {
      var_m1[ch] = static_cast<float>(want.var[ch] * count / (count - 1));
      var_p1[ch] = static_cast<float>(want.var[ch] * count / (count + 1));
    }
    CHECK(CountFar(var_m1.data(), want.var, var_mag, kVarRel / ref::kUlp) == s.c);
    CHECK(CountFar(var_p1.data(), want.var, var_mag, kVarRel / ref::kUlp) == s.c);
    // y computed from the neighbouring element: (nearly) every element rejected.
    if (s.spatial > 1) {
      const ref::Training t = ref::ForwardTraining(s, x.data(), nullptr, nullptr, 1e-5, false);
      std::vector<float> y_shifted(x.size());
      for (size_t i = 0; i < x.size(); ++i)
        y_shifted[i] = static_cast<float>(t.y.value[(i + 1) % x.size()]);
      const int64_t bad_y = CountFar(y_shifted.data(), t.y.value, t.y.mag, kOutUlps);
      CHECK(bad_y >= static_cast<int64_t>(x.size()) * 9 / 10);
      // And the unshifted float results pass (the tolerance is not too tight for exact
      // rounding of the reference).
      const std::vector<float> y_exact = ToFloat(t.y.value);
      CHECK(CountFar(y_exact.data(), t.y.value, t.y.mag, kOutUlps) == 0);
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
