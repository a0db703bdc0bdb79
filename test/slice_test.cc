// Channel slices (bnorm_*_slice_f32): every operation on channels [c_begin, c_end)
// gives the bits of the whole call on those channels, touches nothing else, and
// slices of one tensor may run concurrently. Shapes reach every work plan: fused and
// chunked NCHW planes, rows in flat periods (with several rows per period and a
// leftover), rows in tiles (NHWC, and short NCHW planes with several values per row).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "bnorm/bnorm.hpp"
#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// Quick: the same work plans and edge cases at about a third of the values: fused
// planes (serial), chunked planes (fused, 2 chunks, threaded; over kFuseValues per
// channel, 5 chunks), rows in flat periods of 16 rows (NCHW spatial 9, NHWC c = 5;
// 2 chunks, the second with full periods and leftover rows), rows in tiles (NCHW
// spatial 20, NHWC c = 1100: 2 tiles, 2 chunks), spatial 1 as rows, small NHWC.
std::vector<bnorm_shape> SliceShapes() {
  if (QuickRun()) {
    return {Shape(3, 5, 1000, bnorm_nchw),   Shape(1, 3, 70001, bnorm_nchw),
            Shape(1, 2, 262147, bnorm_nchw), Shape(2117, 7, 9, bnorm_nchw),
            Shape(145, 50, 20, bnorm_nchw),  Shape(64, 33, 1, bnorm_nchw),
            Shape(5, 3, 33, bnorm_nhwc),     Shape(4, 64, 50, bnorm_nhwc),
            Shape(130, 1100, 1, bnorm_nhwc), Shape(1, 5, 30005, bnorm_nhwc),
            Shape(2, 17, 31, bnorm_nhwc)};
  }
  return {Shape(3, 5, 1000, bnorm_nchw),   Shape(1, 3, 300000, bnorm_nchw),
          Shape(3000, 7, 9, bnorm_nchw),   Shape(200, 100, 20, bnorm_nchw),
          Shape(64, 33, 1, bnorm_nchw),    Shape(5, 3, 33, bnorm_nhwc),
          Shape(4, 64, 50, bnorm_nhwc),    Shape(300, 1500, 1, bnorm_nhwc),
          Shape(1, 5, 200000, bnorm_nhwc), Shape(2, 17, 31, bnorm_nhwc)};
}

