// Tests of the C++ layer (bnorm.hpp): results identical to the C calls, bnorm::Error
// carrying status and message, span sizes checked against the shape, empty spans as
// NULL, and the target helpers.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>

#include "bnorm/bnorm.hpp"
#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// Expects `f` to throw bnorm::Error with `status` and a message containing `part`.
void ExpectError(const std::string& what, const std::function<void()>& f, bnorm_status status,
                 const std::string& part) {
  INFO(what);
  bool thrown = false;
  try {
    f();
  } catch (const bnorm::Error& e) {
    thrown = true;
    INFO("message: ", std::string(e.what()));
    CHECK(e.status() == status);
    CHECK(std::string(e.what()).find(part) != std::string::npos);
    const std::runtime_error& base = e;  // an ordinary std::runtime_error too
    CHECK(std::string(base.what()) == e.what());
  }
  CHECK_MESSAGE(thrown, "no bnorm::Error thrown");
}

struct Data {
  bnorm::Shape shape;
  bnorm_shape cs;
  std::vector<float> x, dy, y, gamma, beta, mean, var, invstd;
};

Data MakeData(bnorm::Layout layout) {
  Data d;
  d.shape.n = 2;
  d.shape.c = 17;
  d.shape.spatial = 9;
  d.shape.layout = layout;
  d.cs = d.shape.c_shape();
  std::mt19937 rng = Rng(d.cs, 80);
  d.x = RandomTensor(d.cs, rng);
  d.dy = RandomTensor(d.cs, rng, 1);
  d.y = RandomTensor(d.cs, rng, 0.5);
  d.gamma = RandomSigned(d.shape.c, rng, 0.25, 2);
  d.beta = RandomVec(d.shape.c, rng, -2, 2);
  const ref::Stats st = ref::Moments(d.cs, d.x.data());
  d.mean = ToFloat(st.mean);
  d.var = ToFloat(st.var);
  for (double v : st.var) d.invstd.push_back(static_cast<float>(1 / std::sqrt(v + 1e-5)));
  return d;
}

TEST_CASE("cpp api: Shape and its C form") {
  bnorm::Shape s;
  s.n = 3;
  s.c = 5;
  s.spatial = 7;
  s.layout = bnorm::Layout::kNHWC;
  CHECK(s.count() == 21);
  CHECK(s.elements() == 105);
  const bnorm_shape cs = s.c_shape();
  CHECK(cs.n == 3);
  CHECK(cs.c == 5);
  CHECK(cs.spatial == 7);
  CHECK(cs.layout == bnorm_nhwc);
  CHECK(static_cast<unsigned>(bnorm::kFuseRelu) == BNORM_FUSE_RELU);
  CHECK(static_cast<unsigned>(bnorm::kRunningVarBiased) == BNORM_RUNNING_VAR_BIASED);
  CHECK(static_cast<unsigned>(bnorm::kSerial) == BNORM_SERIAL);
}

