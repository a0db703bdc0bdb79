// Tests of the synchronized-batch-norm steps (bnorm_partial_stats_f32 ...
// bnorm_backward_dx_f32) in one process: the sequence on the whole batch against
// bnorm_forward_training_f32 / bnorm_backward_f32, batches split into uneven parts
// (one image, a few NHWC rows, none) merged in order against the float64 reference,
// the merge itself, empty tensors and every argument error.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <limits>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

constexpr float kEps = 1e-5f;
constexpr float kMomentum = 0.1f;

// Shapes for the sequence tests: the edge cases of FewShapes, NCHW channels cut into
// chunks (fused and not), short NCHW planes handled as rows, wide NHWC rows in tiles.
std::vector<bnorm_shape> SequenceShapes(bnorm_layout layout) {
  std::vector<bnorm_shape> shapes = FewShapes(layout, 2);
  shapes.push_back(Shape(2, 3, 70001, layout));   // NCHW: fused, 3 chunks per channel
  shapes.push_back(Shape(3, 2, 100003, layout));  // NCHW: not fused, 5 chunks
  shapes.push_back(Shape(300, 7, 9, layout));
  shapes.push_back(Shape(40, 1500, 1, layout));
  return shapes;
}

// The global statistics, running statistics and gradients of one run.
struct Results {
  std::vector<float> y, mean, invstd, running_mean, running_var, dx, dgamma, dbeta;
};

// Returns the inputs of `s`: x, gamma, beta, dy and the running statistics before.
struct Inputs {
  std::vector<float> x, gamma, beta, dy, running_mean, running_var;
};
Inputs MakeInputs(const bnorm_shape& s, uint32_t salt) {
  std::mt19937 rng = Rng(s, salt);
  Inputs in;
  in.x = RandomTensor(s, rng);
  in.dy = RandomTensor(s, rng, 1.0);
  in.gamma = RandomSigned(s.c, rng, 0.25, 2.0);
  in.beta = RandomVec(s.c, rng, -1, 1);
  in.running_mean = RandomVec(s.c, rng, -1, 1);
  in.running_var = RandomVec(s.c, rng, 0.5, 2);
  return in;
}

// The whole-batch calls.
Results Whole(const bnorm_shape& s, const Inputs& in, unsigned flags) {
  Results r{std::vector<float>(in.x.size()), std::vector<float>(s.c), std::vector<float>(s.c),
            in.running_mean, in.running_var, std::vector<float>(in.x.size()),
            std::vector<float>(s.c), std::vector<float>(s.c)};
  REQUIRE(bnorm_forward_training_f32(&s, in.x.data(), r.y.data(), in.gamma.data(),
                                     in.beta.data(), kEps, kMomentum, r.running_mean.data(),
                                     r.running_var.data(), r.mean.data(), r.invstd.data(),
                                     flags) == bnorm_success);
  REQUIRE(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), r.mean.data(), r.invstd.data(),
                             in.gamma.data(), r.y.data(), r.dx.data(), r.dgamma.data(),
                             r.dbeta.data(), flags) == bnorm_success);
  return r;
}

// One part of a batch: the tensor of `part` shape starting at element `offset`.
struct Part {
  bnorm_shape shape;
  int64_t offset;
};

// Cuts `s` into parts of the given sizes: images for NCHW, rows (image, position) for
// NHWC (each part then is {1, c, rows}, or {0, c, 1} for none). Sizes add up to the
// images (NCHW) or rows (NHWC) of s.
std::vector<Part> Split(const bnorm_shape& s, const std::vector<int64_t>& sizes) {
  std::vector<Part> parts;
  int64_t at = 0;
  for (int64_t size : sizes) {
    if (s.layout == bnorm_nchw) {
      parts.push_back(Part{Shape(size, s.c, s.spatial, s.layout), at * s.c * s.spatial});
    } else {
      parts.push_back(Part{size ? Shape(1, s.c, size, s.layout) : Shape(0, s.c, 1, s.layout),
                           at * s.c});
    }
    at += size;
  }
  REQUIRE(at == (s.layout == bnorm_nchw ? s.n : s.n * s.spatial));
  return parts;
}

