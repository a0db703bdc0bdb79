// Numerically hard data on every target and layout: |mean| = 1e4 std, constant
// channels, values near 1e19..3e19 whose squares overflow float32, NaN / Inf that must
// stay inside their channel (other channels bit-exact), Inf as IEEE arithmetic has it,
// and denormals that must be neither flushed nor mistaken.
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

// ---------------------------------------------------------------------------------
// Special values, as the issue "Hostile input" states them: NaN in one channel leaves
// the other channels bit-exact, Inf follows IEEE arithmetic, denormals are neither
// flushed nor mistaken.

// Every output of every operation for one input set, for bitwise comparisons.
struct AllOutputs {
  std::vector<float> mean, var, y_train, saved_mean, saved_invstd, running_mean, running_var,
      y_infer, y_affine, dx, dgamma, dbeta;
};

// Runs every operation on x (and dy for backward) with fixed per-channel parameters.
AllOutputs RunAll(const bnorm_shape& s, const std::vector<float>& x, const std::vector<float>& dy,
                  const std::vector<float>& gamma, const std::vector<float>& beta, unsigned flags) {
  const size_t e = x.size(), c = static_cast<size_t>(s.c);
  AllOutputs o{std::vector<float>(c),       std::vector<float>(c), std::vector<float>(e),
               std::vector<float>(c),       std::vector<float>(c), std::vector<float>(c, 0.5f),
               std::vector<float>(c, 2.0f), std::vector<float>(e), std::vector<float>(e),
               std::vector<float>(e),       std::vector<float>(c), std::vector<float>(c)};
  std::vector<float> stat_mean(c, 0.25f), stat_var(c, 1.5f), invstd(c, 0.75f);
  REQUIRE(bnorm_moments_f32(&s, x.data(), o.mean.data(), o.var.data()) == bnorm_success);
  REQUIRE(bnorm_forward_training_f32(&s, x.data(), o.y_train.data(), gamma.data(), beta.data(),
                                     1e-5f, 0.1f, o.running_mean.data(), o.running_var.data(),
                                     o.saved_mean.data(), o.saved_invstd.data(),
                                     flags) == bnorm_success);
  REQUIRE(bnorm_forward_inference_f32(&s, x.data(), o.y_infer.data(), gamma.data(), beta.data(),
                                      stat_mean.data(), stat_var.data(), 1e-5f,
                                      flags) == bnorm_success);
  REQUIRE(bnorm_affine_f32(&s, x.data(), o.y_affine.data(), gamma.data(), beta.data(), flags) ==
          bnorm_success);
  REQUIRE(bnorm_backward_f32(&s, x.data(), dy.data(), stat_mean.data(), invstd.data(), gamma.data(),
                             x.data(), o.dx.data(), o.dgamma.data(), o.dbeta.data(),
                             flags) == bnorm_success);
  return o;
}

