// Bad input (DESIGN.md "Bad input"): for every entry point and every rule, the status,
// that no buffer changed (bytewise, canaries included), and that bnorm_last_error()
// names the argument. Also: empty tensors succeed and write nothing, the valid flag
// bits are accepted by every operation, and the message is per thread.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <deque>
#include <functional>
#include <limits>
#include <thread>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

enum class Op { kMoments, kTraining, kInference, kFold, kAffine, kBackward };

std::string OpName(Op op) {
  switch (op) {
    case Op::kMoments:
      return "bnorm_moments_f32";
    case Op::kTraining:
      return "bnorm_forward_training_f32";
    case Op::kInference:
      return "bnorm_forward_inference_f32";
    case Op::kFold:
      return "bnorm_fold_f32";
    case Op::kAffine:
      return "bnorm_affine_f32";
    case Op::kBackward:
      return "bnorm_backward_f32";
  }
  return "?";
}

const Op kShapedOps[] = {Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward};
const Op kFlaggedOps[] = {Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward};

// Every argument of every entry point, valid by default: an NCHW tensor n=2 c=3
// spatial=5 with all optional buffers given. Tests change one argument and call.
struct Call {
  explicit Call(bnorm_shape sh = Shape(2, 3, 5, bnorm_nchw)) : shape(sh), c(sh.c) {
    const size_t e = static_cast<size_t>(std::max<int64_t>(ref::Elements(sh), 0));
    const size_t ch = static_cast<size_t>(std::max<int64_t>(sh.c, 0));
    std::mt19937 rng(7);
    auto tensor = [&](bool output) -> float* {
      buffers.emplace_back(e, buffers.size() % 4);
      if (!output) buffers.back().Fill(RandomVec(e, rng, 0.5, 2));
      return buffers.back().data();
    };
    auto channels = [&](bool output) -> float* {
      buffers.emplace_back(ch, buffers.size() % 4);
      if (!output) buffers.back().Fill(RandomVec(ch, rng, 0.5, 2));
      return buffers.back().data();
    };
    x = tensor(false);
    dy = tensor(false);
    y_in = tensor(false);
    y = tensor(true);
    dx = tensor(true);
    gamma = channels(false);
    beta = channels(false);
    mean = channels(false);
    var = channels(false);
    scale_in = channels(false);
    shift_in = channels(false);
    saved_mean_in = channels(false);
    saved_invstd_in = channels(false);
    running_mean = channels(false);
    running_var = channels(false);
    mean_out = channels(true);
    var_out = channels(true);
    saved_mean = channels(true);
    saved_invstd = channels(true);
    scale = channels(true);
    shift = channels(true);
    dgamma = channels(true);
    dbeta = channels(true);
    // Room to place buffers so that they overlap (tests point into it).
    buffers.emplace_back(4 * e + 4 * ch + 64, 0);
    arena = buffers.back().data();
    arena_size = buffers.back().size();
    buffers.back().Fill(RandomVec(arena_size, rng, 0.5, 2));
  }

  // Returns every buffer's storage, canaries included.
  std::vector<std::vector<uint32_t>> Snapshot() const {
    std::vector<std::vector<uint32_t>> all;
    for (const Buffer& b : buffers) all.push_back(b.Raw());
    return all;
  }

  bnorm_status Run(Op op) {
    switch (op) {
      case Op::kMoments:
        return bnorm_moments_f32(s, x, mean_out, var_out);
      case Op::kTraining:
        return bnorm_forward_training_f32(s, x, y, gamma, beta, eps, momentum, running_mean,
                                          running_var, saved_mean, saved_invstd, flags);
      case Op::kInference:
        return bnorm_forward_inference_f32(s, x, y, gamma, beta, mean, var, eps, flags);
      case Op::kFold:
        return bnorm_fold_f32(c, gamma, beta, mean, var, eps, scale, shift);
      case Op::kAffine:
        return bnorm_affine_f32(s, x, y, scale_in, shift_in, flags);
      case Op::kBackward:
        return bnorm_backward_f32(s, x, dy, saved_mean_in, saved_invstd_in, gamma, y_in, dx, dgamma,
                                  dbeta, flags);
    }
    return bnorm_internal_error;
  }