TEST_CASE("cpp api: every call gives the C call's results, bit for bit") {
  for (bnorm::Layout layout : {bnorm::Layout::kNCHW, bnorm::Layout::kNHWC}) {
    const Data d = MakeData(layout);
    INFO("shape ", ShapeString(d.cs));
    const size_t e = d.x.size(), c = d.shape.c;
    ForEachTarget([&](const std::string&) {
      {  // Moments
        std::vector<float> m1(c), v1(c), m2(c), v2(c);
        bnorm::Moments(d.shape, d.x, m1, v1);
        REQUIRE(bnorm_moments_f32(&d.cs, d.x.data(), m2.data(), v2.data()) == bnorm_success);
        CheckSameBits("mean", m1.data(), m2.data(), c);
        CheckSameBits("var", v1.data(), v2.data(), c);
      }
      {  // ForwardTraining, all optional buffers given, then all absent.
        std::vector<float> y1(e), y2(e), rm1(c, 0.5f), rm2(c, 0.5f), rv1(c, 2), rv2(c, 2), sm1(c),
            sm2(c), si1(c), si2(c);
        bnorm::ForwardTraining(d.shape, d.x, y1, d.gamma, d.beta, 1e-5f, 0.1f, rm1, rv1, sm1, si1,
                               bnorm::kFuseRelu);
        REQUIRE(bnorm_forward_training_f32(&d.cs, d.x.data(), y2.data(), d.gamma.data(),
                                           d.beta.data(), 1e-5f, 0.1f, rm2.data(), rv2.data(),
                                           sm2.data(), si2.data(),
                                           BNORM_FUSE_RELU) == bnorm_success);
        CheckSameBits("training y", y1.data(), y2.data(), e);
        CheckSameBits("running_mean", rm1.data(), rm2.data(), c);
        CheckSameBits("running_var", rv1.data(), rv2.data(), c);
        CheckSameBits("saved_mean", sm1.data(), sm2.data(), c);
        CheckSameBits("saved_invstd", si1.data(), si2.data(), c);
        bnorm::ForwardTraining(d.shape, d.x, y1, {}, {}, 1e-5f, 0.1f, {}, {}, {}, {});
        REQUIRE(bnorm_forward_training_f32(&d.cs, d.x.data(), y2.data(), nullptr, nullptr, 1e-5f,
                                           0.1f, nullptr, nullptr, nullptr, nullptr,
                                           0) == bnorm_success);
        CheckSameBits("training y (optional spans empty)", y1.data(), y2.data(), e);
      }
      {  // ForwardInference
        std::vector<float> y1(e), y2(e);
        bnorm::ForwardInference(d.shape, d.x, y1, d.gamma, {}, d.mean, d.var, 1e-3f);
        REQUIRE(bnorm_forward_inference_f32(&d.cs, d.x.data(), y2.data(), d.gamma.data(), nullptr,
                                            d.mean.data(), d.var.data(), 1e-3f,
                                            0) == bnorm_success);
        CheckSameBits("inference y", y1.data(), y2.data(), e);
      }
      {  // Fold and Affine
        std::vector<float> s1(c), t1(c), s2(c), t2(c), y1(e), y2(e);
        bnorm::Fold(d.gamma, d.beta, d.mean, d.var, 1e-5f, s1, t1);
        REQUIRE(bnorm_fold_f32(c, d.gamma.data(), d.beta.data(), d.mean.data(), d.var.data(), 1e-5f,
                               s2.data(), t2.data()) == bnorm_success);
        CheckSameBits("scale", s1.data(), s2.data(), c);
        CheckSameBits("shift", t1.data(), t2.data(), c);
        bnorm::Fold({}, {}, d.mean, d.var, 1e-5f, s1, t1);
        REQUIRE(bnorm_fold_f32(c, nullptr, nullptr, d.mean.data(), d.var.data(), 1e-5f, s2.data(),
                               t2.data()) == bnorm_success);
        CheckSameBits("scale (gamma/beta empty)", s1.data(), s2.data(), c);
        CheckSameBits("shift (gamma/beta empty)", t1.data(), t2.data(), c);
        bnorm::Affine(d.shape, d.x, y1, s1, t1, bnorm::kFuseRelu | bnorm::kSerial);
        REQUIRE(bnorm_affine_f32(&d.cs, d.x.data(), y2.data(), s2.data(), t2.data(),
                                 BNORM_FUSE_RELU) == bnorm_success);
        CheckSameBits("affine y", y1.data(), y2.data(), e);
      }
      {  // Backward, every gradient, then dx only, gamma and y empty.
        std::vector<float> dx1(e), dx2(e), dg1(c), dg2(c), db1(c), db2(c);
        bnorm::Backward(d.shape, d.x, d.dy, d.mean, d.invstd, d.gamma, d.y, dx1, dg1, db1,
                        bnorm::kFuseRelu);
        REQUIRE(bnorm_backward_f32(&d.cs, d.x.data(), d.dy.data(), d.mean.data(), d.invstd.data(),
                                   d.gamma.data(), d.y.data(), dx2.data(), dg2.data(), db2.data(),
                                   BNORM_FUSE_RELU) == bnorm_success);
        CheckSameBits("dx", dx1.data(), dx2.data(), e);
        CheckSameBits("dgamma", dg1.data(), dg2.data(), c);
        CheckSameBits("dbeta", db1.data(), db2.data(), c);
        bnorm::Backward(d.shape, d.x, d.dy, d.mean, d.invstd, {}, {}, dx1, {}, {});
        REQUIRE(bnorm_backward_f32(&d.cs, d.x.data(), d.dy.data(), d.mean.data(), d.invstd.data(),
                                   nullptr, nullptr, dx2.data(), nullptr, nullptr,
                                   0) == bnorm_success);
        CheckSameBits("dx (only)", dx1.data(), dx2.data(), e);
      }
    });
  }
}