TEST_CASE("numerics: NaN in one channel leaves the other channels exact") {
  // Bit-identical, not just within tolerance: a NaN must not switch the other channels
  // of its block or work item to another code path (or another rounding).
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s :
         {Shape(1, 3, 5000, layout), Shape(2, 5, 2049, layout), Shape(64, 33, 1, layout),
          Shape(300, 17, 3, layout), Shape(3, 16, 17, layout), Shape(1, 5, 100000, layout)}) {
      std::mt19937 rng = Rng(s, 60);
      const std::vector<float> x = RandomTensor(s, rng), dy = RandomTensor(s, rng, 1.0);
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
      const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
      const int64_t nan_ch = s.c / 2;
      for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
        for (int64_t k : {int64_t{0}, ref::Count(s) - 1}) {
          const int64_t pos = ref::Offset(s, k / s.spatial, nan_ch, k % s.spatial);
          INFO("shape ", ShapeString(s), " flags ", flags, " NaN at ", Where(s, pos));
          std::vector<float> x_nan = x, dy_nan = dy;
          x_nan[pos] = kNaN;
          dy_nan[pos] = kNaN;
          ForEachTarget([&](const std::string&) {
            const AllOutputs clean = RunAll(s, x, dy, gamma, beta, flags);
            const AllOutputs dirty = RunAll(s, x_nan, dy_nan, gamma, beta, flags);
            struct Pair {
              const char* name;
              const std::vector<float>* a;
              const std::vector<float>* b;
              bool tensor;
            };
            const Pair kPairs[] = {
                {"mean", &clean.mean, &dirty.mean, false},
                {"var", &clean.var, &dirty.var, false},
                {"training y", &clean.y_train, &dirty.y_train, true},
                {"saved_mean", &clean.saved_mean, &dirty.saved_mean, false},
                {"saved_invstd", &clean.saved_invstd, &dirty.saved_invstd, false},
                {"running_mean", &clean.running_mean, &dirty.running_mean, false},
                {"running_var", &clean.running_var, &dirty.running_var, false},
                {"inference y", &clean.y_infer, &dirty.y_infer, true},
                {"affine y", &clean.y_affine, &dirty.y_affine, true},
                {"dx", &clean.dx, &dirty.dx, true},
                {"dgamma", &clean.dgamma, &dirty.dgamma, false},
                {"dbeta", &clean.dbeta, &dirty.dbeta, false},
            };
            for (const Pair& p : kPairs) {
              int64_t bad = 0;
              for (size_t i = 0; i < p.a->size(); ++i) {
                const int64_t o = static_cast<int64_t>(i);
                const int64_t ch = !p.tensor              ? o
                                   : layout == bnorm_nchw ? (o / s.spatial) % s.c
                                                          : o % s.c;
                if (ch == nan_ch || Bits((*p.a)[i]) == Bits((*p.b)[i])) continue;
                if (bad++ < kMaxReports)
                  FAIL_CHECK(p.name << " at "
                                    << (p.tensor ? Where(s, o) : "channel " + std::to_string(o))
                                    << " changed with the NaN: " << Fmt((*p.a)[i]) << " ("
                                    << Hex((*p.a)[i]) << ") -> " << Fmt((*p.b)[i]) << " ("
                                    << Hex((*p.b)[i]) << ")");
              }
              CHECK_MESSAGE(bad == 0, p.name << ": " << bad << " values outside channel " << nan_ch
                                             << " changed");
            }
            // In the NaN's channel: every statistic and every y of training is NaN.
            CHECK(std::isnan(dirty.mean[nan_ch]));
            CHECK(std::isnan(dirty.var[nan_ch]));
            CHECK(std::isnan(dirty.saved_invstd[nan_ch]));
            CHECK(std::isnan(dirty.running_mean[nan_ch]));
            CHECK(std::isnan(dirty.dbeta[nan_ch]));
            CHECK(std::isnan(dirty.y_train[ref::Offset(s, 0, nan_ch, 0)]));
            CHECK(std::isnan(dirty.y_affine[pos]));
          });
        }
      }
    }
  }
}

