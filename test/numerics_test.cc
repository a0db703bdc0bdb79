// Numerically hard data on every target and layout: |mean| = 1e4 std, constant
// channels, values near 1e19..3e19 whose squares overflow float32, and NaN / Inf that
// must stay inside their channel.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <limits>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Returns a tensor whose channel ch holds normal values of mean mean[ch] and std sd[ch]
// (sd 0: every value is float(mean[ch])).
std::vector<float> TensorWith(const bnorm_shape& s, std::mt19937& rng, const ref::Vec& mean,
                              const ref::Vec& sd) {
  std::vector<float> x(ref::Elements(s));
  std::normal_distribution<double> normal;
  for (int64_t ch = 0; ch < s.c; ++ch)
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp)
        x[ref::Offset(s, i, ch, sp)] = static_cast<float>(mean[ch] + sd[ch] * normal(rng));
  return x;
}

// Runs moments and training forward (gamma, beta, running and saved statistics) on x on
// every target, and checks every output against the reference with `var_rel`.
void CheckStatsOps(const bnorm_shape& s, const std::vector<float>& x, double var_rel,
                   unsigned flags = 0) {
  std::mt19937 rng = Rng(s, 99);
  const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
  const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
  const std::vector<float> rm0 = RandomVec(s.c, rng, -2, 2);
  const std::vector<float> rv0 = RandomVec(s.c, rng, 0.1, 4);
  const float eps = 1e-5f, momentum = 0.1f;
  const ref::Training want =
      ref::ForwardTraining(s, x.data(), gamma.data(), beta.data(), eps, flags & BNORM_FUSE_RELU);
  Buffer bx(x, 1), mean(s.c, 0), var(s.c, 0), by(x.size(), 2), rm(s.c, 0), rv(s.c, 0), sm(s.c, 0),
      si(s.c, 0);
  ForEachTarget([&](const std::string&) {
    mean.Poison();
    var.Poison();
    REQUIRE(bnorm_moments_f32(&s, bx.data(), mean.data(), var.data()) == bnorm_success);
    CheckMoments("mean", mean.data(), "var", var.data(), want.stats, var_rel);

    by.Poison();
    rm.Fill(rm0);
    rv.Fill(rv0);
    sm.Poison();
    si.Poison();
    const bnorm_status status =
        bnorm_forward_training_f32(&s, bx.data(), by.data(), gamma.data(), beta.data(), eps,
                                   momentum, rm.data(), rv.data(), sm.data(), si.data(), flags);
    REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
    CheckTensor("y", s, by.data(), want.y, kOutUlps);
    CheckSaved(sm.data(), si.data(), want.stats, want.invstd, var_rel);
    CheckRunning(s, want.stats, momentum, false, rm0, rv0, rm.data(), rv.data(), var_rel);
    CheckSameBits("x (an input) was modified", bx.data(), x.data(), x.size());
    for (const Buffer* b : {&bx, &mean, &var, &by, &rm, &rv, &sm, &si})
      CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
  });
}

// Shapes with counts 2, 3, 17, 100, 1000, 4096, 10000 (both layouts).
std::vector<bnorm_shape> CountShapes() {
  std::vector<bnorm_shape> shapes;
  for (bnorm_layout layout : kLayouts)
    for (const bnorm_shape& s :
         {Shape(1, 3, 2, layout), Shape(3, 17, 1, layout), Shape(1, 5, 17, layout),
          Shape(4, 7, 25, layout), Shape(2, 16, 500, layout), Shape(1, 9, 4096, layout),
          Shape(2, 3, 5000, layout)})
      shapes.push_back(s);
  return shapes;
}

TEST_CASE("numerics: |mean| = 1e4 std (var within 1e-5 relative)") {
  for (const bnorm_shape& s : CountShapes()) {
    INFO("shape ", ShapeString(s));
    std::mt19937 rng = Rng(s, 30);
    ref::Vec mean(s.c), sd(s.c);
    for (int64_t ch = 0; ch < s.c; ++ch) {
      sd[ch] = std::exp2(Uniform(rng, -8, 8));
      mean[ch] = (ch % 2 ? -1e4 : 1e4) * sd[ch];
    }
    CheckStatsOps(s, TensorWith(s, rng, mean, sd), kVarRelBigMean);
  }
}

