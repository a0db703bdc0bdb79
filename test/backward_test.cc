// Tests of bnorm_backward_f32 on every target, layout and edge shape: dx, dgamma and
// dbeta, each of them skipped (NULL), gamma NULL, the fused-ReLU mask, in-place
// (dx == dy, dx == x), and BNORM_SERIAL.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// The inputs of one backward call.
struct Inputs {
  std::vector<float> x, dy, y, gamma, saved_mean, saved_invstd;
};

// Returns inputs for `s`: saved statistics of x (rounded to float, as training writes
// them), dy with its own per-channel scale, and a y with many values <= 0, among them
// exact +0 and -0 (masked by ReLU: the mask is y <= 0).
Inputs MakeInputs(const bnorm_shape& s, uint32_t salt) {
  std::mt19937 rng = Rng(s, salt);
  Inputs in;
  in.x = RandomTensor(s, rng);
  in.dy = RandomTensor(s, rng, 1.0);
  in.gamma = RandomSigned(s.c, rng, 0.25, 2.0);
  const ref::Stats st = ref::Moments(s, in.x.data());
  in.saved_mean = ToFloat(st.mean);
  in.saved_invstd.resize(s.c);
  for (int64_t ch = 0; ch < s.c; ++ch)
    in.saved_invstd[ch] = static_cast<float>(1 / std::sqrt(st.var[ch] + 1e-5));
  in.y.resize(in.x.size());
  for (size_t i = 0; i < in.y.size(); ++i) {
    in.y[i] = static_cast<float>(Uniform(rng, -1, 1));
    if (i % 7 == 3) in.y[i] = 0.0f;
    if (i % 11 == 5) in.y[i] = -0.0f;
  }
  return in;
}

// One way of calling backward.
struct BackwardCase {
  const char* name;
  bool gamma;
  unsigned flags;
  enum { kSeparate, kDxIsDy, kDxIsX } place;
};

const BackwardCase kCases[] = {
    {"all gradients", true, 0, BackwardCase::kSeparate},
    {"gamma NULL, ReLU", false, BNORM_FUSE_RELU, BackwardCase::kSeparate},
    {"dx == dy, ReLU", true, BNORM_FUSE_RELU, BackwardCase::kDxIsDy},
    {"dx == x", true, 0, BackwardCase::kDxIsX},
    {"serial, ReLU", true, BNORM_FUSE_RELU | BNORM_SERIAL, BackwardCase::kSeparate},
};