// The steps over `parts` of the batch, merged and summed in part order.
Results Steps(const bnorm_shape& s, const Inputs& in, const std::vector<Part>& parts,
              unsigned flags) {
  const size_t c = static_cast<size_t>(s.c);
  Results r{std::vector<float>(in.x.size()), std::vector<float>(c), std::vector<float>(c),
            in.running_mean, in.running_var, std::vector<float>(in.x.size()),
            std::vector<float>(c), std::vector<float>(c)};
  std::vector<bnorm_partial_stats> global(c, bnorm_partial_stats{0, 0, 0}), local(c);
  for (const Part& p : parts) {
    REQUIRE(bnorm_partial_stats_f32(&p.shape, in.x.data() + p.offset, local.data(), flags) ==
            bnorm_success);
    REQUIRE(bnorm_merge_partial_stats(s.c, global.data(), local.data(), global.data()) ==
            bnorm_success);
  }
  REQUIRE(bnorm_finish_stats_f32(s.c, global.data(), kEps, kMomentum, r.running_mean.data(),
                                 r.running_var.data(), r.mean.data(), r.invstd.data(),
                                 flags) == bnorm_success);
  for (const Part& p : parts) {
    REQUIRE(bnorm_normalize_f32(&p.shape, in.x.data() + p.offset, r.y.data() + p.offset,
                                r.mean.data(), r.invstd.data(), in.gamma.data(),
                                in.beta.data(), flags) == bnorm_success);
  }
  std::vector<double> sum_dy(c, 0.0), sum_dy_xhat(c, 0.0), part_dy(c), part_dy_xhat(c);
  int64_t count = 0;
  for (const Part& p : parts) {
    REQUIRE(bnorm_backward_sums_f32(&p.shape, in.x.data() + p.offset, in.dy.data() + p.offset,
                                    r.mean.data(), r.invstd.data(), r.y.data() + p.offset,
                                    part_dy.data(), part_dy_xhat.data(),
                                    flags) == bnorm_success);
    for (size_t ch = 0; ch < c; ++ch) {
      sum_dy[ch] += part_dy[ch];
      sum_dy_xhat[ch] += part_dy_xhat[ch];
    }
    count += p.shape.n * p.shape.spatial;
  }
  for (const Part& p : parts) {
    REQUIRE(bnorm_backward_dx_f32(&p.shape, in.x.data() + p.offset, in.dy.data() + p.offset,
                                  r.mean.data(), r.invstd.data(), in.gamma.data(),
                                  r.y.data() + p.offset, sum_dy.data(), sum_dy_xhat.data(),
                                  count, r.dx.data() + p.offset, r.dgamma.data(),
                                  r.dbeta.data(), flags) == bnorm_success);
  }
  return r;
}

// Checks a run against the float64 reference of the whole batch. The backward
// reference takes the run's own float statistics (as bnorm_backward_f32's tests do).
void CheckAgainstReference(const bnorm_shape& s, const Inputs& in, const Results& r,
                           unsigned flags) {
  const bool relu = (flags & BNORM_FUSE_RELU) != 0;
  const ref::Training t =
      ref::ForwardTraining(s, in.x.data(), in.gamma.data(), in.beta.data(), kEps, relu);
  CheckSaved(r.mean.data(), r.invstd.data(), t.stats, t.invstd, kVarRel);
  CheckRunning(s, t.stats, kMomentum, (flags & BNORM_RUNNING_VAR_BIASED) != 0,
               in.running_mean, in.running_var, r.running_mean.data(), r.running_var.data(),
               kVarRel);
  CheckTensor("y", s, r.y.data(), t.y, kOutUlps);
  const ref::Gradients g = ref::Backward(s, in.x.data(), in.dy.data(), r.mean.data(),
                                         r.invstd.data(), in.gamma.data(), r.y.data(), relu);
  CheckTensor("dx", s, r.dx.data(), g.dx, kOutUlps);
  CheckChannels("dgamma", r.dgamma.data(), g.dgamma.value, g.dgamma.mag, kOutUlps);
  CheckChannels("dbeta", r.dbeta.data(), g.dbeta.value, g.dbeta.mag, kOutUlps);
}

const unsigned kFlagSets[] = {0, BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED, BNORM_SERIAL};