TEST_CASE("numerics: constant channels have variance 0 and y == beta exactly") {
  const float kConstants[] = {0.1f, -3.7f, 1000.3f, 1.5e-5f, 0.0f, -7e8f, 1.0f / 3};
  for (const bnorm_shape& s :
       {Shape(1, 7, 2, bnorm_nchw), Shape(3, 7, 1, bnorm_nhwc), Shape(1, 14, 7, bnorm_nchw),
        Shape(1, 21, 7, bnorm_nhwc), Shape(4, 7, 25, bnorm_nchw), Shape(4, 17, 25, bnorm_nhwc),
        Shape(1, 7, 2049, bnorm_nchw), Shape(3, 33, 1000, bnorm_nhwc),
        Shape(2, 7, 2500, bnorm_nchw)}) {
    INFO("shape ", ShapeString(s));
    std::mt19937 rng = Rng(s, 31);
    // Every other channel is constant; the others are ordinary data.
    ref::Vec mean(s.c), sd(s.c);
    for (int64_t ch = 0; ch < s.c; ++ch) {
      const bool constant = ch % 2 == 0;
      sd[ch] = constant ? 0.0 : std::exp2(Uniform(rng, -3, 3));
      mean[ch] = constant ? kConstants[(ch / 2) % 7] : sd[ch] * Uniform(rng, -3, 3);
    }
    const std::vector<float> x = TensorWith(s, rng, mean, sd);
    const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
    const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
    const float eps = 1e-5f;
    for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
      INFO("flags ", flags);
      const ref::Training want = ref::ForwardTraining(s, x.data(), gamma.data(), beta.data(), eps,
                                                      flags & BNORM_FUSE_RELU);
      Buffer bm(s.c, 0), bv(s.c, 0), by(x.size(), 1), sm(s.c, 0), si(s.c, 0);
      ForEachTarget([&](const std::string&) {
        bm.Poison();
        bv.Poison();
        REQUIRE(bnorm_moments_f32(&s, x.data(), bm.data(), bv.data()) == bnorm_success);
        CheckMoments("mean", bm.data(), "var", bv.data(), want.stats, kVarRel);
        by.Poison();
        sm.Poison();
        si.Poison();
        REQUIRE(bnorm_forward_training_f32(&s, x.data(), by.data(), gamma.data(), beta.data(), eps,
                                           0.1f, nullptr, nullptr, sm.data(), si.data(),
                                           flags) == bnorm_success);
        CheckTensor("y", s, by.data(), want.y, kOutUlps);
        CheckSaved(sm.data(), si.data(), want.stats, want.invstd, kVarRel);
        int64_t bad = 0;
        for (int64_t ch = 0; ch < s.c; ch += 2) {
          INFO("constant channel ", ch, " value ", Fmt(mean[ch]));
          CHECK(Bits(bm[ch]) == Bits(static_cast<float>(mean[ch])));
          CHECK(bv[ch] == 0.0f);
          CHECK(Bits(sm[ch]) == Bits(static_cast<float>(mean[ch])));
          const float want_y = (flags & BNORM_FUSE_RELU) && beta[ch] < 0 ? 0.0f : beta[ch];
          for (int64_t i = 0; i < s.n; ++i)
            for (int64_t sp = 0; sp < s.spatial; ++sp) {
              const int64_t o = ref::Offset(s, i, ch, sp);
              if (by[o] != want_y && bad++ < kMaxReports)
                FAIL_CHECK("y at " << Where(s, o) << " = " << Fmt(by[o]) << " (" << Hex(by[o])
                                   << "), want beta = " << Fmt(want_y) << " exactly");
            }
        }
        CHECK_MESSAGE(bad == 0, bad << " outputs of constant channels differ from beta");
      });
    }
  }
}

TEST_CASE("numerics: values near 1e19 and 3e19 (squares overflow float32, variance not)") {
  // |x| >= 1.8e19 means x*x > FLT_MAX; the variance itself (std^2 <= 1e34) is finite.
  struct Case {
    double mean, sd, var_rel;
  };
  const Case kCases[] = {{3e19, 3e15, kVarRelBigMean},   // |mean| / std = 1e4
                         {-3e19, 3e15, kVarRelBigMean},  //
                         {1e19, 1e17, kVarRelBigMean},   // |mean| / std = 100
                         {2.5e19, 1e18, kVarRelBigMean}};
  for (const bnorm_shape& s :
       {Shape(1, 3, 2, bnorm_nchw), Shape(1, 3, 2, bnorm_nhwc), Shape(2, 5, 17, bnorm_nchw),
        Shape(2, 5, 17, bnorm_nhwc), Shape(1, 17, 100, bnorm_nchw), Shape(4, 17, 250, bnorm_nhwc),
        Shape(1, 2, 1000, bnorm_nchw)}) {
    for (const Case& k : kCases) {
      INFO("shape ", ShapeString(s), " mean ", Fmt(k.mean), " std ", Fmt(k.sd));
      std::mt19937 rng = Rng(s, 32);
      ref::Vec mean(s.c), sd(s.c);
      for (int64_t ch = 0; ch < s.c; ++ch) {
        mean[ch] = k.mean * (1 + 0.01 * ch);
        sd[ch] = k.sd * (1 + 0.1 * ch);
      }
      const std::vector<float> x = TensorWith(s, rng, mean, sd);
      CheckStatsOps(s, x, k.var_rel);
    }
  }
}