  bnorm_shape shape;
  const bnorm_shape* s = &shape;
  int64_t c;
  float eps = 1e-5f, momentum = 0.1f;
  unsigned flags = 0;
  std::deque<Buffer> buffers;  // stable addresses
  float *x, *dy, *y_in, *y, *dx, *gamma, *beta, *mean, *var, *scale_in, *shift_in, *saved_mean_in,
      *saved_invstd_in, *running_mean, *running_var, *mean_out, *var_out, *saved_mean,
      *saved_invstd, *scale, *shift, *dgamma, *dbeta, *arena;
  size_t arena_size;
};

bool IsIdent(char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }

// Returns whether `msg` contains `name` as a whole token (not inside a longer
// identifier: "mean" is not found in "saved_mean", "x" not in "exceeds").
bool NamesToken(const std::string& msg, const std::string& name) {
  for (size_t at = msg.find(name); at != std::string::npos; at = msg.find(name, at + 1)) {
    const bool left = at == 0 || !IsIdent(msg[at - 1]);
    const size_t end = at + name.size();
    const bool right = end >= msg.size() || !IsIdent(msg[end]);
    if (left && right) return true;
  }
  return false;
}

// Sets a sentinel message, so that a stale message is not mistaken for a fresh one.
void SetSentinelError() {
  REQUIRE(bnorm_set_target("sentinel-target-name") == bnorm_invalid_argument);
  REQUIRE(std::string(std::string(bnorm_last_error())).find("sentinel-target-name") !=
          std::string::npos);
}

// Applies `change` to a valid call of `op`, calls it, and checks: status `want`, no buffer
// touched, and a fresh message naming one of `names`.
void ExpectRejected(Op op, const std::string& what, const std::function<void(Call&)>& change,
                    bnorm_status want, std::vector<std::string> names,
                    bnorm_shape shape = Shape(2, 3, 5, bnorm_nchw)) {
  INFO(OpName(op), ": ", what);
  Call call(shape);
  change(call);
  const auto before = call.Snapshot();
  SetSentinelError();
  const bnorm_status got = call.Run(op);
  CHECK_MESSAGE(got == want, "status " << got << " (" << std::string(bnorm_status_string(got))
                                       << "), want " << want);
  CHECK_MESSAGE(call.Snapshot() == before, "a buffer was changed by the failed call");
  const std::string msg = bnorm_last_error();
  INFO("message: \"", msg, "\"");
  CHECK(msg.find("sentinel-target-name") == std::string::npos);
  bool named = false;
  std::string list;
  for (const std::string& n : names) {
    named = named || NamesToken(msg, n);
    list += (list.empty() ? "" : " or ") + n;
  }
  CHECK_MESSAGE(named, "the message does not name " << list);
}

// Checks that a call succeeds and touches no buffer.
void ExpectNoOp(Op op, const std::string& what, const std::function<void(Call&)>& change,
                bnorm_shape shape) {
  INFO(OpName(op), ": ", what, ", shape ", ShapeString(shape));
  Call call(shape);
  change(call);
  const auto before = call.Snapshot();
  const bnorm_status got = call.Run(op);
  CHECK_MESSAGE(got == bnorm_success, "status " << got << ": " << std::string(bnorm_last_error()));
  CHECK_MESSAGE(call.Snapshot() == before, "an empty call wrote something");
}

TEST_CASE("errors: the default arguments of every entry point are valid") {
  for (Op op :
       {Op::kMoments, Op::kTraining, Op::kInference, Op::kFold, Op::kAffine, Op::kBackward}) {
    INFO(OpName(op));
    Call call;
    CHECK_MESSAGE(call.Run(op) == bnorm_success, std::string(bnorm_last_error()));
    call.flags = BNORM_FUSE_RELU;
    CHECK_MESSAGE(call.Run(op) == bnorm_success, std::string(bnorm_last_error()));
  }
}