TEST_CASE("numerics: Inf behaves as IEEE says") {
  // Per channel, an infinity in the data or the parameters; the float64 reference is
  // IEEE arithmetic (Inf * 0 = NaN, Inf - Inf = NaN, x / Inf = 0, ...), and every
  // output must be that value: the same infinity, NaN where it is NaN, and finite values
  // within the usual tolerance.
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(2, 12, 37, layout);
    std::mt19937 rng = Rng(s, 61);
    std::vector<float> x = RandomTensor(s, rng);
    std::vector<float> gamma = RandomSigned(s.c, rng, 0.5, 2), beta = RandomVec(s.c, rng, -2, 2);
    std::vector<float> mean = RandomVec(s.c, rng, -1, 1), var = RandomVec(s.c, rng, 0.5, 2);
    auto at = [&](int64_t i, int64_t ch, int64_t sp) -> float& {
      return x[ref::Offset(s, i, ch, sp)];
    };
    // Data: channel 0 one +Inf; 1 one -Inf; 2 +Inf and -Inf; 3 all +Inf; 4 one +Inf, with
    // scale 0 (Inf * 0); 5 one -Inf, with shift +Inf (-Inf + Inf).
    at(1, 0, 5) = kInf;
    at(0, 1, 36) = -kInf;
    at(0, 2, 0) = kInf;
    at(1, 2, 1) = -kInf;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) at(i, 3, sp) = kInf;
    at(0, 4, 3) = kInf;
    gamma[4] = 0.0f;
    at(1, 5, 7) = -kInf;
    beta[5] = kInf;
    // Parameters: channel 6 var = +Inf (invstd 0, y = beta); 7 gamma = +Inf; 8 beta = -Inf;
    // 9 mean = +Inf; 10 gamma = -Inf with a zero x (Inf * 0); 11 ordinary.
    var[6] = kInf;
    gamma[7] = kInf;
    beta[8] = -kInf;
    mean[9] = kInf;
    gamma[10] = -kInf;
    at(0, 10, 4) = 0.0f;
    const float eps = 1e-5f;
    const ref::Stats stats = ref::Moments(s, x.data());
    const ref::Output want_aff = ref::Affine(s, x.data(), gamma.data(), beta.data(), false);
    const ref::Output want_inf = ref::ForwardInference(s, x.data(), gamma.data(), beta.data(),
                                                       mean.data(), var.data(), eps, false);
    const ref::Folded want_fold =
        ref::Fold(s.c, gamma.data(), beta.data(), mean.data(), var.data(), eps);
    Buffer by(x.size(), 1), bm(s.c, 0), bv(s.c, 0), sc(s.c, 0), sh(s.c, 0);
    INFO("shape ", ShapeString(s));
    ForEachTarget([&](const std::string&) {
      by.Poison();
      REQUIRE(bnorm_affine_f32(&s, x.data(), by.data(), gamma.data(), beta.data(), 0) ==
              bnorm_success);
      CheckTensor("affine y", s, by.data(), want_aff, kOutUlps);
      by.Poison();
      REQUIRE(bnorm_forward_inference_f32(&s, x.data(), by.data(), gamma.data(), beta.data(),
                                          mean.data(), var.data(), eps, 0) == bnorm_success);
      CheckTensor("inference y", s, by.data(), want_inf, kOutUlps);
      sc.Poison();
      sh.Poison();
      REQUIRE(bnorm_fold_f32(s.c, gamma.data(), beta.data(), mean.data(), var.data(), eps,
                             sc.data(), sh.data()) == bnorm_success);
      CheckChannels("scale", sc.data(), want_fold.scale.value, want_fold.scale.mag, 4);
      CheckChannels("shift", sh.data(), want_fold.shift.value, want_fold.shift.mag, 4);
      // Moments: +Inf alone gives mean +Inf, var NaN (Inf - Inf in the deviations);
      // +Inf with -Inf gives NaN for both.
      bm.Poison();
      bv.Poison();
      REQUIRE(bnorm_moments_f32(&s, x.data(), bm.data(), bv.data()) == bnorm_success);
      for (int64_t ch = 0; ch < s.c; ++ch) {
        INFO("channel ", ch);
        CHECK(ref::Near(bm[ch], stats.mean[ch], ref::MeanMag(stats.mean[ch], stats.var[ch]),
                        kMeanUlps));
        CHECK(ref::Near(bv[ch], stats.var[ch], stats.var[ch], kVarRel / ref::kUlp));
      }
      CHECK(bm[0] == kInf);
      CHECK(bm[1] == -kInf);
      CHECK(std::isnan(bm[2]));
      CHECK(bm[3] == kInf);
      for (int64_t ch : {0, 1, 2, 3}) CHECK(std::isnan(bv[ch]));
      // Inference with var = +Inf: invstd = 0, so y = beta exactly for finite x.
      by.Poison();
      REQUIRE(bnorm_forward_inference_f32(&s, x.data(), by.data(), gamma.data(), beta.data(),
                                          mean.data(), var.data(), eps, 0) == bnorm_success);
      for (int64_t i = 0; i < s.n; ++i)
        for (int64_t sp = 0; sp < s.spatial; ++sp) CHECK(by[ref::Offset(s, i, 6, sp)] == beta[6]);
    });
  }
}