// Returns the cut points of a channel range into uneven slices (single channels at
// both ends, an empty slice, and the rest).
std::vector<int64_t> Cuts(int64_t c) {
  std::vector<int64_t> cuts = {0, 1, 1, c / 3, c / 3 + 1, c - 1, c};
  for (auto& k : cuts) k = std::min(std::max<int64_t>(k, 0), c);
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

constexpr float kPoison = -12345.678f;

// Outputs of every operation, for the whole call or assembled from slices.
struct Outputs {
  explicit Outputs(const bnorm_shape& s)
      : y_train(ref::Elements(s), kPoison), y_infer(y_train), y_affine(y_train), dx(y_train),
        mean(s.c, kPoison), var(mean), saved_mean(mean), saved_invstd(mean), running_mean(s.c, 0.5f),
        running_var(s.c, 2.0f), dgamma(mean), dbeta(mean) {}
  std::vector<float> y_train, y_infer, y_affine, dx, mean, var, saved_mean, saved_invstd,
      running_mean, running_var, dgamma, dbeta;
};

struct Inputs {
  explicit Inputs(const bnorm_shape& s) {
    std::mt19937 rng = Rng(s, 41);
    x = RandomTensor(s, rng);
    dy = RandomTensor(s, rng, 1.0);
    gamma = RandomSigned(s.c, rng, 0.5, 2);
    beta = RandomVec(s.c, rng, -1, 1);
    mean = RandomVec(s.c, rng, -1, 1);
    var = RandomVec(s.c, rng, 0.5, 2);
    // y for the ReLU mask of backward: some values <= 0.
    y = RandomTensor(s, rng, 1.0);
  }
  std::vector<float> x, dy, gamma, beta, mean, var, y;
};

// Runs every operation on channels [cb, ce) (the whole call when whole) into out.
void RunAll(const bnorm_shape& s, const Inputs& in, Outputs& out, int64_t cb, int64_t ce,
            bool whole, unsigned flags) {
  const float eps = 1e-3f, momentum = 0.25f;
  if (whole) {
    REQUIRE(bnorm_moments_f32(&s, in.x.data(), out.mean.data(), out.var.data()) == bnorm_success);
    REQUIRE(bnorm_forward_training_f32(&s, in.x.data(), out.y_train.data(), in.gamma.data(),
                                       in.beta.data(), eps, momentum, out.running_mean.data(),
                                       out.running_var.data(), out.saved_mean.data(),
                                       out.saved_invstd.data(), flags) == bnorm_success);
    REQUIRE(bnorm_forward_inference_f32(&s, in.x.data(), out.y_infer.data(), in.gamma.data(),
                                        in.beta.data(), in.mean.data(), in.var.data(), eps,
                                        flags) == bnorm_success);
    REQUIRE(bnorm_affine_f32(&s, in.x.data(), out.y_affine.data(), in.gamma.data(),
                             in.beta.data(), flags) == bnorm_success);
    REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.mean.data(), in.var.data(),
                               in.gamma.data(), in.y.data(), out.dx.data(), out.dgamma.data(),
                               out.dbeta.data(), flags | BNORM_FUSE_RELU) == bnorm_success);
    return;
  }
  REQUIRE(bnorm_moments_slice_f32(&s, cb, ce, in.x.data(), out.mean.data(), out.var.data(),
                                  flags) == bnorm_success);
  REQUIRE(bnorm_forward_training_slice_f32(&s, cb, ce, in.x.data(), out.y_train.data(),
                                           in.gamma.data(), in.beta.data(), eps, momentum,
                                           out.running_mean.data(), out.running_var.data(),
                                           out.saved_mean.data(), out.saved_invstd.data(),
                                           flags) == bnorm_success);
  REQUIRE(bnorm_forward_inference_slice_f32(&s, cb, ce, in.x.data(), out.y_infer.data(),
                                            in.gamma.data(), in.beta.data(), in.mean.data(),
                                            in.var.data(), eps, flags) == bnorm_success);
  REQUIRE(bnorm_affine_slice_f32(&s, cb, ce, in.x.data(), out.y_affine.data(), in.gamma.data(),
                                 in.beta.data(), flags) == bnorm_success);
  REQUIRE(bnorm_backward_slice_f32(&s, cb, ce, in.x.data(), in.dy.data(), in.mean.data(),
                                   in.var.data(), in.gamma.data(), in.y.data(), out.dx.data(),
                                   out.dgamma.data(), out.dbeta.data(),
                                   flags | BNORM_FUSE_RELU) == bnorm_success);
}

void CheckSame(const Outputs& got, const Outputs& want) {
  auto same = [](const char* what, const std::vector<float>& a, const std::vector<float>& b) {
    CheckSameBits(what, a.data(), b.data(), a.size());
  };
  same("mean", got.mean, want.mean);
  same("var", got.var, want.var);
  same("training y", got.y_train, want.y_train);
  same("saved_mean", got.saved_mean, want.saved_mean);
  same("saved_invstd", got.saved_invstd, want.saved_invstd);
  same("running_mean", got.running_mean, want.running_mean);
  same("running_var", got.running_var, want.running_var);
  same("inference y", got.y_infer, want.y_infer);
  same("affine y", got.y_affine, want.y_affine);
  same("dx", got.dx, want.dx);
  same("dgamma", got.dgamma, want.dgamma);
  same("dbeta", got.dbeta, want.dbeta);
}

TEST_CASE("slices: assembled from slices, every operation is bit-identical to the whole call") {
  ForEachTarget([&](const std::string&) {
    for (const bnorm_shape& s : SliceShapes()) {
      INFO(ShapeString(s));
      const Inputs in(s);
      Outputs whole(s), sliced(s);
      RunAll(s, in, whole, 0, s.c, true, 0);
      const std::vector<int64_t> cuts = Cuts(s.c);
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        INFO("slice [", cuts[k], ", ", cuts[k + 1], ")");
        RunAll(s, in, sliced, cuts[k], cuts[k + 1], false, BNORM_SERIAL);
      }
      CheckSame(sliced, whole);
    }
  });
}

TEST_CASE("slices: concurrent slices on the caller's threads give the same bits") {
  for (const bnorm_shape& s : SliceShapes()) {
    INFO(ShapeString(s));
    const Inputs in(s);
    Outputs whole(s), sliced(s);
    RunAll(s, in, whole, 0, s.c, true, 0);
    const std::vector<int64_t> cuts = Cuts(s.c);
    std::vector<std::thread> pool;
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      pool.emplace_back([&, k] { RunAll(s, in, sliced, cuts[k], cuts[k + 1], false, BNORM_SERIAL); });
    }
    for (auto& t : pool) t.join();
    CheckSame(sliced, whole);
  }
}

