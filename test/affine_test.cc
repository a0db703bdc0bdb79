// Tests of bnorm_affine_f32 and bnorm_fold_f32 on every target: every edge shape and
// layout, fused ReLU, in-place, BNORM_SERIAL, gamma/beta NULL, and fold with its
// outputs aliasing its inputs exactly.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

struct AffineCase {
  const char* name;
  bool in_place;
  unsigned flags;
};

const AffineCase kAffineCases[] = {
    {"plain", false, 0},
    {"ReLU", false, BNORM_FUSE_RELU},
    {"in place, ReLU", true, BNORM_FUSE_RELU},
    {"in place", true, 0},
    {"serial", false, BNORM_SERIAL},
};

TEST_CASE("affine: every edge shape, layout, target and argument variant") {
  for (bnorm_layout layout : kLayouts) {
    size_t index = 0;
    for (const bnorm_shape& s : EdgeShapes(layout)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 50);
      const std::vector<float> x = RandomTensor(s, rng);
      std::vector<float> scale = RandomSigned(s.c, rng, 0.1, 4);
      const std::vector<float> shift = RandomVec(s.c, rng, -3, 3);
      if (s.c > 2) scale[1] = 0.0f;  // y = shift exactly
      const size_t mis = index++ % 4;
      Buffer bx(x, mis), by(x.size(), (mis + 1) % 4), bs(scale, 2), bt(shift, 3);
      for (const AffineCase& ac : kAffineCases) {
        INFO("case: ", std::string(ac.name));
        const ref::Output want =
            ref::Affine(s, x.data(), scale.data(), shift.data(), ac.flags & BNORM_FUSE_RELU);
        ForEachTarget([&](const std::string&) {
          bx.Fill(x);
          by.Poison();
          float* y = ac.in_place ? bx.data() : by.data();
          const bnorm_status status =
              bnorm_affine_f32(&s, bx.data(), y, bs.data(), bt.data(), ac.flags);
          REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
          CheckTensor("y", s, y, want, kOutUlps);
          if (!ac.in_place)
            CheckSameBits("x (an input) was modified", bx.data(), x.data(), x.size());
          CheckSameBits("scale (an input) was modified", bs.data(), scale.data(), s.c);
          CheckSameBits("shift (an input) was modified", bt.data(), shift.data(), s.c);
          for (const Buffer* b : {&bx, &by, &bs, &bt})
            CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
          if (ac.flags & BNORM_SERIAL) {
            std::vector<float> y2(x.size());
            REQUIRE(bnorm_affine_f32(&s, x.data(), y2.data(), scale.data(), shift.data(), 0) ==
                    bnorm_success);
            CheckSameBits("y (serial vs threaded)", y, y2.data(), x.size());
          }
        });
      }
    }
  }
}

TEST_CASE("affine: long tensors cut into many chunks") {
  for (const bnorm_shape& s : LargeShapes()) {
    INFO("shape ", ShapeString(s));
    std::mt19937 rng = Rng(s, 51);
    const std::vector<float> x = RandomTensor(s, rng);
    const std::vector<float> scale = RandomSigned(s.c, rng, 0.1, 4);
    const std::vector<float> shift = RandomVec(s.c, rng, -3, 3);
    const ref::Output want = ref::Affine(s, x.data(), scale.data(), shift.data(), true);
    Buffer by(x.size(), 1);
    ForEachTarget([&](const std::string&) {
      by.Poison();
      REQUIRE(bnorm_affine_f32(&s, x.data(), by.data(), scale.data(), shift.data(),
                               BNORM_FUSE_RELU) == bnorm_success);
      CheckTensor("y", s, by.data(), want, kOutUlps);
      BNORM_CHECK_CANARIES(by);
    });
  }
}

// Fold inputs for c channels: one channel in four has variance 0.
struct FoldInputs {
  std::vector<float> gamma, beta, mean, var;
};

FoldInputs MakeFoldInputs(int64_t c) {
  std::mt19937 rng(static_cast<uint32_t>(c) * 7919u + 5u);
  FoldInputs f;
  f.gamma = RandomSigned(c, rng, 0.25, 2);
  f.beta = RandomVec(c, rng, -2, 2);
  f.mean = RandomVec(c, rng, -5, 5);
  f.var = RandomVec(c, rng, 1e-3, 10);
  for (int64_t ch = 3; ch < c; ch += 4) f.var[ch] = 0.0f;
  return f;
}

const int64_t kFoldChannels[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 1000, 1023};