// Positions in channel `ch` to put a special value at: first, middle and last.
std::vector<int64_t> SpecialPositions(const bnorm_shape& s, int64_t ch) {
  const int64_t count = ref::Count(s);
  std::vector<int64_t> at;
  for (int64_t k : {int64_t{0}, count / 2, count - 1}) {
    const int64_t i = k / s.spatial, sp = k % s.spatial;
    at.push_back(ref::Offset(s, i, ch, sp));
  }
  return at;
}

TEST_CASE("numerics: NaN stays in its channel (moments, training, inference, affine, backward)") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s :
         {Shape(1, 3, 2, layout), Shape(2, 7, 5, layout), Shape(1, 16, 33, layout),
          Shape(3, 17, 16, layout), Shape(1, 33, 1000, layout), Shape(2, 5, 2049, layout)}) {
      std::mt19937 rng = Rng(s, 33);
      const std::vector<float> clean = RandomTensor(s, rng);
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
      const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
      for (int64_t nan_ch : {int64_t{0}, s.c / 2, s.c - 1}) {
        for (int64_t pos : SpecialPositions(s, nan_ch)) {
          INFO("shape ", ShapeString(s), " NaN at ", Where(s, pos));
          std::vector<float> x = clean;
          x[pos] = kNaN;
          // Moments and training: the whole channel becomes NaN, the others are exact.
          CheckStatsOps(s, x, kVarRel);
          // Inference and affine: only the NaN element.
          const ref::Stats st = ref::Moments(s, clean.data());
          const std::vector<float> m = ToFloat(st.mean), v = ToFloat(st.var);
          const ref::Output want_inf = ref::ForwardInference(s, x.data(), gamma.data(), beta.data(),
                                                             m.data(), v.data(), 1e-5f, false);
          const ref::Output want_aff = ref::Affine(s, x.data(), gamma.data(), beta.data(), false);
          // Backward: NaN in dy poisons that channel's dgamma, dbeta and dx.
          std::vector<float> invstd(s.c);
          for (int64_t ch = 0; ch < s.c; ++ch)
            invstd[ch] = static_cast<float>(1 / std::sqrt(st.var[ch] + 1e-5));
          const std::vector<float> dy = x;  // NaN at the same place
          const ref::Gradients want_b = ref::Backward(s, clean.data(), dy.data(), m.data(),
                                                      invstd.data(), gamma.data(), nullptr, false);
          Buffer by(x.size(), 0), bdx(x.size(), 0), bdg(s.c, 0), bdb(s.c, 0);
          ForEachTarget([&](const std::string&) {
            by.Poison();
            REQUIRE(bnorm_forward_inference_f32(&s, x.data(), by.data(), gamma.data(), beta.data(),
                                                m.data(), v.data(), 1e-5f, 0) == bnorm_success);
            CheckTensor("inference y", s, by.data(), want_inf, kOutUlps);
            by.Poison();
            REQUIRE(bnorm_affine_f32(&s, x.data(), by.data(), gamma.data(), beta.data(), 0) ==
                    bnorm_success);
            CheckTensor("affine y", s, by.data(), want_aff, kOutUlps);
            bdx.Poison();
            bdg.Poison();
            bdb.Poison();
            REQUIRE(bnorm_backward_f32(&s, clean.data(), dy.data(), m.data(), invstd.data(),
                                       gamma.data(), nullptr, bdx.data(), bdg.data(), bdb.data(),
                                       0) == bnorm_success);
            CheckTensor("dx", s, bdx.data(), want_b.dx, kOutUlps);
            CheckChannels("dgamma", bdg.data(), want_b.dgamma.value, want_b.dgamma.mag, kOutUlps);
            CheckChannels("dbeta", bdb.data(), want_b.dbeta.value, want_b.dbeta.mag, kOutUlps);
            for (const Buffer* b : {&by, &bdx, &bdg, &bdb})
              CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
          });
        }
      }
    }
  }
}