TEST_CASE("distributed: the steps on the whole batch give the whole-batch calls") {
  ForEachTarget([&](const std::string&) {
    for (bnorm_layout layout : kLayouts) {
      for (const bnorm_shape& s : SequenceShapes(layout)) {
        for (unsigned flags : kFlagSets) {
          INFO(ShapeString(s), " flags ", flags);
          const Inputs in = MakeInputs(s, 7);
          const Results whole = Whole(s, in, flags);
          const Results steps = Steps(s, in, Split(s, {s.layout == bnorm_nchw ? s.n : s.n * s.spatial}), flags);
          // The statistics and the sums run in the order of the whole-batch calls.
          CheckSameBits("mean", steps.mean.data(), whole.mean.data(), whole.mean.size());
          CheckSameBits("running_mean", steps.running_mean.data(), whole.running_mean.data(),
                        whole.running_mean.size());
          CheckAgainstReference(s, in, steps, flags);
          // invstd: M2 / count instead of the variance itself (a float64 rounding).
          CheckChannelsRel("invstd vs whole", steps.invstd.data(),
                           ref::Vec(whole.invstd.begin(), whole.invstd.end()), 2 * ref::kUlp);
          CheckChannelsRel("running_var vs whole", steps.running_var.data(),
                           ref::Vec(whole.running_var.begin(), whole.running_var.end()),
                           2 * ref::kUlp);
          // Backward from the same statistics: the same bits.
          Results back = whole;
          std::vector<double> sum_dy(s.c), sum_dy_xhat(s.c);
          REQUIRE(bnorm_backward_sums_f32(&s, in.x.data(), in.dy.data(), whole.mean.data(),
                                          whole.invstd.data(), whole.y.data(), sum_dy.data(),
                                          sum_dy_xhat.data(), flags) == bnorm_success);
          REQUIRE(bnorm_backward_dx_f32(&s, in.x.data(), in.dy.data(), whole.mean.data(),
                                        whole.invstd.data(), in.gamma.data(), whole.y.data(),
                                        sum_dy.data(), sum_dy_xhat.data(), s.n * s.spatial,
                                        back.dx.data(), back.dgamma.data(), back.dbeta.data(),
                                        flags) == bnorm_success);
          CheckSameBits("dx", back.dx.data(), whole.dx.data(), whole.dx.size());
          CheckSameBits("dgamma", back.dgamma.data(), whole.dgamma.data(), whole.dgamma.size());
          CheckSameBits("dbeta", back.dbeta.data(), whole.dbeta.data(), whole.dbeta.size());
        }
      }
    }
  });
}

TEST_CASE("distributed: a batch in uneven parts, merged in order, gives the whole batch") {
  struct SplitCase {
    bnorm_shape shape;
    std::vector<int64_t> sizes;  // images (NCHW) or rows (NHWC)
  };
  const SplitCase cases[] = {
      {Shape(7, 5, 33, bnorm_nchw), {1, 4, 2}},
      {Shape(6, 16, 3, bnorm_nchw), {0, 1, 5, 0}},           // parts without data
      {Shape(9, 3, 9000, bnorm_nchw), {1, 3, 1, 4}},          // chunked channels
      {Shape(40, 1500, 1, bnorm_nchw), {1, 20, 19}},          // rows, tiles
      {Shape(5, 17, 31, bnorm_nhwc), {1, 2, 100, 52}},        // tiny row slices
      {Shape(3, 1500, 4, bnorm_nhwc), {1, 1, 10}},            // tiled rows
      {Shape(4, 7, 5000, bnorm_nhwc), {3, 19980, 0, 1, 1, 1, 9, 5}},
  };
  ForEachTarget([&](const std::string&) {
    for (const SplitCase& sc : cases) {
      for (unsigned flags : kFlagSets) {
        const bnorm_shape& s = sc.shape;
        INFO(ShapeString(s), " flags ", flags, " parts ", sc.sizes.size());
        const Inputs in = MakeInputs(s, 11);
        const Results r = Steps(s, in, Split(s, sc.sizes), flags);
        CheckAgainstReference(s, in, r, flags);
        // And close to the whole-batch calls (both within the reference's tolerance).
        const Results whole = Whole(s, in, flags);
        CheckChannelsRel("invstd vs whole", r.invstd.data(),
                         ref::Vec(whole.invstd.begin(), whole.invstd.end()), kVarRel);
      }
    }
  });
}

