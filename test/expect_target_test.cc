// Asserts which target this machine (or emulated CPU) dispatches to, for the cross-ISA
// lanes of tools/run.sh: each runs the suite under one QEMU_CPU and says what must run.
//   BNORM_EXPECT_TARGET     the best supported target, which must also be the active one
//                           when BNORM_TARGET is unset, e.g. "SVE2_128"
//   BNORM_EXPECT_SUPPORTED  optional: the whole supported list, best first, e.g.
//                           "SVE_256 SVE2 SVE NEON" (so that "every supported target"
//                           in the other tests means what the lane says)
//   BNORM_EXPECT_SVE_BITS   optional, aarch64 only: the SVE vector length in bits the
//                           process runs with (0: no SVE), from prctl(PR_SVE_GET_VL)
// Without BNORM_EXPECT_TARGET there is nothing to assert: exits 77 (meson: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/prctl.h>
#endif

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// Returns the names of `list` joined by single spaces.
std::string Normalized(const std::string& list) {
  std::string joined;
  for (const std::string& name : SplitNames(list.c_str()))
    joined += (joined.empty() ? "" : " ") + name;
  return joined;
}

#if defined(__aarch64__) && defined(__linux__)
// Returns the SVE vector length of this thread in bits, or 0 without SVE.
int SveBits() {
#ifndef PR_SVE_GET_VL
#define PR_SVE_GET_VL 51
#endif
  const int vl = prctl(PR_SVE_GET_VL, 0, 0, 0, 0);
  return vl < 0 ? 0 : (vl & 0xffff) * 8;
}
#endif

TEST_CASE("expect: the best supported target is the one the lane names, and it runs") {
  const std::string expected = Env("BNORM_EXPECT_TARGET");
  REQUIRE(!expected.empty());
  INFO("compiled: ", std::string(bnorm_compiled_targets()),
       "; supported: ", std::string(bnorm_supported_targets()),
       "; QEMU_CPU=", Env("QEMU_CPU"));
  const std::vector<std::string> supported = SupportedTargets();
  REQUIRE(!supported.empty());
  CHECK(supported[0] == expected);
  if (Env("BNORM_TARGET").empty()) CHECK(std::string(bnorm_active_target()) == expected);

  const std::string expected_list = Normalized(Env("BNORM_EXPECT_SUPPORTED"));
  if (!expected_list.empty()) CHECK(Normalized(bnorm_supported_targets()) == expected_list);

  // The kernels really run there: one call, checked against the reference.
  RestoreBestTarget restore;
  REQUIRE(bnorm_set_target(expected.c_str()) == bnorm_success);
  const bnorm_shape s = Shape(3, 17, 33, bnorm_nhwc);
  std::mt19937 rng = Rng(s, 90);
  const std::vector<float> x = RandomTensor(s, rng);
  std::vector<float> mean(s.c), var(s.c);
  REQUIRE(bnorm_moments_f32(&s, x.data(), mean.data(), var.data()) == bnorm_success);
  CheckMoments("mean", mean.data(), "var", var.data(), ref::Moments(s, x.data()), kVarRel);
  CHECK(std::string(bnorm_active_target()) == expected);
}

TEST_CASE("expect: the SVE vector length is the one the lane names") {
  const std::string bits = Env("BNORM_EXPECT_SVE_BITS");
  if (bits.empty()) return;
#if defined(__aarch64__) && defined(__linux__)
  INFO("QEMU_CPU=", Env("QEMU_CPU"));
  CHECK(SveBits() == std::atoi(bits.c_str()));
#else
  FAIL("BNORM_EXPECT_SVE_BITS is set, but this is not aarch64 Linux");
#endif
}

}  // namespace
}  // namespace test
}  // namespace bnorm

int main(int argc, char** argv) {
  const char* expected = std::getenv("BNORM_EXPECT_TARGET");
  if (expected == nullptr || expected[0] == '\0') {
    std::printf("BNORM_EXPECT_TARGET not set: nothing to assert (skipped)\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