TEST_CASE("numerics: NaN propagates through the fused ReLU (training, inference, affine)") {
  // DESIGN.md: NaN in the data propagates to its channel's outputs; max(NaN, 0) must
  // not turn it into 0 (PyTorch's relu(NaN) is NaN).
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(2, 17, 9, layout);
    std::mt19937 rng = Rng(s, 34);
    std::vector<float> x = RandomTensor(s, rng);
    const int64_t pos = ref::Offset(s, 1, 5, 4);
    x[pos] = kNaN;
    INFO("shape ", ShapeString(s), " NaN at ", Where(s, pos));
    CheckStatsOps(s, x, kVarRel, BNORM_FUSE_RELU);
    const std::vector<float> ones(s.c, 1.0f), zeros(s.c, 0.0f);
    const std::vector<float> scale = RandomVec(s.c, rng, 0.5, 2);
    const ref::Output want_aff = ref::Affine(s, x.data(), scale.data(), zeros.data(), true);
    const ref::Output want_inf = ref::ForwardInference(s, x.data(), nullptr, nullptr, zeros.data(),
                                                       ones.data(), 1e-5f, true);
    Buffer by(x.size(), 0);
    ForEachTarget([&](const std::string&) {
      by.Poison();
      REQUIRE(bnorm_affine_f32(&s, x.data(), by.data(), scale.data(), zeros.data(),
                               BNORM_FUSE_RELU) == bnorm_success);
      CheckTensor("affine y", s, by.data(), want_aff, kOutUlps);
      by.Poison();
      REQUIRE(bnorm_forward_inference_f32(&s, x.data(), by.data(), nullptr, nullptr, zeros.data(),
                                          ones.data(), 1e-5f, BNORM_FUSE_RELU) == bnorm_success);
      CheckTensor("inference y", s, by.data(), want_inf, kOutUlps);
    });
  }
}

TEST_CASE("numerics: Inf makes its channel's statistics non-finite, and only those") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s :
         {Shape(1, 5, 3, layout), Shape(2, 17, 33, layout), Shape(1, 9, 2049, layout)}) {
      std::mt19937 rng = Rng(s, 35);
      const std::vector<float> clean = RandomTensor(s, rng);
      for (float special : {kInf, -kInf}) {
        const int64_t ch_bad = s.c / 2;
        const int64_t pos = SpecialPositions(s, ch_bad)[1];
        INFO("shape ", ShapeString(s), " ", special, " at ", Where(s, pos));
        std::vector<float> x = clean;
        x[pos] = special;
        const ref::Stats want = ref::Moments(s, x.data());
        Buffer bm(s.c, 0), bv(s.c, 0), by(x.size(), 0);
        ForEachTarget([&](const std::string&) {
          bm.Poison();
          bv.Poison();
          REQUIRE(bnorm_moments_f32(&s, x.data(), bm.data(), bv.data()) == bnorm_success);
          by.Poison();
          REQUIRE(bnorm_forward_training_f32(&s, x.data(), by.data(), nullptr, nullptr, 1e-5f, 0.1f,
                                             nullptr, nullptr, nullptr, nullptr,
                                             0) == bnorm_success);
          const ref::Training want_t =
              ref::ForwardTraining(s, x.data(), nullptr, nullptr, 1e-5f, false);
          for (int64_t ch = 0; ch < s.c; ++ch) {
            INFO("channel ", ch);
            if (ch == ch_bad) {
              // The reference gives mean = +-Inf and var = NaN; a one-pass method may get
              // NaN for the mean too. Either way: not finite, and y not finite.
              CHECK_FALSE(std::isfinite(bv[ch]));
              CHECK_FALSE(std::isfinite(bm[ch]));
              for (int64_t i = 0; i < s.n; ++i)
                for (int64_t sp = 0; sp < s.spatial; ++sp) {
                  const int64_t o = ref::Offset(s, i, ch, sp);
                  if (std::isfinite(by[o])) {
                    FAIL_CHECK("y at " << Where(s, o) << " is finite: " << Fmt(by[o]));
                    break;
                  }
                }
            } else {
              CHECK(ref::Near(bm[ch], want.mean[ch], ref::MeanMag(want.mean[ch], want.var[ch]),
                              kMeanUlps));
              CHECK(ref::Near(bv[ch], want.var[ch], want.var[ch], kVarRel / ref::kUlp));
              for (int64_t i = 0; i < s.n; ++i)
                for (int64_t sp = 0; sp < s.spatial; ++sp) {
                  const int64_t o = ref::Offset(s, i, ch, sp);
                  if (!ref::Near(by[o], want_t.y.value[o], want_t.y.mag[o], kOutUlps)) {
                    FAIL_CHECK("y at " << Where(s, o) << ": got " << Fmt(by[o]) << " want "
                                       << Fmt(want_t.y.value[o]));
                    break;
                  }
                }
            }
          }
        });
      }
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
