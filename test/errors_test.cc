// Bad input (DESIGN.md "Bad input"): for every entry point and every rule, the status,
// that no buffer changed (bytewise, canaries included), and that bnorm_last_error()
// names the argument. Also: empty tensors succeed and write nothing, the valid flag
// bits are accepted by every operation, and the message is per thread. The "Bad input:"
// cases at the end take the rules one by one, in DESIGN.md's words, through every entry
// point including the channel slices, and check the whole message: one line, the
// function, the argument, the constraint and the value; and a failed allocation must
// leave the outputs unchanged too (operator new below can be told to fail).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <deque>
#include <functional>
#include <limits>
#include <new>
#include <thread>

#include <dlfcn.h>

#include "test/test_util.h"

// Allocation failure on demand, for the bnorm_out_of_memory path: while g_fail_in >= 0,
// the allocation that finds it at 0 throws std::bad_alloc. Only allocations made by
// libbnorm's own code count (on any thread): one failing inside oneTBB's thread
// bookkeeping can leave oneTBB spinning forever (see README, Guarantees), which is
// oneTBB's behaviour, not bnorm's.
static std::atomic<long> g_fail_in{-1};
static std::atomic<long> g_failed{0};

// Returns whether `caller` (a return address) is code of libbnorm.so.
static bool InBnorm(void* caller) {
  Dl_info info;
  return dladdr(caller, &info) != 0 && info.dli_fname != nullptr &&
         std::strstr(info.dli_fname, "libbnorm") != nullptr;
}