TEST_CASE("distributed: merge") {
  const bnorm_partial_stats empty{0, 0, 0};
  const bnorm_partial_stats a{3, 1.5, 2.0}, b{5, -0.25, 7.5};
  SUBCASE("the empty set is the identity, bit for bit") {
    bnorm_partial_stats out[2];
    const bnorm_partial_stats left[2] = {a, empty}, right[2] = {empty, b};
    REQUIRE(bnorm_merge_partial_stats(2, left, right, out) == bnorm_success);
    CHECK(std::memcmp(&out[0], &a, sizeof(a)) == 0);
    CHECK(std::memcmp(&out[1], &b, sizeof(b)) == 0);
  }
  SUBCASE("Chan's formula, in place on either side") {
    const double count = 8, mean = (3 * 1.5 + 5 * -0.25) / 8;
    const double m2 = 2.0 + 7.5 + (1.5 - -0.25) * (1.5 - -0.25) * 3 * 5 / 8;
    bnorm_partial_stats x = a;
    REQUIRE(bnorm_merge_partial_stats(1, &x, &b, &x) == bnorm_success);
    CHECK(x.count == count);
    CHECK(x.mean == doctest::Approx(mean).epsilon(1e-15));
    CHECK(x.m2 == doctest::Approx(m2).epsilon(1e-15));
    bnorm_partial_stats y = b;
    REQUIRE(bnorm_merge_partial_stats(1, &a, &y, &y) == bnorm_success);
    CHECK(std::memcmp(&x, &y, sizeof(x)) == 0);
  }
  SUBCASE("exact for values far from 0 (|mean| = 1e7 std)") {
    // Two halves of {1e7 - 1, 1e7 + 1, 1e7 - 2, 1e7 + 2}.
    const bnorm_partial_stats lo{2, 1e7, 2.0}, hi{2, 1e7, 8.0};
    bnorm_partial_stats out;
    REQUIRE(bnorm_merge_partial_stats(1, &lo, &hi, &out) == bnorm_success);
    CHECK(out.mean == 1e7);
    CHECK(out.m2 == 10.0);
  }
  SUBCASE("NaN and Inf data give a NaN M2, the other channels do not notice") {
    const double inf = std::numeric_limits<double>::infinity();
    const bnorm_partial_stats l[2] = {{2, inf, 0}, a}, r[2] = {{2, 1, 1}, b};
    bnorm_partial_stats out[2], ok;
    REQUIRE(bnorm_merge_partial_stats(2, l, r, out) == bnorm_success);
    REQUIRE(bnorm_merge_partial_stats(1, &a, &b, &ok) == bnorm_success);
    CHECK(out[0].mean == inf);
    CHECK(std::isnan(out[0].m2));
    CHECK(std::memcmp(&out[1], &ok, sizeof(ok)) == 0);
  }
}