TEST_CASE("slices: values and channels outside the slice are not touched") {
  for (const bnorm_shape& s : SliceShapes()) {
    if (s.c < 3) continue;
    INFO(ShapeString(s));
    const Inputs in(s);
    Outputs whole(s), part(s);
    const Outputs untouched(s);
    RunAll(s, in, whole, 0, s.c, true, 0);
    const int64_t cb = 1, ce = s.c - 1;
    RunAll(s, in, part, cb, ce, false, 0);
    auto check = [&](const char* what, const std::vector<float>& got,
                     const std::vector<float>& want, const std::vector<float>& before,
                     bool tensor) {
      for (size_t i = 0; i < got.size(); ++i) {
        int64_t ch = static_cast<int64_t>(i);
        if (tensor) {
          ch = s.layout == bnorm_nchw ? (static_cast<int64_t>(i) / s.spatial) % s.c
                                      : static_cast<int64_t>(i) % s.c;
        }
        const float expect = ch >= cb && ch < ce ? want[i] : before[i];
        if (Bits(got[i]) != Bits(expect)) {
          FAIL_CHECK(what << " element " << i << " (channel " << ch << "): " << got[i]
                          << " expected " << expect);
          return;
        }
      }
    };
    check("training y", part.y_train, whole.y_train, untouched.y_train, true);
    check("inference y", part.y_infer, whole.y_infer, untouched.y_infer, true);
    check("affine y", part.y_affine, whole.y_affine, untouched.y_affine, true);
    check("dx", part.dx, whole.dx, untouched.dx, true);
    check("mean", part.mean, whole.mean, untouched.mean, false);
    check("var", part.var, whole.var, untouched.var, false);
    check("saved_invstd", part.saved_invstd, whole.saved_invstd, untouched.saved_invstd, false);
    check("running_var", part.running_var, whole.running_var, untouched.running_var, false);
    check("dgamma", part.dgamma, whole.dgamma, untouched.dgamma, false);
    check("dbeta", part.dbeta, whole.dbeta, untouched.dbeta, false);
  }
}

TEST_CASE("slices: a range outside [0, c] is refused, naming c_begin and c_end") {
  const bnorm_shape s = Shape(2, 4, 8, bnorm_nchw);
  std::vector<float> x(64, 1.0f), mean(4, kPoison), var(4, kPoison);
  const int64_t bad[][2] = {{-1, 2}, {3, 2}, {0, 5}, {5, 5}};
  for (const auto& r : bad) {
    CAPTURE(r[0]);
    CAPTURE(r[1]);
    CHECK(bnorm_moments_slice_f32(&s, r[0], r[1], x.data(), mean.data(), var.data(), 0) ==
          bnorm_invalid_argument);
    CHECK(std::string(bnorm_last_error()).find("c_begin") != std::string::npos);
    CHECK(Bits(mean[0]) == Bits(kPoison));
  }
  CHECK(bnorm_moments_slice_f32(&s, 2, 2, x.data(), mean.data(), var.data(), 0) == bnorm_success);
  CHECK(Bits(mean[2]) == Bits(kPoison));
}

TEST_CASE("slices: the C++ overloads with bnorm::Channels match the C calls") {
  const bnorm_shape cs = Shape(3, 6, 40, bnorm_nhwc);
  const bnorm::Shape s{3, 6, 40, bnorm::Layout::kNHWC};
  const Inputs in(cs);
  Outputs want(cs), got(cs);
  RunAll(cs, in, want, 2, 5, false, 0);
  const bnorm::Channels ch{2, 5};
  bnorm::Moments(s, ch, in.x, got.mean, got.var);
  bnorm::ForwardTraining(s, ch, in.x, got.y_train, in.gamma, in.beta, 1e-3f, 0.25f,
                         got.running_mean, got.running_var, got.saved_mean, got.saved_invstd);
  bnorm::ForwardInference(s, ch, in.x, got.y_infer, in.gamma, in.beta, in.mean, in.var, 1e-3f);
  bnorm::Affine(s, ch, in.x, got.y_affine, in.gamma, in.beta);
  bnorm::Backward(s, ch, in.x, in.dy, in.mean, in.var, in.gamma, in.y, got.dx, got.dgamma,
                  got.dbeta, bnorm::kFuseRelu);
  CheckSame(got, want);
  CHECK_THROWS_AS(bnorm::Affine(s, bnorm::Channels{4, 2}, in.x, got.y_affine, in.gamma, in.beta),
                  bnorm::Error);
}

}  // namespace
}  // namespace test
}  // namespace bnorm