TEST_CASE("backward: every edge shape, layout, target and argument variant") {
  for (bnorm_layout layout : kLayouts) {
    size_t index = 0;
    for (const bnorm_shape& s : EdgeShapes(layout)) {
      INFO("shape ", ShapeString(s));
      const Inputs in = MakeInputs(s, 40);
      const size_t e = in.x.size(), mis = index++ % 4;
      Buffer bx(in.x, mis), bdy(in.dy, (mis + 1) % 4), by(in.y, (mis + 2) % 4), bg(in.gamma, 0),
          bm(in.saved_mean, 1), bi(in.saved_invstd, 2), bdx(e, (mis + 3) % 4), bdg(s.c, 3),
          bdb(s.c, 0);
      for (const BackwardCase& bc : kCases) {
        INFO("case: ", std::string(bc.name));
        const bool relu = (bc.flags & BNORM_FUSE_RELU) != 0;
        const ref::Gradients want = ref::Backward(
            s, in.x.data(), in.dy.data(), in.saved_mean.data(), in.saved_invstd.data(),
            bc.gamma ? in.gamma.data() : nullptr, in.y.data(), relu);
        ForEachTarget([&](const std::string&) {
          bx.Fill(in.x);
          bdy.Fill(in.dy);
          bdx.Poison();
          bdg.Poison();
          bdb.Poison();
          float* dx = bc.place == BackwardCase::kDxIsDy  ? bdy.data()
                      : bc.place == BackwardCase::kDxIsX ? bx.data()
                                                         : bdx.data();
          const bnorm_status status = bnorm_backward_f32(
              &s, bx.data(), bdy.data(), bm.data(), bi.data(), bc.gamma ? bg.data() : nullptr,
              relu ? by.data() : nullptr, dx, bdg.data(), bdb.data(), bc.flags);
          REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
          CheckTensor("dx", s, dx, want.dx, kOutUlps);
          CheckChannels("dgamma", bdg.data(), want.dgamma.value, want.dgamma.mag, kOutUlps);
          CheckChannels("dbeta", bdb.data(), want.dbeta.value, want.dbeta.mag, kOutUlps);
          if (bc.place != BackwardCase::kDxIsX)
            CheckSameBits("x (an input) was modified", bx.data(), in.x.data(), e);
          if (bc.place != BackwardCase::kDxIsDy)
            CheckSameBits("dy (an input) was modified", bdy.data(), in.dy.data(), e);
          CheckSameBits("y (an input) was modified", by.data(), in.y.data(), e);
          for (const Buffer* b : {&bx, &bdy, &by, &bg, &bm, &bi, &bdx, &bdg, &bdb})
            CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
          if (bc.flags & BNORM_SERIAL) {
            // The same call without the flag: bit-identical.
            std::vector<float> dx2(e), dg2(s.c), db2(s.c);
            REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), bm.data(), bi.data(),
                                       bc.gamma ? bg.data() : nullptr, by.data(), dx2.data(),
                                       dg2.data(), db2.data(),
                                       bc.flags & ~BNORM_SERIAL) == bnorm_success);
            CheckSameBits("dx (serial vs threaded)", dx, dx2.data(), e);
            CheckSameBits("dgamma (serial vs threaded)", bdg.data(), dg2.data(), s.c);
            CheckSameBits("dbeta (serial vs threaded)", bdb.data(), db2.data(), s.c);
          }
        });
      }
    }
  }
}

TEST_CASE("backward: each of dx, dgamma, dbeta skipped (NULL)") {
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : FewShapes(layout)) {
      INFO("shape ", ShapeString(s));
      const Inputs in = MakeInputs(s, 41);
      for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
        INFO("flags ", flags);
        const bool relu = flags != 0;
        const ref::Gradients want =
            ref::Backward(s, in.x.data(), in.dy.data(), in.saved_mean.data(),
                          in.saved_invstd.data(), in.gamma.data(), in.y.data(), relu);
        Buffer bdx(in.x.size(), 1), bdg(s.c, 2), bdb(s.c, 3);
        ForEachTarget([&](const std::string&) {
          for (int mask = 0; mask < 8; ++mask) {
            const bool want_dx = mask & 1, want_dg = mask & 2, want_db = mask & 4;
            INFO("dx ", std::string(want_dx ? "given" : "NULL"), ", dgamma ",
                 std::string(want_dg ? "given" : "NULL"), ", dbeta ",
                 std::string(want_db ? "given" : "NULL"));
            bdx.Poison();
            bdg.Poison();
            bdb.Poison();
            const bnorm_status status = bnorm_backward_f32(
                &s, in.x.data(), in.dy.data(), in.saved_mean.data(), in.saved_invstd.data(),
                in.gamma.data(), relu ? in.y.data() : nullptr, want_dx ? bdx.data() : nullptr,
                want_dg ? bdg.data() : nullptr, want_db ? bdb.data() : nullptr, flags);
            REQUIRE_MESSAGE(status == bnorm_success, std::string(bnorm_last_error()));
            if (want_dx) CheckTensor("dx", s, bdx.data(), want.dx, kOutUlps);
            if (want_dg)
              CheckChannels("dgamma", bdg.data(), want.dgamma.value, want.dgamma.mag, kOutUlps);
            if (want_db)
              CheckChannels("dbeta", bdb.data(), want.dbeta.value, want.dbeta.mag, kOutUlps);
            // A skipped output was not passed: nothing may have reached it.
            CHECK(bdx.AllPoison() != want_dx);
            CHECK(bdg.AllPoison() != want_dg);
            CHECK(bdb.AllPoison() != want_db);
            for (const Buffer* b : {&bdx, &bdg, &bdb})
              CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
          }
        });
      }
    }
  }
}