TEST_CASE("errors: every valid flag bit is accepted by every operation") {
  for (Op op : kFlaggedOps) {
    for (unsigned flags = 0; flags < 8; ++flags) {
      INFO(OpName(op), " flags ", flags);
      Call call;
      call.flags = flags;
      CHECK_MESSAGE(call.Run(op) == bnorm_success, std::string(bnorm_last_error()));
    }
  }
}

TEST_CASE("errors: NULL shape") {
  for (Op op : kShapedOps)
    ExpectRejected(op, "shape NULL", [](Call& k) { k.s = nullptr; }, bnorm_invalid_argument,
                   {"shape", "s"});
}

TEST_CASE("errors: NULL required buffers") {
  const bnorm_status kBad = bnorm_invalid_argument;
  ExpectRejected(Op::kMoments, "x NULL", [](Call& k) { k.x = nullptr; }, kBad, {"x"});
  ExpectRejected(Op::kMoments, "mean NULL", [](Call& k) { k.mean_out = nullptr; }, kBad, {"mean"});
  ExpectRejected(Op::kMoments, "var NULL", [](Call& k) { k.var_out = nullptr; }, kBad, {"var"});

  ExpectRejected(Op::kTraining, "x NULL", [](Call& k) { k.x = nullptr; }, kBad, {"x"});
  ExpectRejected(Op::kTraining, "y NULL", [](Call& k) { k.y = nullptr; }, kBad, {"y"});
  ExpectRejected(Op::kTraining, "running_var NULL, running_mean given",
                 [](Call& k) { k.running_var = nullptr; }, kBad, {"running_var", "running_mean"});
  ExpectRejected(Op::kTraining, "running_mean NULL, running_var given",
                 [](Call& k) { k.running_mean = nullptr; }, kBad, {"running_mean", "running_var"});

  ExpectRejected(Op::kInference, "x NULL", [](Call& k) { k.x = nullptr; }, kBad, {"x"});
  ExpectRejected(Op::kInference, "y NULL", [](Call& k) { k.y = nullptr; }, kBad, {"y"});
  ExpectRejected(Op::kInference, "mean NULL", [](Call& k) { k.mean = nullptr; }, kBad, {"mean"});
  ExpectRejected(Op::kInference, "var NULL", [](Call& k) { k.var = nullptr; }, kBad, {"var"});

  ExpectRejected(Op::kFold, "mean NULL", [](Call& k) { k.mean = nullptr; }, kBad, {"mean"});
  ExpectRejected(Op::kFold, "var NULL", [](Call& k) { k.var = nullptr; }, kBad, {"var"});
  ExpectRejected(Op::kFold, "scale NULL", [](Call& k) { k.scale = nullptr; }, kBad, {"scale"});
  ExpectRejected(Op::kFold, "shift NULL", [](Call& k) { k.shift = nullptr; }, kBad, {"shift"});

  ExpectRejected(Op::kAffine, "x NULL", [](Call& k) { k.x = nullptr; }, kBad, {"x"});
  ExpectRejected(Op::kAffine, "y NULL", [](Call& k) { k.y = nullptr; }, kBad, {"y"});
  ExpectRejected(Op::kAffine, "scale NULL", [](Call& k) { k.scale_in = nullptr; }, kBad, {"scale"});
  ExpectRejected(Op::kAffine, "shift NULL", [](Call& k) { k.shift_in = nullptr; }, kBad, {"shift"});

  ExpectRejected(Op::kBackward, "x NULL", [](Call& k) { k.x = nullptr; }, kBad, {"x"});
  ExpectRejected(Op::kBackward, "dy NULL", [](Call& k) { k.dy = nullptr; }, kBad, {"dy"});
  ExpectRejected(Op::kBackward, "saved_mean NULL", [](Call& k) { k.saved_mean_in = nullptr; }, kBad,
                 {"saved_mean"});
  ExpectRejected(Op::kBackward, "saved_invstd NULL", [](Call& k) { k.saved_invstd_in = nullptr; },
                 kBad, {"saved_invstd"});
  ExpectRejected(Op::kBackward, "y NULL with BNORM_FUSE_RELU",
                 [](Call& k) {
                   k.y_in = nullptr;
                   k.flags = BNORM_FUSE_RELU;
                 },
                 kBad, {"y"});
}