TEST_CASE("fold: every channel count and target, gamma/beta NULL") {
  for (int64_t c : kFoldChannels) {
    const FoldInputs in = MakeFoldInputs(c);
    for (bool affine : {true, false}) {
      for (float eps : {1e-5f, 1e-3f}) {
        INFO("c ", c, std::string(affine ? " with gamma/beta" : " gamma/beta NULL"), " eps ", eps);
        const float* g = affine ? in.gamma.data() : nullptr;
        const float* b = affine ? in.beta.data() : nullptr;
        const ref::Folded want = ref::Fold(c, g, b, in.mean.data(), in.var.data(), eps);
        Buffer scale(c, c % 4), shift(c, (c + 1) % 4), bm(in.mean, 1), bv(in.var, 2);
        ForEachTarget([&](const std::string&) {
          scale.Poison();
          shift.Poison();
          const bnorm_status status =
              bnorm_fold_f32(c, g, b, bm.data(), bv.data(), eps, scale.data(), shift.data());
          REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
          CheckChannels("scale", scale.data(), want.scale.value, want.scale.mag, kOutUlps);
          CheckChannels("shift", shift.data(), want.shift.value, want.shift.mag, kOutUlps);
          CheckSameBits("mean (an input) was modified", bm.data(), in.mean.data(), c);
          CheckSameBits("var (an input) was modified", bv.data(), in.var.data(), c);
          for (const Buffer* buf : {&scale, &shift, &bm, &bv})
            CHECK_MESSAGE(buf->CanariesIntact(), "a buffer was written outside its elements");
        });
      }
    }
  }
}

TEST_CASE("fold: scale and shift aliasing the inputs exactly (in place)") {
  for (int64_t c : kFoldChannels) {
    const FoldInputs in = MakeFoldInputs(c);
    const float eps = 1e-5f;
    const ref::Folded want =
        ref::Fold(c, in.gamma.data(), in.beta.data(), in.mean.data(), in.var.data(), eps);
    Buffer g(c, 0), b(c, 1), m(c, 2), v(c, 3);
    ForEachTarget([&](const std::string&) {
      {
        INFO("c ", c, ": scale == gamma, shift == beta");
        g.Fill(in.gamma);
        b.Fill(in.beta);
        m.Fill(in.mean);
        v.Fill(in.var);
        REQUIRE(bnorm_fold_f32(c, g.data(), b.data(), m.data(), v.data(), eps, g.data(),
                               b.data()) == bnorm_success);
        CheckChannels("scale", g.data(), want.scale.value, want.scale.mag, kOutUlps);
        CheckChannels("shift", b.data(), want.shift.value, want.shift.mag, kOutUlps);
      }
      {
        INFO("c ", c, ": scale == var, shift == mean");
        g.Fill(in.gamma);
        b.Fill(in.beta);
        m.Fill(in.mean);
        v.Fill(in.var);
        REQUIRE(bnorm_fold_f32(c, g.data(), b.data(), m.data(), v.data(), eps, v.data(),
                               m.data()) == bnorm_success);
        CheckChannels("scale", v.data(), want.scale.value, want.scale.mag, kOutUlps);
        CheckChannels("shift", m.data(), want.shift.value, want.shift.mag, kOutUlps);
      }
      for (const Buffer* buf : {&g, &b, &m, &v})
        CHECK_MESSAGE(buf->CanariesIntact(), "a buffer was written outside its elements");
    });
  }
}

TEST_CASE("fold then affine matches inference forward") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : FewShapes(layout)) {
      INFO("shape ", ShapeString(s));
      std::mt19937 rng = Rng(s, 52);
      const std::vector<float> x = RandomTensor(s, rng);
      const FoldInputs in = MakeFoldInputs(s.c);
      for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
        INFO("flags ", flags);
        // The reference for inference bounds the rounding of the folded form as well:
        // its magnitude counts |x| and |mean| times |invstd * gamma|, plus |beta|.
        const ref::Output want =
            ref::ForwardInference(s, x.data(), in.gamma.data(), in.beta.data(), in.mean.data(),
                                  in.var.data(), 1e-5f, flags & BNORM_FUSE_RELU);
        ForEachTarget([&](const std::string&) {
          std::vector<float> scale(s.c), shift(s.c), y(x.size());
          REQUIRE(bnorm_fold_f32(s.c, in.gamma.data(), in.beta.data(), in.mean.data(),
                                 in.var.data(), 1e-5f, scale.data(),
                                 shift.data()) == bnorm_success);
          REQUIRE(bnorm_affine_f32(&s, x.data(), y.data(), scale.data(), shift.data(), flags) ==
                  bnorm_success);
          CheckTensor("y", s, y.data(), want, kOutUlps);
        });
      }
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