TEST_CASE("cpp api: failures throw bnorm::Error with the C status and message") {
  const Data d = MakeData(bnorm::Layout::kNCHW);
  const size_t e = d.x.size(), c = d.shape.c;
  std::vector<float> y(e, 7.0f), s(c, 7.0f), t(c, 7.0f);
  ExpectError(
      "ForwardTraining eps 0",
      [&] { bnorm::ForwardTraining(d.shape, d.x, y, {}, {}, 0.0f, 0.1f, {}, {}, {}, {}); },
      bnorm_invalid_argument, "eps");
  ExpectError(
      "Fold eps -1", [&] { bnorm::Fold({}, {}, d.mean, d.var, -1.0f, s, t); },
      bnorm_invalid_argument, "eps");
  std::vector<float> rm(c, 0), rv(c, 1);
  ExpectError(
      "ForwardTraining momentum 2",
      [&] { bnorm::ForwardTraining(d.shape, d.x, y, {}, {}, 1e-5f, 2.0f, rm, rv, {}, {}); },
      bnorm_invalid_argument, "momentum");
  ExpectError(
      "Affine unknown flag", [&] { bnorm::Affine(d.shape, d.x, y, d.gamma, d.beta, 64u); },
      bnorm_invalid_argument, "flags");
  ExpectError(
      "Backward ReLU without y",
      [&] {
        std::vector<float> dx(e);
        bnorm::Backward(d.shape, d.x, d.dy, d.mean, d.invstd, {}, {}, dx, {}, {}, bnorm::kFuseRelu);
      },
      bnorm_invalid_argument, "y");
  bnorm::Shape bad = d.shape;
  bad.layout = static_cast<bnorm::Layout>(5);
  ExpectError(
      "Moments bad layout",
      [&] {
        std::vector<float> m(c), v(c);
        bnorm::Moments(bad, d.x, m, v);
      },
      bnorm_invalid_argument, "layout");
  // Nothing was written by the failed calls.
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 7.0f; }));
  CHECK(std::all_of(s.begin(), s.end(), [](float v) { return v == 7.0f; }));
  CHECK(std::all_of(rm.begin(), rm.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("cpp api: span sizes are checked against the shape") {
  const Data d = MakeData(bnorm::Layout::kNHWC);
  const size_t e = d.x.size(), c = d.shape.c;
  std::vector<float> x_short(d.x.begin(), d.x.end() - 1), x_long = d.x;
  x_long.push_back(1);
  std::vector<float> y(e, 7.0f), y_short(e - 1, 7.0f), m(c, 7.0f), v(c, 7.0f), m_short(c - 1, 7.0f),
      v_long(c + 1, 7.0f), g_short(c - 1, 1.0f), dx(e, 7.0f), dg(c, 7.0f);
  const bnorm_status kBad = bnorm_invalid_argument;
  ExpectError(
      "Moments x short", [&] { bnorm::Moments(d.shape, x_short, m, v); }, kBad, "x");
  ExpectError(
      "Moments x long", [&] { bnorm::Moments(d.shape, x_long, m, v); }, kBad, "x");
  ExpectError(
      "Moments mean short", [&] { bnorm::Moments(d.shape, d.x, m_short, v); }, kBad, "mean");
  ExpectError(
      "Moments var long", [&] { bnorm::Moments(d.shape, d.x, m, v_long); }, kBad, "var");
  ExpectError(
      "ForwardTraining y short",
      [&] { bnorm::ForwardTraining(d.shape, d.x, y_short, {}, {}, 1e-5f, 0.1f, {}, {}, {}, {}); },
      kBad, "y");
  ExpectError(
      "ForwardTraining gamma short (optional, non-empty)",
      [&] { bnorm::ForwardTraining(d.shape, d.x, y, g_short, {}, 1e-5f, 0.1f, {}, {}, {}, {}); },
      kBad, "gamma");
  ExpectError(
      "ForwardTraining saved_mean short",
      [&] { bnorm::ForwardTraining(d.shape, d.x, y, {}, {}, 1e-5f, 0.1f, {}, {}, m_short, v); },
      kBad, "saved_mean");
  ExpectError(
      "ForwardInference var long",
      [&] { bnorm::ForwardInference(d.shape, d.x, y, {}, {}, d.mean, v_long, 1e-5f); }, kBad,
      "var");
  ExpectError(
      "ForwardInference mean empty (required)",
      [&] { bnorm::ForwardInference(d.shape, d.x, y, {}, {}, {}, d.var, 1e-5f); }, kBad, "mean");
  ExpectError(
      "Fold var short", [&] { bnorm::Fold({}, {}, d.mean, m_short, 1e-5f, m, v); }, kBad, "var");
  ExpectError(
      "Fold scale long", [&] { bnorm::Fold({}, {}, d.mean, d.var, 1e-5f, v_long, v); }, kBad,
      "scale");
  ExpectError(
      "Affine shift short", [&] { bnorm::Affine(d.shape, d.x, y, d.gamma, m_short); }, kBad,
      "shift");
  ExpectError(
      "Backward dy short",
      [&] { bnorm::Backward(d.shape, d.x, x_short, d.mean, d.invstd, {}, {}, dx, dg, {}); }, kBad,
      "dy");
  ExpectError(
      "Backward dgamma short",
      [&] { bnorm::Backward(d.shape, d.x, d.dy, d.mean, d.invstd, {}, {}, dx, m_short, {}); }, kBad,
      "dgamma");
  ExpectError(
      "Backward y short (ReLU)",
      [&] {
        bnorm::Backward(d.shape, d.x, d.dy, d.mean, d.invstd, {}, y_short, dx, {}, {},
                        bnorm::kFuseRelu);
      },
      kBad, "y");
  // Nothing was written.
  for (const auto* buf : {&y, &y_short, &m, &v, &m_short, &v_long, &dx, &dg})
    CHECK(std::all_of(buf->begin(), buf->end(), [](float f) { return f == 7.0f; }));
}

TEST_CASE("cpp api: spans from vectors, arrays and pointer + size") {
  float arr[4] = {1, 2, 3, 4};
  bnorm::Span<float> a(arr);
  CHECK(a.size() == 4);
  CHECK(a.data() == arr);
  std::vector<float> v(3);
  bnorm::Span<const float> b(v);
  CHECK(b.size() == 3);
  CHECK(b.data() == v.data());
  bnorm::Span<float> p(v.data(), 2);
  CHECK(p.size() == 2);
  bnorm::Span<const float> empty;
  CHECK(empty.empty());
  CHECK(empty.data() == nullptr);
  // A 1x4x1 tensor from an array.
  bnorm::Shape s;
  s.n = 1;
  s.c = 4;
  s.spatial = 1;
  float scale[4] = {2, 2, 2, 2}, shift[4] = {1, 1, 1, 1}, y[4];
  bnorm::Affine(s, arr, y, scale, shift);
  CHECK(y[0] == 3.0f);
  CHECK(y[3] == 9.0f);
}

TEST_CASE("cpp api: target helpers") {
  RestoreBestTarget restore;
  CHECK(bnorm::ActiveTarget() == bnorm_active_target());
  CHECK(bnorm::CompiledTargets() == bnorm_compiled_targets());
  CHECK(bnorm::SupportedTargets() == bnorm_supported_targets());
  const std::vector<std::string> supported = SupportedTargets();
  for (const std::string& t : supported) {
    bnorm::SetTarget(t);
    CHECK(bnorm::ActiveTarget() == t);
  }
  bnorm::SetTarget("");
  CHECK(bnorm::ActiveTarget() == supported[0]);
  ExpectError(
      "SetTarget unknown", [] { bnorm::SetTarget("AVX9"); }, bnorm_invalid_argument, "AVX9");
  for (const char* name : {"NEON", "AVX3", "SVE", "SSE4"}) {
    if (std::find(supported.begin(), supported.end(), name) != supported.end()) continue;
    ExpectError(
        std::string("SetTarget ") + name, [name] { bnorm::SetTarget(name); }, bnorm_unsupported,
        name);
    break;
  }
  CHECK(bnorm::ActiveTarget() == supported[0]);
}

}  // namespace
}  // namespace test
}  // namespace bnorm