TEST_CASE("errors: negative dimensions") {
  for (Op op : kShapedOps) {
    for (int64_t bad : {int64_t{-1}, std::numeric_limits<int64_t>::min()}) {
      ExpectRejected(op, "n < 0", [bad](Call& k) { k.shape.n = bad; }, bnorm_invalid_argument,
                     {"shape->n"});
      ExpectRejected(op, "c < 0", [bad](Call& k) { k.shape.c = bad; }, bnorm_invalid_argument,
                     {"shape->c"});
      ExpectRejected(op, "spatial < 0", [bad](Call& k) { k.shape.spatial = bad; },
                     bnorm_invalid_argument, {"shape->spatial"});
    }
  }
  ExpectRejected(Op::kFold, "c < 0", [](Call& k) { k.c = -1; }, bnorm_invalid_argument, {"c"});
}

TEST_CASE("errors: element count times sizeof(float) overflowing int64") {
  const int64_t k31 = int64_t{1} << 31, k22 = int64_t{1} << 22, k62 = int64_t{1} << 62;
  struct Dims {
    int64_t n, c, spatial;
    const char* what;
  };
  const Dims kDims[] = {
      {k31, k31, 1, "n*c*spatial = 2^62: fits int64, but * 4 bytes does not"},
      {1, k31, k31, "c*spatial = 2^62 (n = 1)"},
      {k22, k22, k22, "n*c*spatial = 2^66"},
      {k62, 3, 5, "n*c = 3 * 2^62"},
      {std::numeric_limits<int64_t>::max(), 2, 2, "n = INT64_MAX"},
  };
  for (Op op : kShapedOps)
    for (const Dims& d : kDims)
      ExpectRejected(op, d.what,
                     [d](Call& k) {
                       k.shape.n = d.n;
                       k.shape.c = d.c;
                       k.shape.spatial = d.spatial;
                     },
                     bnorm_invalid_argument, {"shape", "shape->n", "shape->c", "shape->spatial"});
  ExpectRejected(Op::kFold, "c = 2^62 (c * 4 bytes overflows)", [k62](Call& k) { k.c = k62; },
                 bnorm_invalid_argument, {"c"});
}

TEST_CASE("errors: eps not finite or not > 0") {
  for (Op op : {Op::kTraining, Op::kInference, Op::kFold})
    for (float eps : {kNaN, kInf, -kInf, 0.0f, -0.0f, -1e-5f, -kNaN}) {
      INFO("eps ", eps);
      ExpectRejected(op, "bad eps", [eps](Call& k) { k.eps = eps; }, bnorm_invalid_argument,
                     {"eps"});
    }
}

TEST_CASE("errors: momentum not finite or outside [0, 1]") {
  for (float momentum : {kNaN, kInf, -kInf, -0.01f, 1.01f, -1.0f, 2.0f}) {
    INFO("momentum ", momentum);
    ExpectRejected(Op::kTraining, "bad momentum", [momentum](Call& k) { k.momentum = momentum; },
                   bnorm_invalid_argument, {"momentum"});
  }
  // The bounds themselves are valid.
  for (float momentum : {0.0f, 1.0f, -0.0f}) {
    Call call;
    call.momentum = momentum;
    CHECK_MESSAGE(call.Run(Op::kTraining) == bnorm_success, std::string(bnorm_last_error()));
  }
}

TEST_CASE("errors: training with count = n*spatial < 2") {
  for (const bnorm_shape& s : {Shape(1, 3, 1, bnorm_nchw), Shape(1, 3, 1, bnorm_nhwc),
                               Shape(0, 3, 5, bnorm_nchw), Shape(4, 3, 0, bnorm_nhwc)}) {
    INFO("shape ", ShapeString(s));
    ExpectRejected(
        Op::kTraining, "count < 2", [](Call&) {}, bnorm_invalid_argument,
        {"count", "n*spatial", "shape", "shape->n", "shape->spatial"}, s);
  }
}

