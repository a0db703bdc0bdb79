// Runtime dispatch shared by every kernel translation unit: one process-wide active
// target (set by bnorm_set_target / BNORM_TARGET), mapped to an HWY_EXPORT table index.
#ifndef BNORM_LIB_KERNELS_DISPATCH_H_
#define BNORM_LIB_KERNELS_DISPATCH_H_

#include <cstdint>

#include "hwy/highway.h"

namespace bnorm {
namespace detail {

// Returns the active target as a Highway target bit (e.g. HWY_AVX2). Thread-safe;
// the first call reads BNORM_TARGET.
int64_t ActiveTargetBit();

// Whether the AVX3 kernels narrow float32 to bfloat16 with the CPU's VCVTNEPS2BF16
// (AVX512_BF16: Cooper Lake, Sapphire Rapids, Zen 4), unless BNORM_NATIVE_BF16=0.
// Read once.
bool NativeBF16();

// Returns the index into an HWY_EXPORT table for `target` (a single Highway target
// bit). `compiled` must be the caller's HWY_CHOSEN_TARGET_MASK_TARGETS, because the
// table layout is that of the calling translation unit.
inline size_t DispatchIndex(int64_t target, int64_t compiled) {
  const int64_t chosen = HWY_CHOSEN_TARGET_SHIFT(target) | HWY_CHOSEN_TARGET_MASK_SCALAR;
  return hwy::Num0BitsBelowLS1Bit_Nonzero64(static_cast<uint64_t>(chosen & compiled));
}

}  // namespace detail
}  // namespace bnorm

// Calls the FUNC_NAME of the active target; use only in the file holding HWY_EXPORT.
#define BNORM_DISPATCH(FUNC_NAME)                                                      \
  (*(HWY_DISPATCH_TABLE(FUNC_NAME)[::bnorm::detail::DispatchIndex(                     \
      ::bnorm::detail::ActiveTargetBit(), HWY_CHOSEN_TARGET_MASK_TARGETS)]))

#endif  // BNORM_LIB_KERNELS_DISPATCH_H_