TEST_CASE("distributed: empty tensors") {
  for (bnorm_layout layout : kLayouts) {
    INFO(LayoutName(layout));
    SUBCASE("no values: the reductions write their identity, the rest writes nothing") {
      const bnorm_shape s = Shape(0, 3, 5, layout);
      bnorm_partial_stats stats[3];
      std::memset(stats, 0xFF, sizeof(stats));
      REQUIRE(bnorm_partial_stats_f32(&s, nullptr, stats, 0) == bnorm_success);
      for (const bnorm_partial_stats& st : stats) {
        CHECK(st.count == 0);
        CHECK(st.mean == 0);
        CHECK(st.m2 == 0);
      }
      const float mean[3] = {0, 0, 0}, invstd[3] = {1, 1, 1};
      REQUIRE(bnorm_normalize_f32(&s, nullptr, nullptr, mean, invstd, nullptr, nullptr, 0) ==
              bnorm_success);
      double sum_dy[3] = {7, 7, 7}, sum_dy_xhat[3] = {7, 7, 7};
      REQUIRE(bnorm_backward_sums_f32(&s, nullptr, nullptr, nullptr, nullptr, nullptr, sum_dy,
                                      sum_dy_xhat, 0) == bnorm_success);
      for (int ch = 0; ch < 3; ++ch) CHECK((sum_dy[ch] == 0 && sum_dy_xhat[ch] == 0));
      // The global gradients, on a process without values.
      const double g_dy[3] = {1, 2, 3}, g_dy_xhat[3] = {-1, -2, -3};
      float dgamma[3], dbeta[3];
      REQUIRE(bnorm_backward_dx_f32(&s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    g_dy, g_dy_xhat, 10, nullptr, dgamma, dbeta, 0) ==
              bnorm_success);
      CHECK(dgamma[2] == -3.0f);
      CHECK(dbeta[1] == 2.0f);
    }
    SUBCASE("no channels: nothing at all") {
      const bnorm_shape s = Shape(4, 0, 5, layout);
      CHECK(bnorm_partial_stats_f32(&s, nullptr, nullptr, 0) == bnorm_success);
      CHECK(bnorm_merge_partial_stats(0, nullptr, nullptr, nullptr) == bnorm_success);
      CHECK(bnorm_finish_stats_f32(0, nullptr, kEps, kMomentum, nullptr, nullptr, nullptr,
                                   nullptr, 0) == bnorm_success);
      CHECK(bnorm_backward_sums_f32(&s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    nullptr, 0) == bnorm_success);
      CHECK(bnorm_backward_dx_f32(&s, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, nullptr, 0, nullptr, nullptr, nullptr, 0) ==
            bnorm_success);
    }
  }
}

// --- Errors: a status, a message naming the function and the argument, and every
// output byte unchanged.

// Raw bytes of every output of a call, to check they are unchanged.
template <typename T>
std::vector<unsigned char> Bytes(const T* p, size_t n) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(p);
  return std::vector<unsigned char>(b, b + n * sizeof(T));
}

void CheckFailed(bnorm_status got, const char* function, const char* argument) {
  CHECK(got == bnorm_invalid_argument);
  const std::string message = bnorm_last_error();
  INFO("message: ", message);
  CHECK(message.rfind(std::string(function) + ": ", 0) == 0);
  CHECK(message.find(argument) != std::string::npos);
}