TEST_CASE("errors: outputs partially overlapping inputs") {
  const bnorm_status kBad = bnorm_invalid_argument;
  const int64_t e = 2 * 3 * 5;  // elements of the default shape
  // Moments: mean/var inside or across x.
  ExpectRejected(Op::kMoments, "mean == x (c of the n*c*spatial values)",
                 [](Call& k) { k.mean_out = k.x; }, kBad, {"mean", "x"});
  ExpectRejected(Op::kMoments, "mean inside x", [](Call& k) { k.mean_out = k.x + 4; }, kBad,
                 {"mean", "x"});
  ExpectRejected(Op::kMoments, "var across the end of x",
                 [e](Call& k) {
                   k.x = k.arena;
                   k.var_out = k.arena + e - 1;
                 },
                 kBad, {"var", "x"});
  // Training.
  ExpectRejected(Op::kTraining, "y = x + 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.y = k.arena + 9;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kTraining, "y = x - 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.y = k.arena + 7;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kTraining, "saved_mean inside x", [](Call& k) { k.saved_mean = k.x + 2; },
                 kBad, {"saved_mean", "x"});
  ExpectRejected(Op::kTraining, "running_var inside x", [](Call& k) { k.running_var = k.x + 1; },
                 kBad, {"running_var", "x"});
  ExpectRejected(Op::kTraining, "y over gamma",
                 [e](Call& k) {
                   k.y = k.arena;
                   k.gamma = k.arena + e - 2;
                 },
                 kBad, {"y", "gamma"});
  // Inference.
  ExpectRejected(Op::kInference, "y = x + 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.y = k.arena + 9;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kInference, "y = x - 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.y = k.arena + 7;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kInference, "y over var",
                 [](Call& k) {
                   k.var = k.arena + 3;
                   k.y = k.arena + 4;
                 },
                 kBad, {"y", "var"});
  // Affine.
  ExpectRejected(Op::kAffine, "y = x + 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.y = k.arena + 9;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kAffine, "y = x - (e - 1): one element in common",
                 [e](Call& k) {
                   k.x = k.arena + e - 1;
                   k.y = k.arena;
                 },
                 kBad, {"y", "x"});
  ExpectRejected(Op::kAffine, "y over scale",
                 [](Call& k) {
                   k.y = k.arena;
                   k.scale_in = k.arena + 5;
                 },
                 kBad, {"y", "scale"});
  // Backward.
  ExpectRejected(Op::kBackward, "dx = dy + 1",
                 [](Call& k) {
                   k.dy = k.arena + 8;
                   k.dx = k.arena + 9;
                 },
                 kBad, {"dx", "dy"});
  ExpectRejected(Op::kBackward, "dx = x - 1",
                 [](Call& k) {
                   k.x = k.arena + 8;
                   k.dx = k.arena + 7;
                 },
                 kBad, {"dx", "x"});
  ExpectRejected(Op::kBackward, "dgamma inside x", [](Call& k) { k.dgamma = k.x + 1; }, kBad,
                 {"dgamma", "x"});
  ExpectRejected(Op::kBackward, "dbeta across the end of dy",
                 [e](Call& k) {
                   k.dy = k.arena;
                   k.dbeta = k.arena + e - 1;
                 },
                 kBad, {"dbeta", "dy"});
  ExpectRejected(Op::kBackward, "dx over saved_invstd",
                 [](Call& k) {
                   k.dx = k.arena;
                   k.saved_invstd_in = k.arena + 10;
                 },
                 kBad, {"dx", "saved_invstd"});
  // Fold: exact aliasing is allowed, partial is not.
  ExpectRejected(Op::kFold, "scale = gamma + 1",
                 [](Call& k) {
                   k.gamma = k.arena + 8;
                   k.scale = k.arena + 9;
                 },
                 kBad, {"scale", "gamma"});
  ExpectRejected(Op::kFold, "shift = mean - 1",
                 [](Call& k) {
                   k.mean = k.arena + 8;
                   k.shift = k.arena + 7;
                 },
                 kBad, {"shift", "mean"});
}