static void* Allocate(std::size_t size, void* caller) {
  if (g_fail_in.load(std::memory_order_relaxed) >= 0 && InBnorm(caller) &&
      g_fail_in.fetch_sub(1) == 0) {
    g_failed.fetch_add(1);
    throw std::bad_alloc();
  }
  void* p = std::malloc(size ? size : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new(std::size_t size) { return Allocate(size, __builtin_return_address(0)); }
void* operator new[](std::size_t size) { return Allocate(size, __builtin_return_address(0)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

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
    if (slice) {  // the _slice_f32 entry point on channels [c_begin, c_end); fold has none
      const int64_t cb = c_begin, ce = c_end;
      switch (op) {
        case Op::kMoments:
          return bnorm_moments_slice_f32(s, cb, ce, x, mean_out, var_out, flags);
        case Op::kTraining:
          return bnorm_forward_training_slice_f32(s, cb, ce, x, y, gamma, beta, eps, momentum,
                                                  running_mean, running_var, saved_mean,
                                                  saved_invstd, flags);
        case Op::kInference:
          return bnorm_forward_inference_slice_f32(s, cb, ce, x, y, gamma, beta, mean, var, eps,
                                                   flags);
        case Op::kAffine:
          return bnorm_affine_slice_f32(s, cb, ce, x, y, scale_in, shift_in, flags);
        case Op::kBackward:
          return bnorm_backward_slice_f32(s, cb, ce, x, dy, saved_mean_in, saved_invstd_in, gamma,
                                          y_in, dx, dgamma, dbeta, flags);
        case Op::kFold:
          break;
      }
    }
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
  bool slice = false;  // call the _slice_f32 entry point
  int64_t c_begin = 0, c_end = 0;
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

// ---------------------------------------------------------------------------------
// DESIGN.md "Bad input", rule by rule, through every entry point: the whole-tensor
// calls and the channel slices (on channels [1, 2) of the default c = 3, so that the
// buffers checked are visibly those of the whole tensor). Each case names its rule.

struct Entry {
  Op op;
  bool slice;
};

std::string EntryName(const Entry& e) {
  std::string name = OpName(e.op);
  if (e.slice) name.replace(name.size() - 4, 4, "_slice_f32");
  return name;
}

// Entry points of the operations in `ops`, whole and (except fold) slice.
std::vector<Entry> Entries(std::initializer_list<Op> ops) {
  std::vector<Entry> entries;
  for (Op op : ops) {
    entries.push_back({op, false});
    if (op != Op::kFold) entries.push_back({op, true});
  }
  return entries;
}
const std::initializer_list<Op> kAllOps = {Op::kMoments, Op::kTraining, Op::kInference,
                                           Op::kFold,    Op::kAffine,   Op::kBackward};

// What a broken rule must produce: the message names one of `names` (the argument),
// contains one of `constraint` (the rule, in its words) and `value` (what was given;
// "" when the rule has no value, as a NULL pointer).
struct Broken {
  std::vector<std::string> names;
  std::vector<std::string> constraint;
  std::string value;
};

// Applies `change` to a valid call of entry `e`, calls it, and checks: status `want`,
// no byte of any buffer changed, and a fresh one-line message "<function>: ..." that
// names the argument, the constraint and the value.
void ExpectBroken(const Entry& e, const std::string& what, const std::function<void(Call&)>& change,
                  bnorm_status want, const Broken& broken,
                  bnorm_shape shape = Shape(2, 3, 5, bnorm_nchw)) {
  const std::string fn = EntryName(e);
  INFO(fn, ": ", what);
  Call call(shape);
  call.slice = e.slice;
  call.c_begin = shape.c > 1 ? 1 : 0;
  call.c_end = shape.c > 1 ? 2 : std::max<int64_t>(shape.c, 0);
  change(call);
  const auto before = call.Snapshot();
  SetSentinelError();
  const bnorm_status got = call.Run(e.op);
  CHECK_MESSAGE(got == want, "status " << got << " (" << std::string(bnorm_status_string(got))
                                       << "), want " << want);
  CHECK_MESSAGE(call.Snapshot() == before, "a buffer was changed by the failed call");
  if (got != want) return;  // no message to check
  const std::string msg = bnorm_last_error();
  INFO("message: \"", msg, "\"");
  CHECK(msg.find("sentinel-target-name") == std::string::npos);
  CHECK_MESSAGE(msg.rfind(fn + ": ", 0) == 0, "the message does not start with \"" << fn << ": \"");
  CHECK_MESSAGE(msg.find('\n') == std::string::npos, "the message is not one line");
  bool named = false, constraint = false;
  for (const std::string& n : broken.names) named = named || NamesToken(msg, n);
  for (const std::string& k : broken.constraint)
    constraint = constraint || msg.find(k) != std::string::npos;
  CHECK_MESSAGE(named, "the message names none of the broken arguments");
  CHECK_MESSAGE(constraint, "the message does not state the constraint");
  if (!broken.value.empty())
    CHECK_MESSAGE(msg.find(broken.value) != std::string::npos,
                  "the message does not give the value \"" << broken.value << "\"");
}

// The default call of entry `e`, changed, succeeds.
void ExpectAccepted(const Entry& e, const std::string& what,
                    const std::function<void(Call&)>& change) {
  INFO(EntryName(e), ": ", what);
  Call call;
  call.slice = e.slice;
  call.c_begin = 1;
  call.c_end = 2;
  change(call);
  const bnorm_status got = call.Run(e.op);
  CHECK_MESSAGE(got == bnorm_success, "status " << got << ": " << std::string(bnorm_last_error()));
}

TEST_CASE("Bad input: null pointers where a buffer is required") {
  const Broken kNull{{}, {"NULL"}, ""};
  struct Required {
    Op op;
    const char* name;
    std::function<void(Call&)> change;
  };
  const Required kRequired[] = {
      {Op::kMoments, "x", [](Call& k) { k.x = nullptr; }},
      {Op::kMoments, "mean", [](Call& k) { k.mean_out = nullptr; }},
      {Op::kMoments, "var", [](Call& k) { k.var_out = nullptr; }},
      {Op::kTraining, "x", [](Call& k) { k.x = nullptr; }},
      {Op::kTraining, "y", [](Call& k) { k.y = nullptr; }},
      {Op::kInference, "x", [](Call& k) { k.x = nullptr; }},
      {Op::kInference, "y", [](Call& k) { k.y = nullptr; }},
      {Op::kInference, "mean", [](Call& k) { k.mean = nullptr; }},
      {Op::kInference, "var", [](Call& k) { k.var = nullptr; }},
      {Op::kFold, "mean", [](Call& k) { k.mean = nullptr; }},
      {Op::kFold, "var", [](Call& k) { k.var = nullptr; }},
      {Op::kFold, "scale", [](Call& k) { k.scale = nullptr; }},
      {Op::kFold, "shift", [](Call& k) { k.shift = nullptr; }},
      {Op::kAffine, "x", [](Call& k) { k.x = nullptr; }},
      {Op::kAffine, "y", [](Call& k) { k.y = nullptr; }},
      {Op::kAffine, "scale", [](Call& k) { k.scale_in = nullptr; }},
      {Op::kAffine, "shift", [](Call& k) { k.shift_in = nullptr; }},
      {Op::kBackward, "x", [](Call& k) { k.x = nullptr; }},
      {Op::kBackward, "dy", [](Call& k) { k.dy = nullptr; }},
      {Op::kBackward, "saved_mean", [](Call& k) { k.saved_mean_in = nullptr; }},
      {Op::kBackward, "saved_invstd", [](Call& k) { k.saved_invstd_in = nullptr; }},
      {Op::kBackward, "y (with BNORM_FUSE_RELU)",
       [](Call& k) {
         k.y_in = nullptr;
         k.flags = BNORM_FUSE_RELU;
       }},
  };
  for (const Required& r : kRequired) {
    Broken b = kNull;
    b.names = {std::string(r.name).substr(0, std::string(r.name).find(' '))};
    for (const Entry& e : Entries({r.op}))
      ExpectBroken(e, std::string(r.name) + " NULL", r.change, bnorm_invalid_argument, b);
  }
  // running_mean and running_var: both or neither.
  for (const Entry& e : Entries({Op::kTraining})) {
    ExpectBroken(e, "running_var NULL, running_mean given",
                 [](Call& k) { k.running_var = nullptr; }, bnorm_invalid_argument,
                 {{"running_mean", "running_var"}, {"NULL", "both"}, ""});
    ExpectBroken(e, "running_mean NULL, running_var given",
                 [](Call& k) { k.running_mean = nullptr; }, bnorm_invalid_argument,
                 {{"running_mean", "running_var"}, {"NULL", "both"}, ""});
  }
  // Optional buffers may be NULL.
  for (const Entry& e : Entries({Op::kTraining, Op::kInference, Op::kFold, Op::kBackward}))
    ExpectAccepted(e, "every optional buffer NULL", [](Call& k) {
      k.gamma = k.beta = k.running_mean = k.running_var = k.saved_mean = k.saved_invstd = k.y_in =
          k.dx = k.dgamma = k.dbeta = nullptr;
    });
}

TEST_CASE("Bad input: negative dimensions") {
  const int64_t kMin = std::numeric_limits<int64_t>::min();
  for (const Entry& e :
       Entries({Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward})) {
    for (int64_t bad : {int64_t{-1}, kMin}) {
      const std::string v = std::to_string(bad);
      ExpectBroken(e, "n = " + v, [bad](Call& k) { k.shape.n = bad; }, bnorm_invalid_argument,
                   {{"shape->n"}, {">= 0", "negative"}, v});
      ExpectBroken(e, "c = " + v, [bad](Call& k) { k.shape.c = bad; }, bnorm_invalid_argument,
                   {{"shape->c"}, {">= 0", "negative"}, v});
      ExpectBroken(e, "spatial = " + v, [bad](Call& k) { k.shape.spatial = bad; },
                   bnorm_invalid_argument, {{"shape->spatial"}, {">= 0", "negative"}, v});
    }
  }
  for (int64_t bad : {int64_t{-1}, kMin})
    ExpectBroken({Op::kFold, false}, "c = " + std::to_string(bad), [bad](Call& k) { k.c = bad; },
                 bnorm_invalid_argument, {{"c"}, {">= 0", "negative"}, std::to_string(bad)});
}

TEST_CASE("Bad input: n*c*spatial*sizeof(T) overflowing") {
  const int64_t k31 = int64_t{1} << 31, k62 = int64_t{1} << 62;
  struct Dims {
    int64_t n, c, spatial;
    const char* what;
  };
  const Dims kDims[] = {
      {k31, k31, 1, "n*c*spatial = 2^62: fits int64, * 4 bytes does not"},
      {1, k31, k31, "c*spatial = 2^62"},
      {k62, 3, 5, "n*spatial = 5 * 2^62"},
      {3, 5, std::numeric_limits<int64_t>::max(), "spatial = INT64_MAX"},
  };
  for (const Entry& e :
       Entries({Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward}))
    for (const Dims& d : kDims)
      ExpectBroken(e, d.what,
                   [d](Call& k) {
                     k.shape.n = d.n;
                     k.shape.c = d.c;
                     k.shape.spatial = d.spatial;
                   },
                   bnorm_invalid_argument,
                   {{"shape", "shape->n", "shape->c", "shape->spatial"},
                    {"overflow"},
                    std::to_string(d.n == 3 ? d.spatial : d.n)});
  ExpectBroken({Op::kFold, false}, "c = 2^62 (c * 4 bytes overflows)",
               [k62](Call& k) { k.c = k62; }, bnorm_invalid_argument,
               {{"c"}, {"overflow"}, std::to_string(k62)});
}

TEST_CASE(
    "Bad input: n*c*spatial*sizeof(T) overflowing, for the per-channel arrays of an empty tensor") {
  // n or spatial = 0 makes the tensor empty, but mean, var, gamma, ... still hold c
  // floats: c * 4 bytes must be a size, as fold checks for its c. (Accepting it also
  // computes c * 4 in signed int64: undefined behaviour, which UBSan reports.)
  const int64_t kBig = (int64_t{1} << 62) + 1;
  for (const Entry& e :
       Entries({Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward})) {
    for (bool spatial_zero : {false, true}) {
      ExpectBroken(e, spatial_zero ? "spatial = 0, c = 2^62 + 1" : "n = 0, c = 2^62 + 1",
                   [&](Call& k) {
                     k.shape.c = kBig;
                     (spatial_zero ? k.shape.spatial : k.shape.n) = 0;
                     k.c_begin = 0;
                     k.c_end = 1;
                   },
                   bnorm_invalid_argument,
                   {{"shape", "shape->c"}, {"overflow"}, std::to_string(kBig)});
    }
  }
}

TEST_CASE("Bad input: eps not finite or not > 0") {
  struct Eps {
    float eps;
    const char* text;  // as printf's %g writes it
  };
  const Eps kEps[] = {{kNaN, "nan"}, {kInf, "inf"},      {-kInf, "-inf"}, {0.0f, "0"},
                      {-0.0f, "-0"}, {-1e-5f, "-1e-05"}, {-kNaN, "nan"}};
  for (const Entry& e : Entries({Op::kTraining, Op::kInference, Op::kFold}))
    for (const Eps& bad : kEps)
      ExpectBroken(e, std::string("eps = ") + bad.text, [bad](Call& k) { k.eps = bad.eps; },
                   bnorm_invalid_argument, {{"eps"}, {"finite", "> 0"}, bad.text});
  // The smallest positive values are valid.
  for (const Entry& e : Entries({Op::kTraining, Op::kInference, Op::kFold}))
    for (float eps : {std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()})
      ExpectAccepted(e, "eps = " + Fmt(eps), [eps](Call& k) { k.eps = eps; });
}

TEST_CASE("Bad input: momentum not finite or outside [0, 1]") {
  struct Momentum {
    float momentum;
    const char* text;
  };
  const Momentum kMomentum[] = {{kNaN, "nan"},
                                {kInf, "inf"},
                                {-kInf, "-inf"},
                                {-0.01f, "-0.01"},
                                {1.01f, "1.01"},
                                {2.0f, "2"},
                                {std::nextafter(1.0f, 2.0f), "1"},
                                {-1e-30f, "-1e-30"}};
  for (const Entry& e : Entries({Op::kTraining}))
    for (const Momentum& bad : kMomentum)
      ExpectBroken(e, std::string("momentum = ") + bad.text,
                   [bad](Call& k) { k.momentum = bad.momentum; }, bnorm_invalid_argument,
                   {{"momentum"}, {"[0, 1]", "finite"}, bad.text});
  for (const Entry& e : Entries({Op::kTraining}))
    for (float momentum : {0.0f, -0.0f, 1.0f, 0.5f})
      ExpectAccepted(e, "momentum = " + Fmt(momentum),
                     [momentum](Call& k) { k.momentum = momentum; });
}

TEST_CASE("Bad input: training with count < 2") {
  for (const Entry& e : Entries({Op::kTraining}))
    for (const bnorm_shape& s : {Shape(1, 3, 1, bnorm_nchw), Shape(1, 3, 1, bnorm_nhwc),
                                 Shape(0, 3, 5, bnorm_nchw), Shape(4, 3, 0, bnorm_nhwc)}) {
      const std::string count = std::to_string(s.n * s.spatial);
      ExpectBroken(
          e, "count = " + count + ", " + ShapeString(s), [](Call&) {}, bnorm_invalid_argument,
          {{"shape", "count"}, {">= 2", "two"}, count}, s);
    }
}

TEST_CASE("Bad input: outputs that partially overlap inputs") {
  const Broken kOverlap{{}, {"overlap"}, ""};
  struct Overlap {
    Op op;
    const char* out;
    const char* in;
    std::function<void(Call&)> change;
  };
  const int64_t e = 2 * 3 * 5;
  const Overlap kOverlaps[] = {
      {Op::kMoments, "mean", "x", [](Call& k) { k.mean_out = k.x + 4; }},
      {Op::kMoments, "var", "mean", [](Call& k) { k.var_out = k.mean_out + 1; }},
      {Op::kTraining, "y", "x",
       [](Call& k) {
         k.x = k.arena + 8;
         k.y = k.arena + 9;
       }},
      {Op::kTraining, "y", "x",
       [e](Call& k) {
         k.x = k.arena + e - 1;
         k.y = k.arena;
       }},
      {Op::kTraining, "running_mean", "gamma", [](Call& k) { k.running_mean = k.gamma; }},
      {Op::kTraining, "saved_invstd", "running_var",
       [](Call& k) { k.saved_invstd = k.running_var; }},
      {Op::kInference, "y", "x",
       [](Call& k) {
         k.x = k.arena + 8;
         k.y = k.arena + 7;
       }},
      {Op::kInference, "y", "mean",
       [](Call& k) {
         k.y = k.arena;
         k.mean = k.arena + e - 1;
       }},
      {Op::kFold, "scale", "gamma",
       [](Call& k) {
         k.gamma = k.arena + 8;
         k.scale = k.arena + 9;
       }},
      {Op::kFold, "shift", "scale", [](Call& k) { k.shift = k.scale; }},
      {Op::kAffine, "y", "x",
       [](Call& k) {
         k.x = k.arena + 8;
         k.y = k.arena + 9;
       }},
      {Op::kAffine, "y", "shift",
       [](Call& k) {
         k.y = k.arena + 2;
         k.shift_in = k.arena;
       }},
      {Op::kBackward, "dx", "dy",
       [](Call& k) {
         k.dy = k.arena + 8;
         k.dx = k.arena + 9;
       }},
      {Op::kBackward, "dx", "y",
       [](Call& k) {
         k.y_in = k.arena + 8;
         k.dx = k.arena + 7;
       }},
      {Op::kBackward, "dgamma", "dbeta", [](Call& k) { k.dbeta = k.dgamma + 2; }},
  };
  for (const Overlap& o : kOverlaps) {
    Broken b = kOverlap;
    b.names = {o.out, o.in};
    for (const Entry& en : Entries({o.op}))
      ExpectBroken(en, std::string(o.out) + " overlaps " + o.in, o.change, bnorm_invalid_argument,
                   b);
  }
  // Exact in place is allowed (y == x, dx == dy, dx == x; fold's per-channel outputs on
  // its inputs); so are buffers that touch without overlapping, and inputs that overlap.
  for (const Entry& en : Entries({Op::kTraining, Op::kInference, Op::kAffine}))
    ExpectAccepted(en, "y == x", [](Call& k) { k.y = k.x; });
  for (const Entry& en : Entries({Op::kBackward})) {
    ExpectAccepted(en, "dx == dy", [](Call& k) { k.dx = k.dy; });
    ExpectAccepted(en, "dx == x", [](Call& k) { k.dx = k.x; });
  }
  ExpectAccepted({Op::kFold, false}, "scale == gamma, shift == beta", [](Call& k) {
    k.scale = k.gamma;
    k.shift = k.beta;
  });
  for (const Entry& en : Entries({Op::kAffine}))
    ExpectAccepted(en, "y right after x, scale inside x", [e](Call& k) {
      k.x = k.arena;
      k.y = k.arena + e;
      k.scale_in = k.arena + 3;
    });
}

TEST_CASE("Bad input: an unknown layout") {
  for (const Entry& e :
       Entries({Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward}))
    for (int layout : {2, -1, 1000}) {
      ExpectBroken(e, "layout " + std::to_string(layout),
                   [layout](Call& k) { std::memcpy(&k.shape.layout, &layout, sizeof(int)); },
                   bnorm_invalid_argument,
                   {{"shape->layout", "layout"}, {"bnorm_nchw"}, std::to_string(layout)});
    }
}

TEST_CASE("Bad input: an unknown flag bit") {
  struct Flags {
    unsigned flags;
    const char* text;
  };
  const Flags kFlags[] = {{8u, "0x8"}, {0x80000000u, "0x80000000"}, {8u | BNORM_FUSE_RELU, "0x8"}};
  // Every entry point with a flags argument: bnorm_moments_f32 and bnorm_fold_f32 have none.
  for (Op op : {Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward})
    for (bool slice : {false, true}) {
      if (op == Op::kMoments && !slice) continue;
      for (const Flags& f : kFlags)
        ExpectBroken({op, slice}, std::string("flags ") + f.text,
                     [f](Call& k) { k.flags = f.flags; }, bnorm_invalid_argument,
                     {{"flags"}, {"unknown"}, f.text});
    }
}

TEST_CASE("Bad input: an unknown target name") {
  RestoreBestTarget restore;
  const std::string active = bnorm_active_target();
  for (const char* name : {"AVX9", "avx2 ", "SSE", "x86-64", "AVX2,SSE4"}) {
    INFO("name \"", std::string(name), "\"");
    SetSentinelError();
    CHECK(bnorm_set_target(name) == bnorm_invalid_argument);
    const std::string msg = bnorm_last_error();
    INFO("message: \"", msg, "\"");
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(NamesToken(msg, "target"));
    CHECK(msg.find("unknown") != std::string::npos);
    CHECK(msg.find(std::string("\"") + name + "\"") != std::string::npos);
    CHECK(std::string(bnorm_active_target()) == active);
  }
}

TEST_CASE("Bad input: a channel slice outside 0 <= c_begin <= c_end <= c") {
  struct Range {
    int64_t begin, end;
  };
  const Range kRanges[] = {{-1, 2},
                           {2, 1},
                           {0, 4},
                           {3, 4},
                           {std::numeric_limits<int64_t>::min(), 0},
                           {0, std::numeric_limits<int64_t>::max()}};
  for (Op op : {Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward})
    for (const Range& r : kRanges)
      ExpectBroken({op, true}, "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")",
                   [r](Call& k) {
                     k.c_begin = r.begin;
                     k.c_end = r.end;
                   },
                   bnorm_invalid_argument, {{"c_begin", "c_end"}, {"<="}, std::to_string(r.begin)});
}

TEST_CASE(
    "Bad input: empty tensors (c == 0, or count == 0 outside training) succeed and do nothing") {
  for (const Entry& e : Entries(kAllOps)) {
    INFO(EntryName(e));
    for (bnorm_layout layout : kLayouts) {
      std::vector<bnorm_shape> shapes = {Shape(2, 0, 5, layout)};
      if (e.op != Op::kTraining) {
        shapes.push_back(Shape(0, 3, 5, layout));
        shapes.push_back(Shape(2, 3, 0, layout));
      }
      for (const bnorm_shape& s : shapes) {
        INFO("shape ", ShapeString(s));
        Call call(s);
        call.slice = e.slice;
        call.c_begin = 0;
        call.c_end = s.c;
        if (e.op == Op::kFold) call.c = 0;
        const auto before = call.Snapshot();
        CHECK_MESSAGE(call.Run(e.op) == bnorm_success, std::string(bnorm_last_error()));
        CHECK_MESSAGE(call.Snapshot() == before, "an empty call wrote something");
      }
    }
  }
  // An empty slice of a non-empty tensor, too.
  for (Op op : {Op::kMoments, Op::kTraining, Op::kInference, Op::kAffine, Op::kBackward}) {
    INFO(EntryName({op, true}), " on channels [2, 2)");
    Call call;
    call.slice = true;
    call.c_begin = call.c_end = 2;
    const auto before = call.Snapshot();
    CHECK_MESSAGE(call.Run(op) == bnorm_success, std::string(bnorm_last_error()));
    CHECK_MESSAGE(call.Snapshot() == before, "an empty slice wrote something");
  }
}

TEST_CASE("Bad input: NaN and Inf in the data are data, not errors") {
  for (const Entry& e : Entries(kAllOps))
    ExpectAccepted(e, "NaN and Inf in every input", [](Call& k) {
      for (float* p : {k.x, k.dy, k.y_in}) {
        p[0] = kNaN;
        p[7] = kInf;
        p[11] = -kInf;
      }
      for (float* p : {k.gamma, k.beta, k.mean, k.var, k.scale_in, k.shift_in, k.saved_mean_in,
                       k.saved_invstd_in, k.running_mean, k.running_var}) {
        p[0] = kNaN;
        p[1] = kInf;
      }
    });
}

// Starts oneTBB's arena and workers for the calling thread with a call that needs no
// scratch (affine on a planes tensor): the allocations below are then bnorm's own.
// (Failing one of oneTBB's own start-up allocations can leave it without workers and a
// later parallel call spinning forever: not something bnorm can report.)
void WarmThreads() {
  static const std::vector<float> x(1 << 17, 1.0f), one(1, 1.0f), zero(1, 0.0f);
  static std::vector<float> y(1 << 17);
  const bnorm_shape s = Shape(1, 1, 1 << 17, bnorm_nchw);
  REQUIRE(bnorm_affine_f32(&s, x.data(), y.data(), one.data(), zero.data(), 0) == bnorm_success);
}

TEST_CASE("Bad input: a failed allocation is bnorm_out_of_memory, and nothing is written") {
  // DESIGN.md: "on any failure returns a status, leaves every output unchanged". Each
  // call runs on a fresh thread (empty per-thread scratch) with the k-th allocation
  // failing, k = 0, 1, ... until the call needs no more than k allocations.
  WarmThreads();
  long injected = 0, refused = 0;  // failures made, calls that returned out of memory
  for (const Entry& e : Entries(kAllOps)) {
    for (const bnorm_shape& shape :
         {Shape(2, 3, 5, bnorm_nchw), Shape(2, 3, 5, bnorm_nhwc), Shape(3, 40, 1000, bnorm_nhwc),
          Shape(1, 2, 300000, bnorm_nchw)}) {
      for (long k = 0; k < 64; ++k) {
        INFO(EntryName(e), ", shape ", ShapeString(shape), ", allocation ", k, " fails");
        Call call(shape);
        call.slice = e.slice;
        call.c_begin = 0;
        call.c_end = shape.c;
        const auto before = call.Snapshot();
        bnorm_status got = bnorm_success;
        std::string msg;
        g_failed = 0;
        std::thread([&] {
          WarmThreads();
          g_fail_in = k;
          got = call.Run(e.op);
          g_fail_in = -1;
          msg = bnorm_last_error();
        }).join();
        if (g_failed == 0) {  // the call made fewer than k + 1 allocations: done
          CHECK_MESSAGE(got == bnorm_success, msg);
          break;
        }
        injected += g_failed;
        refused += got == bnorm_out_of_memory;
        CHECK_MESSAGE((got == bnorm_out_of_memory || got == bnorm_success),
                      "status " << got << ": " << msg);
        if (got == bnorm_out_of_memory) {
          CHECK_MESSAGE(call.Snapshot() == before, "a call that failed wrote to a buffer");
          CHECK_MESSAGE(msg.rfind(EntryName(e) + ": ", 0) == 0, "message \"" << msg << "\"");
        }
      }
    }
  }
  // The injection must have reached libbnorm's scratch allocations.
  CHECK(injected > 0);
  CHECK(refused > 0);
}

}  // namespace
}  // namespace test
}  // namespace bnorm