TEST_CASE("backward: the ReLU mask is y <= 0, and without the flag y is ignored") {
  // dy' = 0 where y <= 0 (+0 and -0 included): with every y <= 0 all sums are sums of
  // zeros and every gradient is exactly 0 on every target.
  for (bnorm_layout layout : kLayouts) {
    for (const bnorm_shape& s : FewShapes(layout)) {
      INFO("shape ", ShapeString(s));
      Inputs in = MakeInputs(s, 42);
      for (size_t i = 0; i < in.y.size(); ++i) in.y[i] = i % 2 ? -0.0f : -static_cast<float>(i);
      const std::vector<float> zeros_e(in.x.size(), 0.0f), zeros_c(s.c, 0.0f);
      ForEachTarget([&](const std::string&) {
        std::vector<float> dx(in.x.size(), 1.0f), dg(s.c, 1.0f), db(s.c, 1.0f);
        REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.saved_mean.data(),
                                   in.saved_invstd.data(), in.gamma.data(), in.y.data(), dx.data(),
                                   dg.data(), db.data(), BNORM_FUSE_RELU) == bnorm_success);
        for (size_t i = 0; i < dx.size(); ++i)
          if (dx[i] != 0.0f) {
            FAIL_CHECK("dx at " << Where(s, i) << " = " << Fmt(dx[i]) << ", want 0");
            break;
          }
        for (int64_t ch = 0; ch < s.c; ++ch) {
          INFO("channel ", ch);
          CHECK(dg[ch] == 0.0f);
          CHECK(db[ch] == 0.0f);
        }
        // Without BNORM_FUSE_RELU the same y (all masked) must make no difference to a
        // call with y NULL.
        std::vector<float> dx1(in.x.size()), dx2(in.x.size()), dg1(s.c), dg2(s.c), db1(s.c),
            db2(s.c);
        REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.saved_mean.data(),
                                   in.saved_invstd.data(), in.gamma.data(), in.y.data(), dx1.data(),
                                   dg1.data(), db1.data(), 0) == bnorm_success);
        REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.saved_mean.data(),
                                   in.saved_invstd.data(), in.gamma.data(), nullptr, dx2.data(),
                                   dg2.data(), db2.data(), 0) == bnorm_success);
        CheckSameBits("dx (y given without ReLU)", dx1.data(), dx2.data(), dx1.size());
        CheckSameBits("dgamma (y given without ReLU)", dg1.data(), dg2.data(), s.c);
        CheckSameBits("dbeta (y given without ReLU)", db1.data(), db2.data(), s.c);
      });
    }
  }
}

TEST_CASE("backward: long channels cut into many chunks") {
  for (const bnorm_shape& s : LargeShapes()) {
    INFO("shape ", ShapeString(s));
    const Inputs in = MakeInputs(s, 43);
    const ref::Gradients want =
        ref::Backward(s, in.x.data(), in.dy.data(), in.saved_mean.data(), in.saved_invstd.data(),
                      in.gamma.data(), in.y.data(), true);
    Buffer bdx(in.x.size(), 1), bdg(s.c, 0), bdb(s.c, 0);
    ForEachTarget([&](const std::string&) {
      bdx.Poison();
      bdg.Poison();
      bdb.Poison();
      REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.saved_mean.data(),
                                 in.saved_invstd.data(), in.gamma.data(), in.y.data(), bdx.data(),
                                 bdg.data(), bdb.data(), BNORM_FUSE_RELU) == bnorm_success);
      CheckTensor("dx", s, bdx.data(), want.dx, kOutUlps);
      CheckChannels("dgamma", bdg.data(), want.dgamma.value, want.dgamma.mag, kOutUlps);
      CheckChannels("dbeta", bdb.data(), want.dbeta.value, want.dbeta.mag, kOutUlps);
      for (const Buffer* b : {&bdx, &bdg, &bdb})
        CHECK_MESSAGE(b->CanariesIntact(), "a buffer was written outside its elements");
    });
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