// Returns whether got is within k ulps of mag of value, or within `units` steps of the
// smallest denormal (2^-149): the float32 resolution down there. (ref::Near allows
// 1e-37 absolute, which would accept a denormal flushed to zero.)
bool NearDenormal(double got, double value, double mag, double k, double units = 4) {
  if (std::isnan(value)) return std::isnan(got);
  return std::fabs(got - value) <= k * ref::kUlp * mag + units * std::ldexp(1.0, -149);
}

TEST_CASE("numerics: denormal data with an infinite shift gives Inf (the float64 path)") {
  // Lanes with a denormal operand are evaluated in float64 and rounded back; the rounding
  // must give +-Inf for +-Inf (Highway 1.0.3's scalar and emu128 DemoteTo give +-FLT_MAX;
  // a fuzz finding on EMU128).
  const float kDenorm = std::numeric_limits<float>::denorm_min();
  const float kMax = std::numeric_limits<float>::max();
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(2, 4, 19, layout);
    std::vector<float> x(ref::Elements(s));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7 + 1) * kDenorm;
    const std::vector<float> scale = {1.0f, 1.0f, 1e30f, -1.0f};
    const std::vector<float> shift = {kInf, -kInf, kMax, kMax};
    const ref::Output want = ref::Affine(s, x.data(), scale.data(), shift.data(), false);
    ForEachTarget([&](const std::string&) {
      std::vector<float> y(x.size(), 0.0f);
      REQUIRE(bnorm_affine_f32(&s, x.data(), y.data(), scale.data(), shift.data(), 0) ==
              bnorm_success);
      int64_t bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        // float64 x * scale + shift rounded once to float32 (FLT_MAX + tiny stays FLT_MAX).
        const float expect = static_cast<float>(want.value[i]);
        if (Bits(y[i]) != Bits(expect) && bad++ < kMaxReports)
          FAIL_CHECK("y at " << Where(s, static_cast<int64_t>(i)) << ": " << Fmt(y[i]) << " ("
                             << Hex(y[i]) << "), want " << Fmt(expect));
      }
      CHECK_MESSAGE(bad == 0, bad << " outputs are not x * scale + shift rounded once");
    });
  }
}

