// Dispatch: the target lists, selecting every supported target by name (and checking
// that dispatch really switched), NULL/"" for the best, and BNORM_TARGET. The
// environment test case comes first in this file so that, run alone (meson test
// targets_env_*), it sees the process's first call into bnorm.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

std::string Upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

TEST_CASE("targets: BNORM_TARGET selects the target at the first call") {
  const char* env = std::getenv("BNORM_TARGET");
  if (env == nullptr || env[0] == '\0') {
    MESSAGE("BNORM_TARGET not set: nothing to check");
    return;
  }
  const std::string wanted = Upper(env);
  const std::vector<std::string> supported = SupportedTargets();
  INFO("BNORM_TARGET=", std::string(env), ", supported: ", std::string(bnorm_supported_targets()));
  REQUIRE(!supported.empty());
  if (std::find(supported.begin(), supported.end(), wanted) == supported.end()) {
    MESSAGE("BNORM_TARGET names a target this machine lacks: the best one runs");
    CHECK(std::string(bnorm_active_target()) == supported[0]);
    return;
  }
  CHECK(std::string(bnorm_active_target()) == wanted);
  // And the kernels run there.
  const bnorm_shape s = Shape(2, 17, 33, bnorm_nhwc);
  std::mt19937 rng = Rng(s, 70);
  const std::vector<float> x = RandomTensor(s, rng);
  std::vector<float> mean(s.c), var(s.c);
  REQUIRE(bnorm_moments_f32(&s, x.data(), mean.data(), var.data()) == bnorm_success);
  CheckMoments("mean", mean.data(), "var", var.data(), ref::Moments(s, x.data()), kVarRel);
  CHECK(std::string(bnorm_active_target()) == wanted);
}

TEST_CASE("targets: the lists are well formed") {
  const std::vector<std::string> compiled = SplitNames(bnorm_compiled_targets());
  const std::vector<std::string> supported = SupportedTargets();
  INFO("compiled: ", std::string(bnorm_compiled_targets()),
       "; supported: ", std::string(bnorm_supported_targets()));
  REQUIRE(!compiled.empty());
  REQUIRE(!supported.empty());
  // Supported is a subsequence of compiled (both best first), without duplicates.
  size_t at = 0;
  for (const std::string& t : supported) {
    while (at < compiled.size() && compiled[at] != t) ++at;
    CHECK_MESSAGE(at < compiled.size(), t << " is supported but not compiled, or out of order");
    ++at;
  }
  for (size_t i = 0; i < compiled.size(); ++i)
    for (size_t j = i + 1; j < compiled.size(); ++j) CHECK(compiled[i] != compiled[j]);
  // With no selection made, the best supported target runs.
  CHECK(std::string(bnorm_active_target()) == supported[0]);
}

TEST_CASE("targets: every supported target can be selected, and dispatch switches") {
  RestoreBestTarget restore;
  const std::vector<std::string> supported = SupportedTargets();
  const bnorm_shape s = Shape(3, 7, 19, bnorm_nchw);
  std::mt19937 rng = Rng(s, 71);
  const std::vector<float> x = RandomTensor(s, rng);
  const ref::Stats want = ref::Moments(s, x.data());
  // In both directions, so that each switch is a real change.
  std::vector<std::string> order = supported;
  order.insert(order.end(), supported.rbegin(), supported.rend());
  for (const std::string& t : order) {
    INFO("target ", t);
    REQUIRE(bnorm_set_target(t.c_str()) == bnorm_success);
    CHECK(std::string(bnorm_active_target()) == t);
    std::vector<float> mean(s.c), var(s.c);
    REQUIRE(bnorm_moments_f32(&s, x.data(), mean.data(), var.data()) == bnorm_success);
    CheckMoments("mean", mean.data(), "var", var.data(), want, kVarRel);
    CHECK(std::string(bnorm_active_target()) == t);
  }
}

TEST_CASE("targets: names are case-insensitive") {
  RestoreBestTarget restore;
  for (const std::string& t : SupportedTargets()) {
    std::string lower = t;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    INFO("name ", lower);
    REQUIRE(bnorm_set_target(lower.c_str()) == bnorm_success);
    CHECK(std::string(bnorm_active_target()) == t);
  }
}

TEST_CASE("targets: NULL and \"\" select the best supported target") {
  RestoreBestTarget restore;
  const std::vector<std::string> supported = SupportedTargets();
  REQUIRE(!supported.empty());
  for (const char* best : {static_cast<const char*>(nullptr), ""}) {
    REQUIRE(bnorm_set_target(supported.back().c_str()) == bnorm_success);
    REQUIRE(std::string(bnorm_active_target()) == supported.back());
    CHECK(bnorm_set_target(best) == bnorm_success);
    CHECK(std::string(bnorm_active_target()) == supported[0]);
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
