// Target selection: which Highway target the kernels dispatch to, by name, from
// bnorm_set_target or the BNORM_TARGET environment variable.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <strings.h>

#include "hwy/highway.h"
#include "lib/api/status.h"
#include "lib/kernels/dispatch.h"
#include "lib/kernels/kernels.h"

namespace bnorm {
namespace detail {
namespace {

// Returns the targets compiled into the library, as a mask of Highway target bits.
int64_t CompiledTargets() { return HWY_TARGETS; }

// Returns the compiled targets this CPU can run.
int64_t RunnableTargets() { return hwy::SupportedTargets() & CompiledTargets(); }

// Returns the best (lowest-bit) target of a non-empty mask.
int64_t Best(int64_t mask) { return mask & -mask; }

// Returns the space-separated names of the targets in `mask`, best first.
std::string Names(int64_t mask) {
  std::string names;
  for (int64_t rest = mask; rest != 0; rest &= rest - 1) {
    if (!names.empty()) names += ' ';
    names += hwy::TargetName(Best(rest));
  }
  return names;
}

// Every target name Highway 1.0.3 knows, on any architecture (hwy::TargetName names
// only those of the architecture being compiled).
struct KnownTarget {
  int64_t bit;
  const char* name;
};
constexpr KnownTarget kKnownTargets[] = {
    {HWY_AVX3_DL, "AVX3_DL"}, {HWY_AVX3, "AVX3"},         {HWY_AVX2, "AVX2"},
    {HWY_SSE4, "SSE4"},       {HWY_SSSE3, "SSSE3"},       {HWY_SVE2_128, "SVE2_128"},
    {HWY_SVE_256, "SVE_256"}, {HWY_SVE2, "SVE2"},         {HWY_SVE, "SVE"},
    {HWY_NEON, "NEON"},       {HWY_RVV, "RVV"},           {HWY_PPC8, "PPC8"},
    {HWY_WASM_EMU256, "WASM_EMU256"}, {HWY_WASM, "WASM"}, {HWY_EMU128, "EMU128"},
    {HWY_SCALAR, "SCALAR"},
};

// Parses `name` into a target bit: 0 selects the best runnable target.
bnorm_status Resolve(const char* name, int64_t* target) {
  if (name == nullptr || name[0] == '\0') {
    *target = Best(RunnableTargets());
    return bnorm_success;
  }
  for (const KnownTarget& known : kKnownTargets) {
    if (strcasecmp(known.name, name) != 0) continue;
    if ((CompiledTargets() & known.bit) == 0) {
      return SetError(bnorm_unsupported,
                      "target: \"%s\" is not compiled into this build (compiled: %s)", name,
                      Names(CompiledTargets()).c_str());
    }
    if ((RunnableTargets() & known.bit) == 0) {
      return SetError(bnorm_unsupported,
                      "target: \"%s\" is not supported by this CPU (supported: %s)", name,
                      Names(RunnableTargets()).c_str());
    }
    *target = known.bit;
    return bnorm_success;
  }
  return SetError(bnorm_invalid_argument, "target: unknown target name \"%s\" (compiled: %s)", name,
                  Names(CompiledTargets()).c_str());
}

// Returns the target chosen at start-up: BNORM_TARGET if set and valid, else the best.
int64_t InitialTarget() {
  int64_t target = Best(RunnableTargets());
  const char* env = std::getenv("BNORM_TARGET");
  if (env != nullptr && Resolve(env, &target) != bnorm_success) {
    std::fprintf(stderr, "bnorm: BNORM_TARGET ignored, using %s: %s\n",
                 hwy::TargetName(Best(RunnableTargets())), bnorm_last_error());
    target = Best(RunnableTargets());
  }
  return target;
}

std::atomic<int64_t>& Active() {
  static std::atomic<int64_t> active{InitialTarget()};
  return active;
}

}  // namespace

int64_t ActiveTargetBit() { return Active().load(std::memory_order_relaxed); }

bool NativeBF16() {
  static const bool native = [] {
    const char* env = std::getenv("BNORM_NATIVE_BF16");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
#if HWY_ARCH_X86 && (defined(__GNUC__) || defined(__clang__))
    return __builtin_cpu_supports("avx512bf16") != 0;
#else
    return false;
#endif
  }();
  return native;
}

}  // namespace detail
}  // namespace bnorm

using bnorm::detail::Names;

extern "C" {

const char* bnorm_active_target(void) {
  // The name of the code the kernels really dispatch to, as they report it.
  return hwy::TargetName(bnorm::detail::DispatchedTarget());
}

const char* bnorm_compiled_targets(void) {
  static const std::string names = Names(bnorm::detail::CompiledTargets());
  return names.c_str();
}

const char* bnorm_supported_targets(void) {
  static const std::string names = Names(bnorm::detail::RunnableTargets());
  return names.c_str();
}

bnorm_status bnorm_set_target(const char* name) {
  int64_t target = 0;
  const bnorm_status status = bnorm::detail::Resolve(name, &target);
  if (status == bnorm_success) bnorm::detail::Active().store(target);
  return status;
}

}  // extern "C"

namespace bnorm {
namespace detail {

int64_t DispatchedTarget() {
  const int64_t target = StatsTarget();
  return target == AffineTarget() && target == BackwardTarget() ? target : 0;
}

}  // namespace detail
}  // namespace bnorm