TEST_CASE("numerics: denormal inputs give correct results (not flushed to zero)") {
  const float kMinNormal = std::numeric_limits<float>::min();      // 2^-126
  const float kDenorm = std::numeric_limits<float>::denorm_min();  // 2^-149
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s :
         {Shape(2, 5, 41, layout), Shape(1, 3, 5000, layout), Shape(65, 17, 1, layout)}) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 62);
      // Channel ch holds odd multiples of 2^-149 up to about 2^-127 (all denormal),
      // every third channel with a few normal values mixed in.
      std::vector<float> x(ref::Elements(s)), dy(x.size());
      for (int64_t ch = 0; ch < s.c; ++ch)
        for (int64_t i = 0; i < s.n; ++i)
          for (int64_t sp = 0; sp < s.spatial; ++sp) {
            const int64_t o = ref::Offset(s, i, ch, sp);
            const int units = 2 * static_cast<int>(rng() % (1 << 22)) + 1;
            x[o] = (rng() % 2 ? -1.0f : 1.0f) * units * kDenorm;
            if (ch % 3 == 2 && sp % 7 == 0)
              x[o] = static_cast<float>(Uniform(rng, -4, 4)) * kMinNormal;
            dy[o] = static_cast<float>((rng() % 2001) - 1000.0) * kDenorm;
          }
      std::vector<float> ones(s.c, 1.0f), zeros(s.c, 0.0f), halves(s.c, 0.5f), big(s.c, 1024.0f);
      const ref::Stats st = ref::Moments(s, x.data());
      Buffer by(x.size(), 1), bm(s.c, 0), bv(s.c, 0), bdx(x.size(), 2), bdg(s.c, 0), bdb(s.c, 0);
      ForEachTarget([&](const std::string&) {
        // affine: y = x * 1 + 0 is x, bit for bit; * 1024 and * 0.5 are one rounding.
        for (const std::vector<float>* scale : {&ones, &big, &halves}) {
          by.Poison();
          REQUIRE(bnorm_affine_f32(&s, x.data(), by.data(), scale->data(), zeros.data(), 0) ==
                  bnorm_success);
          int64_t bad = 0;
          for (size_t i = 0; i < x.size(); ++i) {
            const float want = static_cast<float>(static_cast<double>(x[i]) * (*scale)[0]);
            if (Bits(by[i]) != Bits(want) && bad++ < kMaxReports)
              FAIL_CHECK("affine y = x * " << (*scale)[0] << " at " << Where(s, i) << ": "
                                           << Hex(by[i]) << ", want " << Hex(want));
          }
          CHECK_MESSAGE(bad == 0, bad << " affine outputs are not x * scale, rounded once");
        }
        // moments: mean within 2^-149 resolution; var (below 2^-250) is 0 in float32.
        bm.Poison();
        bv.Poison();
        REQUIRE(bnorm_moments_f32(&s, x.data(), bm.data(), bv.data()) == bnorm_success);
        for (int64_t ch = 0; ch < s.c; ++ch) {
          INFO("channel ", ch);
          CHECK(
              NearDenormal(bm[ch], st.mean[ch], ref::MeanMag(st.mean[ch], st.var[ch]), kMeanUlps));
          CHECK(NearDenormal(bv[ch], st.var[ch], st.var[ch], kVarRel / ref::kUlp));
        }
        // training: (x - mean) * invstd with invstd = 1/sqrt(var + eps) ~ 316.
        by.Poison();
        REQUIRE(bnorm_forward_training_f32(&s, x.data(), by.data(), nullptr, nullptr, 1e-5f, 0.1f,
                                           nullptr, nullptr, nullptr, nullptr, 0) == bnorm_success);
        const ref::Training want_t =
            ref::ForwardTraining(s, x.data(), nullptr, nullptr, 1e-5f, false);
        int64_t bad = 0;
        for (size_t i = 0; i < x.size(); ++i)
          if (!NearDenormal(by[i], want_t.y.value[i], want_t.y.mag[i], kOutUlps, 1024) &&
              bad++ < kMaxReports)
            FAIL_CHECK("training y at " << Where(s, i) << ": " << Fmt(by[i]) << ", want "
                                        << Fmt(want_t.y.value[i]));
        CHECK_MESSAGE(bad == 0, bad << " training outputs wrong");
        // backward: sums of denormal dy are exact multiples of 2^-149.
        std::vector<float> m(s.c, 0.0f), invstd(s.c, 1.0f);
        const ref::Gradients want_b =
            ref::Backward(s, x.data(), dy.data(), m.data(), invstd.data(), nullptr, nullptr, false);
        bdx.Poison();
        bdg.Poison();
        bdb.Poison();
        REQUIRE(bnorm_backward_f32(&s, x.data(), dy.data(), m.data(), invstd.data(), nullptr,
                                   nullptr, bdx.data(), bdg.data(), bdb.data(),
                                   0) == bnorm_success);
        for (int64_t ch = 0; ch < s.c; ++ch) {
          INFO("channel ", ch);
          CHECK(NearDenormal(bdb[ch], want_b.dbeta.value[ch], want_b.dbeta.mag[ch], kOutUlps));
        }
        bad = 0;
        for (size_t i = 0; i < x.size(); ++i)
          if (!NearDenormal(bdx[i], want_b.dx.value[i], want_b.dx.mag[i], kOutUlps, 16) &&
              bad++ < kMaxReports)
            FAIL_CHECK("dx at " << Where(s, i) << ": " << Fmt(bdx[i]) << ", want "
                                << Fmt(want_b.dx.value[i]));
        CHECK_MESSAGE(bad == 0, bad << " dx wrong");
      });
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