TEST_CASE("errors: exact aliasing is allowed where documented") {
  {
    Call k;
    k.y = k.x;
    CHECK_MESSAGE(k.Run(Op::kTraining) == bnorm_success, std::string(bnorm_last_error()));
    CHECK_MESSAGE(k.Run(Op::kInference) == bnorm_success, std::string(bnorm_last_error()));
    CHECK_MESSAGE(k.Run(Op::kAffine) == bnorm_success, std::string(bnorm_last_error()));
  }
  {
    Call k;
    k.dx = k.dy;
    CHECK_MESSAGE(k.Run(Op::kBackward) == bnorm_success, std::string(bnorm_last_error()));
    Call k2;
    k2.dx = k2.x;
    CHECK_MESSAGE(k2.Run(Op::kBackward) == bnorm_success, std::string(bnorm_last_error()));
  }
  {
    Call k;
    k.scale = k.gamma;
    k.shift = k.beta;
    CHECK_MESSAGE(k.Run(Op::kFold) == bnorm_success, std::string(bnorm_last_error()));
  }
}

TEST_CASE("errors: unknown layout") {
  for (Op op : kShapedOps)
    for (int layout : {2, -1, 100}) {
      INFO("layout ", layout);
      ExpectRejected(op, "bad layout",
                     [layout](Call& k) {
                       // Stored as a C caller would: an int outside the enumeration
                       // (a C++ static_cast to bnorm_layout would itself be undefined).
                       static_assert(sizeof(k.shape.layout) == sizeof(int), "layout is an int");
                       std::memcpy(&k.shape.layout, &layout, sizeof(int));
                     },
                     bnorm_invalid_argument, {"layout"});
    }
}

TEST_CASE("errors: unknown flag bits") {
  for (Op op : kFlaggedOps)
    for (unsigned flags : {8u, 16u, 0x80000000u, 8u | BNORM_FUSE_RELU, ~0u}) {
      INFO("flags ", flags);
      ExpectRejected(op, "bad flags", [flags](Call& k) { k.flags = flags; }, bnorm_invalid_argument,
                     {"flags"});
    }
}

TEST_CASE("errors: unknown or unsupported target names") {
  RestoreBestTarget restore;
  const std::string active = bnorm_active_target();
  for (const char* name : {"AVX9", "FOO", "x86", "AVX2 SSE4", "AVX2x"}) {
    INFO("name \"", std::string(name), "\"");
    CHECK(bnorm_set_target(name) == bnorm_invalid_argument);
    CHECK(std::string(std::string(bnorm_last_error())).find(name) != std::string::npos);
    CHECK(std::string(bnorm_active_target()) == active);
  }
  // Names Highway knows, that this build or CPU lacks (NEON on x86, AVX3 on a CPU
  // without AVX-512, ...).
  const std::vector<std::string> supported = SupportedTargets();
  int tried = 0;
  for (const char* name : {"AVX3", "AVX3_DL", "AVX2", "SSE4", "SSSE3", "SCALAR", "EMU128", "NEON",
                           "SVE", "SVE2", "SVE_256", "SVE2_128"}) {
    if (std::find(supported.begin(), supported.end(), name) != supported.end()) continue;
    INFO("name \"", std::string(name), "\"");
    ++tried;
    CHECK(bnorm_set_target(name) == bnorm_unsupported);
    CHECK(std::string(std::string(bnorm_last_error())).find(name) != std::string::npos);
    CHECK(std::string(bnorm_active_target()) == active);
  }
  CHECK(tried > 0);
}

