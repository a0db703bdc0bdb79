// Tests of bnorm_forward_training_f32 and bnorm_forward_inference_f32 on every target,
// layout and edge shape: y, running statistics, saved statistics, optional arguments,
// fused ReLU, in-place, and the BNORM_SERIAL flag.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// One way of calling training forward.
struct TrainingCase {
  const char* name;
  bool affine;    // gamma and beta given (else NULL: 1 and 0)
  bool running;   // running_mean and running_var given
  bool saved;     // saved_mean and saved_invstd given
  bool in_place;  // y == x
  unsigned flags;
  float eps, momentum;
};

const TrainingCase kTrainingCases[] = {
    {"all outputs", true, true, true, false, 0, 1e-5f, 0.1f},
    {"gamma/beta NULL, ReLU, no running or saved", false, false, false, false, BNORM_FUSE_RELU,
     1e-5f, 0.1f},
    {"biased running var, momentum 1, ReLU", true, true, true, false,
     BNORM_RUNNING_VAR_BIASED | BNORM_FUSE_RELU, 1e-3f, 1.0f},
    {"momentum 0, in place", true, true, false, true, 0, 1e-5f, 0.0f},
    {"serial, only gamma/beta NULL, eps 0.5", false, true, true, false, BNORM_SERIAL, 0.5f, 0.25f},
};

TEST_CASE("forward training: every edge shape, layout, target and argument variant") {
  for (bnorm_layout layout : kLayouts) {
    size_t index = 0;
    for (const bnorm_shape& s : EdgeShapes(layout, /*min_count=*/2)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 10);
      const std::vector<float> x = RandomTensor(s, rng);
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
      const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
      const std::vector<float> rm0 = RandomVec(s.c, rng, -2, 2);
      const std::vector<float> rv0 = RandomVec(s.c, rng, 0.1, 4);
      const size_t mis = index++ % 4;
      const size_t elements = x.size();
      for (const TrainingCase& tc : kTrainingCases) {
        INFO("case: ", std::string(tc.name));
        const bool relu = (tc.flags & BNORM_FUSE_RELU) != 0;
        const ref::Training want =
            ref::ForwardTraining(s, x.data(), tc.affine ? gamma.data() : nullptr,
                                 tc.affine ? beta.data() : nullptr, tc.eps, relu);
        Buffer bx(x, mis), by(elements, (mis + 2) % 4), bg(gamma, 1), bb(beta, 3);
        Buffer rm(s.c, 0), rv(s.c, 1), sm(s.c, 2), si(s.c, 3);
        ForEachTarget([&](const std::string&) {
          bx.Fill(x);
          by.Poison();
          rm.Fill(rm0);
          rv.Fill(rv0);
          sm.Poison();
          si.Poison();
          float* y = tc.in_place ? bx.data() : by.data();
          const bnorm_status st = bnorm_forward_training_f32(
              &s, bx.data(), y, tc.affine ? bg.data() : nullptr, tc.affine ? bb.data() : nullptr,
              tc.eps, tc.momentum, tc.running ? rm.data() : nullptr,
              tc.running ? rv.data() : nullptr, tc.saved ? sm.data() : nullptr,
              tc.saved ? si.data() : nullptr, tc.flags);
          REQUIRE_MESSAGE(st == bnorm_success, std::string(bnorm_last_error()));
          CheckTensor("y", s, y, want.y, kOutUlps);
          if (tc.saved) CheckSaved(sm.data(), si.data(), want.stats, want.invstd, kVarRel);
          if (tc.running) {
            CheckRunning(s, want.stats, tc.momentum, (tc.flags & BNORM_RUNNING_VAR_BIASED) != 0,
                         rm0, rv0, rm.data(), rv.data(), kVarRel);
          }
          if (!tc.in_place) {
            CheckSameBits("x (an input) was modified", bx.data(), x.data(), elements);
            BNORM_CHECK_CANARIES(by);
          }
          CheckSameBits("gamma (an input) was modified", bg.data(), gamma.data(), s.c);
          CheckSameBits("beta (an input) was modified", bb.data(), beta.data(), s.c);
          BNORM_CHECK_CANARIES(bx);
          BNORM_CHECK_CANARIES(rm);
          BNORM_CHECK_CANARIES(rv);
          BNORM_CHECK_CANARIES(sm);
          BNORM_CHECK_CANARIES(si);
        });
      }
    }
  }
}

TEST_CASE("forward training: every optional argument NULL") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : FewShapes(layout, 2)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 11);
      const std::vector<float> x = RandomTensor(s, rng);
      Buffer bx(x, 0), by(x.size(), 1);
      ForEachTarget([&](const std::string&) {
        by.Poison();
        REQUIRE(bnorm_forward_training_f32(&s, bx.data(), by.data(), nullptr, nullptr, 1e-5f, 0.1f,
                                           nullptr, nullptr, nullptr, nullptr, 0) == bnorm_success);
        const ref::Training want =
            ref::ForwardTraining(s, x.data(), nullptr, nullptr, 1e-5f, false);
        CheckTensor("y", s, by.data(), want.y, kOutUlps);
        BNORM_CHECK_CANARIES(by);
      });
    }
  }
}