TEST_CASE("distributed: bad arguments") {
  const bnorm_shape s = Shape(2, 3, 5, bnorm_nchw);
  const int64_t c = 3, elements = 30;
  std::vector<float> x(elements, 1.5f), dy(elements, 0.5f), y(elements, -7.0f);
  std::vector<float> dx(elements, -9.0f);
  float mean[3] = {1, 2, 3}, invstd[3] = {1, 1, 1}, gamma[3] = {1, 1, 1};
  float rm[3] = {4, 4, 4}, rv[3] = {5, 5, 5}, dgamma[3] = {6, 6, 6}, dbeta[3] = {7, 7, 7};
  bnorm_partial_stats stats[3], global[3];
  std::memset(stats, 0x5A, sizeof(stats));
  for (auto& g : global) g = bnorm_partial_stats{10, 1, 4};
  double sum_dy[3] = {8, 8, 8}, sum_dy_xhat[3] = {9, 9, 9};
  const auto before = std::make_tuple(Bytes(stats, 3), Bytes(global, 3), Bytes(y.data(), 30),
                                      Bytes(dx.data(), 30), Bytes(mean, 3), Bytes(invstd, 3),
                                      Bytes(rm, 3), Bytes(rv, 3), Bytes(dgamma, 3),
                                      Bytes(dbeta, 3), Bytes(sum_dy, 3), Bytes(sum_dy_xhat, 3));
  auto untouched = [&] {
    CHECK(before == std::make_tuple(Bytes(stats, 3), Bytes(global, 3), Bytes(y.data(), 30),
                                    Bytes(dx.data(), 30), Bytes(mean, 3), Bytes(invstd, 3),
                                    Bytes(rm, 3), Bytes(rv, 3), Bytes(dgamma, 3),
                                    Bytes(dbeta, 3), Bytes(sum_dy, 3), Bytes(sum_dy_xhat, 3)));
  };
  const bnorm_shape no_values = Shape(0, 3, 5, bnorm_nchw);
  const bnorm_shape negative = Shape(2, -1, 5, bnorm_nchw);
  bnorm_shape bad_layout = s;
  const int seven = 7;
  std::memcpy(&bad_layout.layout, &seven, sizeof(seven));

  SUBCASE("bnorm_partial_stats_f32") {
    const char* fn = "bnorm_partial_stats_f32";
    CheckFailed(bnorm_partial_stats_f32(nullptr, x.data(), stats, 0), fn, "shape");
    CheckFailed(bnorm_partial_stats_f32(&negative, x.data(), stats, 0), fn, "shape->c");
    CheckFailed(bnorm_partial_stats_f32(&bad_layout, x.data(), stats, 0), fn, "shape->layout");
    CheckFailed(bnorm_partial_stats_f32(&s, nullptr, stats, 0), fn, "x");
    CheckFailed(bnorm_partial_stats_f32(&s, x.data(), nullptr, 0), fn, "stats");
    CheckFailed(bnorm_partial_stats_f32(&no_values, nullptr, nullptr, 0), fn, "stats");
    CheckFailed(bnorm_partial_stats_f32(&s, x.data(), stats, 8), fn, "flags");
    // stats over the end of x
    CheckFailed(bnorm_partial_stats_f32(&s, x.data(),
                                        reinterpret_cast<bnorm_partial_stats*>(x.data() + 28), 0),
                fn, "stats");
    untouched();
  }
  SUBCASE("bnorm_merge_partial_stats") {
    const char* fn = "bnorm_merge_partial_stats";
    CheckFailed(bnorm_merge_partial_stats(-1, global, global, stats), fn, "c");
    CheckFailed(bnorm_merge_partial_stats(INT64_MAX / 16, global, global, stats), fn, "a");
    CheckFailed(bnorm_merge_partial_stats(c, nullptr, global, stats), fn, "a");
    CheckFailed(bnorm_merge_partial_stats(c, global, nullptr, stats), fn, "b");
    CheckFailed(bnorm_merge_partial_stats(c, global, global, nullptr), fn, "out");
    CheckFailed(bnorm_merge_partial_stats(2, global, global + 1, global), fn, "out");
    CheckFailed(bnorm_merge_partial_stats(2, global, global, global + 1), fn, "out");
    bnorm_partial_stats bad[3] = {global[0], {-1, 0, 0}, global[2]};
    CheckFailed(bnorm_merge_partial_stats(c, global, bad, stats), fn, "b[1].count");
    bad[1].count = std::numeric_limits<double>::quiet_NaN();
    CheckFailed(bnorm_merge_partial_stats(c, bad, global, stats), fn, "a[1].count");
    untouched();
  }
  SUBCASE("bnorm_finish_stats_f32") {
    const char* fn = "bnorm_finish_stats_f32";
    CheckFailed(bnorm_finish_stats_f32(c, nullptr, kEps, kMomentum, rm, rv, mean, invstd, 0), fn,
                "global");
    CheckFailed(bnorm_finish_stats_f32(c, global, 0.0f, kMomentum, rm, rv, mean, invstd, 0), fn,
                "eps");
    CheckFailed(bnorm_finish_stats_f32(c, global, kEps, 1.5f, rm, rv, mean, invstd, 0), fn,
                "momentum");
    CheckFailed(bnorm_finish_stats_f32(c, global, kEps, kMomentum, rm, nullptr, mean, invstd, 0),
                fn, "running_mean, running_var");
    CheckFailed(bnorm_finish_stats_f32(c, global, kEps, kMomentum, rm, rv, mean, invstd, 16), fn,
                "flags");
    CheckFailed(bnorm_finish_stats_f32(c, global, kEps, kMomentum, rm, rm + 1, mean, invstd, 0),
                fn, "running_var");
    CheckFailed(bnorm_finish_stats_f32(c, global, kEps, kMomentum, rm, rv,
                                       reinterpret_cast<float*>(global), invstd, 0),
                fn, "mean");
    bnorm_partial_stats one[3] = {global[0], global[1], {1, 0, 0}};
    CheckFailed(bnorm_finish_stats_f32(c, one, kEps, kMomentum, rm, rv, mean, invstd, 0), fn,
                "global[2].count");
    untouched();
  }
  SUBCASE("bnorm_normalize_f32") {
    const char* fn = "bnorm_normalize_f32";
    CheckFailed(bnorm_normalize_f32(nullptr, x.data(), y.data(), mean, invstd, gamma, nullptr, 0),
                fn, "shape");
    CheckFailed(bnorm_normalize_f32(&s, nullptr, y.data(), mean, invstd, gamma, nullptr, 0), fn,
                "x");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), nullptr, mean, invstd, gamma, nullptr, 0), fn,
                "y");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), y.data(), nullptr, invstd, gamma, nullptr, 0),
                fn, "mean");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), y.data(), mean, nullptr, gamma, nullptr, 0),
                fn, "invstd");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), x.data() + 1, mean, invstd, gamma, nullptr, 0),
                fn, "y");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), y.data() , mean, invstd, y.data() + 3, nullptr,
                                    0),
                fn, "y");
    CheckFailed(bnorm_normalize_f32(&s, x.data(), y.data(), mean, invstd, gamma, nullptr, 32),
                fn, "flags");
    untouched();
  }
  SUBCASE("bnorm_backward_sums_f32") {
    const char* fn = "bnorm_backward_sums_f32";
    CheckFailed(bnorm_backward_sums_f32(&s, nullptr, dy.data(), mean, invstd, nullptr, sum_dy,
                                        sum_dy_xhat, 0),
                fn, "x");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), nullptr, mean, invstd, nullptr, sum_dy,
                                        sum_dy_xhat, 0),
                fn, "dy");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), dy.data(), mean, nullptr, nullptr, sum_dy,
                                        sum_dy_xhat, 0),
                fn, "invstd");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), dy.data(), mean, invstd, nullptr, sum_dy,
                                        sum_dy_xhat, BNORM_FUSE_RELU),
                fn, "y");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), dy.data(), mean, invstd, nullptr, nullptr,
                                        sum_dy_xhat, 0),
                fn, "sum_dy");
    CheckFailed(bnorm_backward_sums_f32(&no_values, nullptr, nullptr, nullptr, nullptr, nullptr,
                                        sum_dy, nullptr, 0),
                fn, "sum_dy_xhat");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), dy.data(), mean, invstd, nullptr, sum_dy,
                                        sum_dy + 1, 0),
                fn, "sum_dy");
    CheckFailed(bnorm_backward_sums_f32(&s, x.data(), dy.data(), mean, invstd, nullptr, sum_dy,
                                        reinterpret_cast<double*>(mean), 0),
                fn, "sum_dy_xhat");
    untouched();
  }
  SUBCASE("bnorm_backward_dx_f32") {
    const char* fn = "bnorm_backward_dx_f32";
    auto call = [&](const bnorm_shape* shape, const double* sdy, const double* sdyx,
                    int64_t count, float* out_dx, float* out_dgamma, unsigned flags,
                    const float* yy = nullptr) {
      return bnorm_backward_dx_f32(shape, x.data(), dy.data(), mean, invstd, gamma, yy, sdy, sdyx,
                                   count, out_dx, out_dgamma, dbeta, flags);
    };
    CheckFailed(call(nullptr, sum_dy, sum_dy_xhat, 10, dx.data(), dgamma, 0), fn, "shape");
    CheckFailed(call(&s, nullptr, sum_dy_xhat, 10, dx.data(), dgamma, 0), fn, "sum_dy");
    CheckFailed(call(&s, sum_dy, nullptr, 10, dx.data(), dgamma, 0), fn, "sum_dy_xhat");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 9, dx.data(), dgamma, 0), fn, "global_count");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 0, dx.data(), dgamma, 0), fn, "global_count");
    CheckFailed(call(&no_values, sum_dy, sum_dy_xhat, 0, nullptr, dgamma, 0), fn,
                "global_count");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 10, dx.data(), dgamma, BNORM_FUSE_RELU), fn, "y");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 10, dx.data(), dgamma, 64), fn, "flags");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 10, dx.data() , reinterpret_cast<float*>(sum_dy), 0),
                fn, "dgamma");
    CheckFailed(call(&s, sum_dy, sum_dy_xhat, 10, dy.data() + 2, dgamma, 0), fn, "dx");
    untouched();
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