TEST_CASE("errors: empty tensors succeed and write nothing") {
  for (bnorm_layout layout : kLayouts) {
    // c == 0: empty for every operation, training included.
    for (Op op : kShapedOps)
      ExpectNoOp(
          op, "c == 0", [](Call&) {}, Shape(2, 0, 5, layout));
    // count == 0 outside training.
    for (Op op : {Op::kMoments, Op::kInference, Op::kAffine, Op::kBackward}) {
      ExpectNoOp(
          op, "n == 0", [](Call&) {}, Shape(0, 3, 5, layout));
      ExpectNoOp(
          op, "spatial == 0", [](Call&) {}, Shape(2, 3, 0, layout));
      ExpectNoOp(
          op, "n == 0, ReLU", [](Call& k) { k.flags = BNORM_FUSE_RELU; }, Shape(0, 3, 5, layout));
    }
  }
  ExpectNoOp(
      Op::kFold, "c == 0", [](Call& k) { k.c = 0; }, Shape(2, 3, 5, bnorm_nchw));
}

TEST_CASE("errors: empty tensors accept NULL data pointers") {
  // c == 0: every buffer is empty, every pointer may be NULL.
  auto all_null = [](Call& k) {
    k.x = k.dy = k.y_in = k.y = k.dx = k.gamma = k.beta = k.mean = k.var = k.scale_in = k.shift_in =
        k.saved_mean_in = k.saved_invstd_in = k.running_mean = k.running_var = k.mean_out =
            k.var_out = k.saved_mean = k.saved_invstd = k.scale = k.shift = k.dgamma = k.dbeta =
                nullptr;
  };
  for (Op op : kShapedOps)
    ExpectNoOp(op, "c == 0, NULL buffers", all_null, Shape(2, 0, 5, bnorm_nhwc));
  ExpectNoOp(
      Op::kFold, "c == 0, NULL buffers",
      [&](Call& k) {
        all_null(k);
        k.c = 0;
      },
      Shape(2, 3, 5, bnorm_nchw));
  // count == 0 (outside training): the call does nothing, so no buffer is required:
  // the tensor-sized ones hold no value, and the per-channel ones are not touched.
  auto tensors_null = [](Call& k) { k.x = k.dy = k.y_in = k.y = k.dx = nullptr; };
  for (Op op : {Op::kMoments, Op::kInference, Op::kAffine, Op::kBackward}) {
    ExpectNoOp(op, "n == 0, NULL tensors", tensors_null, Shape(0, 3, 5, bnorm_nchw));
    ExpectNoOp(op, "spatial == 0, NULL tensors", tensors_null, Shape(4, 3, 0, bnorm_nhwc));
    ExpectNoOp(op, "n == 0, NULL buffers", all_null, Shape(0, 3, 5, bnorm_nhwc));
  }
}

TEST_CASE("errors: the message is per thread and not cleared by success") {
  SetSentinelError();
  std::string other;
  std::thread([&] {
    Call call;
    call.eps = -1;
    if (call.Run(Op::kInference) == bnorm_invalid_argument) other = bnorm_last_error();
  }).join();
  CHECK(NamesToken(other, "eps"));
  CHECK(std::string(std::string(bnorm_last_error())).find("sentinel-target-name") !=
        std::string::npos);
  Call call;
  REQUIRE(call.Run(Op::kAffine) == bnorm_success);
  CHECK(std::string(std::string(bnorm_last_error())).find("sentinel-target-name") !=
        std::string::npos);
}

TEST_CASE("errors: status strings") {
  const bnorm_status all[] = {bnorm_success, bnorm_invalid_argument, bnorm_unsupported,
                              bnorm_out_of_memory, bnorm_internal_error};
  std::vector<std::string> seen;
  for (bnorm_status s : all) {
    const char* str = bnorm_status_string(s);
    REQUIRE(str != nullptr);
    CHECK(std::string(str).size() > 0);
    CHECK(std::find(seen.begin(), seen.end(), str) == seen.end());
    seen.push_back(str);
  }
  CHECK(bnorm_status_string(static_cast<bnorm_status>(99)) != nullptr);
}

}  // namespace
}  // namespace test
}  // namespace bnorm