TEST_CASE("forward training: BNORM_SERIAL gives bit-identical results") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : EdgeShapes(layout, 2)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 12);
      const std::vector<float> x = RandomTensor(s, rng);
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
      const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
      const std::vector<float> rm0 = RandomVec(s.c, rng, -2, 2);
      const std::vector<float> rv0 = RandomVec(s.c, rng, 0.1, 4);
      ForEachTarget([&](const std::string&) {
        std::vector<float> out[2][5];
        for (int serial = 0; serial < 2; ++serial) {
          auto& o = out[serial];
          o[0].assign(x.size(), 0);
          o[1] = rm0;
          o[2] = rv0;
          o[3].assign(s.c, 0);
          o[4].assign(s.c, 0);
          REQUIRE(bnorm_forward_training_f32(
                      &s, x.data(), o[0].data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                      o[1].data(), o[2].data(), o[3].data(), o[4].data(),
                      BNORM_FUSE_RELU | (serial ? BNORM_SERIAL : 0u)) == bnorm_success);
        }
        const char* names[5] = {"y", "running_mean", "running_var", "saved_mean", "saved_invstd"};
        for (int k = 0; k < 5; ++k)
          CheckSameBits(names[k], out[1][k].data(), out[0][k].data(), out[0][k].size());
      });
    }
  }
}

// One way of calling inference forward.
struct InferenceCase {
  const char* name;
  bool affine, in_place;
  unsigned flags;
  float eps;
};

const InferenceCase kInferenceCases[] = {
    {"gamma and beta", true, false, 0, 1e-5f},
    {"gamma/beta NULL, ReLU", false, false, BNORM_FUSE_RELU, 1e-3f},
    {"in place, ReLU", true, true, BNORM_FUSE_RELU, 1e-5f},
    {"serial", true, false, BNORM_SERIAL, 0.5f},
};

TEST_CASE("forward inference: every edge shape, layout, target and argument variant") {
  for (bnorm_layout layout : kLayouts) {
    size_t index = 0;
    for (const bnorm_shape& s : EdgeShapes(layout)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 20);
      const std::vector<float> x = RandomTensor(s, rng);
      const std::vector<float> gamma = RandomSigned(s.c, rng, 0.25, 2.0);
      const std::vector<float> beta = RandomVec(s.c, rng, -2, 2);
      // Statistics near those of the data, one channel in five with variance 0.
      const ref::Stats st = ref::Moments(s, x.data());
      std::vector<float> mean(s.c), var(s.c);
      for (int64_t ch = 0; ch < s.c; ++ch) {
        mean[ch] = static_cast<float>(st.mean[ch] + Uniform(rng, -0.1, 0.1));
        var[ch] = ch % 5 == 4 ? 0.0f : static_cast<float>(st.var[ch] * Uniform(rng, 0.5, 2) + 1e-3);
      }
      const size_t mis = index++ % 4;
      Buffer bx(x, mis), by(x.size(), (mis + 1) % 4), bg(gamma, 0), bb(beta, 1), bm(mean, 2),
          bv(var, 3);
      std::vector<float> serial_y, threaded_y;
      for (const InferenceCase& ic : kInferenceCases) {
        INFO("case: ", std::string(ic.name));
        const bool relu = (ic.flags & BNORM_FUSE_RELU) != 0;
        const ref::Output want = ref::ForwardInference(
            s, x.data(), ic.affine ? gamma.data() : nullptr, ic.affine ? beta.data() : nullptr,
            mean.data(), var.data(), ic.eps, relu);
        ForEachTarget([&](const std::string&) {
          bx.Fill(x);
          by.Poison();
          float* y = ic.in_place ? bx.data() : by.data();
          const bnorm_status status = bnorm_forward_inference_f32(
              &s, bx.data(), y, ic.affine ? bg.data() : nullptr, ic.affine ? bb.data() : nullptr,
              bm.data(), bv.data(), ic.eps, ic.flags);
          REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
          CheckTensor("y", s, y, want, kOutUlps);
          if (!ic.in_place)
            CheckSameBits("x (an input) was modified", bx.data(), x.data(), x.size());
          CheckSameBits("mean (an input) was modified", bm.data(), mean.data(), s.c);
          CheckSameBits("var (an input) was modified", bv.data(), var.data(), s.c);
          for (const Buffer* b : {&bx, &by, &bg, &bb, &bm, &bv})
            CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
          if (ic.flags & BNORM_SERIAL) {
            // Same call without the flag: bit-identical.
            std::vector<float> y2(x.size());
            REQUIRE(bnorm_forward_inference_f32(&s, x.data(), y2.data(), gamma.data(), beta.data(),
                                                mean.data(), var.data(), ic.eps,
                                                0) == bnorm_success);
            CheckSameBits("y (serial vs threaded)", y, y2.data(), x.size());
          }
        });
      }
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
