// Per-target building blocks shared by the kernels: loads and stores of partial
// vectors that never touch memory past the end, a vector walk over an output run with
// optional non-temporal stores, and the walk over one NCHW channel's segments.

// Per-target include guard (see hwy/examples/skeleton-inl.h).
#if defined(BNORM_LIB_KERNELS_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNORM_LIB_KERNELS_COMMON_INL_H_
#undef BNORM_LIB_KERNELS_COMMON_INL_H_
#else
#define BNORM_LIB_KERNELS_COMMON_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>

#include <type_traits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "lib/kernels/dispatch.h"
#include "lib/kernels/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Most lanes of any vector of this target (bound for stack buffers).
constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

using detail::kTermsPerLane;

// Returns the values per NCHW block: kBlock, or fewer on narrow vectors (four chains
// of Lanes(d) each). A power of two, so chunks (multiples of kBlock) hold whole blocks.
template <class D>
HWY_INLINE int64_t PlaneBlock(D d) {
  return HWY_MIN(detail::kBlock, kTermsPerLane * 4 * static_cast<int64_t>(hn::Lanes(d)));
}


// Returns lanes [0, count) from p and `pad` in the others; reads only p[0, count).
// Precondition: count <= Lanes(d).
template <class D>
HWY_INLINE hn::Vec<D> LoadPart(D d, const float* HWY_RESTRICT p, size_t count, float pad) {
  const size_t N = hn::Lanes(d);
  if (count == N) return hn::LoadU(d, p);
#if HWY_MEM_OPS_MIGHT_FAULT
  // Masked loads may fault here: go through a buffer, one lane at a time.
  HWY_ALIGN float buf[kMaxLanes];
  for (size_t i = 0; i < N; ++i) buf[i] = i < count ? p[i] : pad;
  return hn::Load(d, buf);
#else
  const auto mask = hn::FirstN(d, count);
  return hn::IfThenElse(mask, hn::MaskedLoad(mask, d, p), hn::Set(d, pad));
#endif
}

// Stores lanes [0, count) of v to p; writes only p[0, count). count <= Lanes(d).
template <class D, class Tag = float>
HWY_INLINE void StorePart(D d, hn::Vec<D> v, float* HWY_RESTRICT p, size_t count, Tag = Tag()) {
  if (count == hn::Lanes(d)) return hn::StoreU(v, d, p);
#if HWY_MEM_OPS_MIGHT_FAULT
  HWY_ALIGN float buf[kMaxLanes];
  hn::Store(v, d, buf);
  for (size_t i = 0; i < count; ++i) p[i] = buf[i];
#else
  hn::BlendedStore(v, hn::FirstN(d, count), d, p);
#endif
}

// Denormal float32 operands (nonzero, below FLT_MIN in magnitude) make an x86 multiply
// or FMA whose result is not zero take a microcode assist of ~150 cycles; adds,
// compares and conversions do not (measured on Sapphire Rapids: 20-70x slower
// element-wise kernels on denormal data). So the multiply-adds on data test their data
// operands (three integer operations per vector) and evaluate the lanes that hold a
// denormal in float64, where the value is normal; the other lanes take the float32
// path, so that every result depends on its own lane only (slices and thread counts
// stay bit-identical).

// Returns the lanes of v that are denormal.
template <class D>
HWY_INLINE hn::Mask<D> Denormal(D d, hn::Vec<D> v) {
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  // |v|'s bits minus one, wrapping 0 to the top: [1, 0x7fffff] maps below 0x807fffff.
  const auto bits = hn::And(hn::BitCast(du, v), hn::Set(du, 0x7fffffffu));
  const auto less_one = hn::BitCast(di, hn::Add(bits, hn::Set(du, 0x7fffffffu)));
  return hn::RebindMask(d, hn::Lt(less_one, hn::Set(di, static_cast<int32_t>(0x807fffffu))));
}

// --- Tensor elements: float, bnorm_bf16 or bnorm_f16 in memory, float32 in registers.

// Half-precision bits of the lanes of a float32 vector of tag D.
template <class D>
using DU16 = hn::Rebind<uint16_t, D>;

// float16 conversions in hardware (F16C, Arm): Highway's. Elsewhere (x86 before AVX2,
// scalar) its emulation truncates and mishandles Inf/NaN, so bnorm has its own.
#undef BNORM_SOFT_F16
#if (HWY_ARCH_X86 && HWY_TARGET >= HWY_SSE4) || HWY_TARGET == HWY_SCALAR
#define BNORM_SOFT_F16 1
#else
#define BNORM_SOFT_F16 0
#endif

// Returns the float32 values of half-precision bits (exact).
template <class D>
HWY_INLINE hn::Vec<D> Widen(D d, bnorm_bf16, hn::Vec<DU16<D>> bits) {
  const hn::RebindToUnsigned<D> du;
  return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, bits)));
}
template <class D>
HWY_INLINE hn::Vec<D> Widen(D d, bnorm_f16, hn::Vec<DU16<D>> bits) {
#if BNORM_SOFT_F16
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  const auto b = hn::PromoteTo(du, bits);
  const auto sign = hn::ShiftLeft<16>(hn::And(b, hn::Set(du, 0x8000u)));
  const auto exp = hn::And(hn::ShiftRight<10>(b), hn::Set(du, 0x1fu));
  const auto mant = hn::And(b, hn::Set(du, 0x3ffu));
  // Subnormal or zero: mant * 2^-24 (exact; a normal float32 multiply).
  const auto sub = hn::BitCast(
      du, hn::Mul(hn::ConvertTo(d, hn::BitCast(di, mant)), hn::Set(d, 1.0f / 16777216.0f)));
  const auto normal =
      hn::Or(hn::ShiftLeft<23>(hn::Add(exp, hn::Set(du, 112u))), hn::ShiftLeft<13>(mant));
  const auto special = hn::Or(hn::Set(du, 0x7f800000u), hn::ShiftLeft<13>(mant));
  const auto r = hn::IfThenElse(hn::Eq(exp, hn::Zero(du)), sub,
                                hn::IfThenElse(hn::Eq(exp, hn::Set(du, 31u)), special, normal));
  return hn::BitCast(d, hn::Or(r, sign));
#else
  const hn::Rebind<hwy::float16_t, D> dh;
  return hn::PromoteTo(d, hn::BitCast(dh, bits));
#endif
}

// Returns v rounded to half precision (to nearest, ties to even; NaN stays NaN,
// overflow gives Inf), as bits.
template <class D>
HWY_INLINE hn::Vec<DU16<D>> Narrow(D d, bnorm_bf16, hn::Vec<D> v) {
  (void)d;
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  // NaN: set the quiet bit and clear the low half, so that rounding cannot carry.
  auto bits = hn::BitCast(du, v);
  bits = hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)),
                        hn::And(hn::Or(bits, hn::Set(du, 0x00400000u)), hn::Set(du, 0xffff0000u)),
                        bits);
  // Round the low half away, to nearest with ties to the even upper half.
  const auto odd = hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 1u));
  const auto rounded = hn::Add(hn::Add(bits, hn::Set(du, 0x7fffu)), odd);
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // The upper halves are the odd 16-bit lanes: one permute gathers them.
  const hn::Repartition<uint16_t, D> dw;
  return hn::LowerHalf(hn::ConcatOdd(dw, hn::BitCast(dw, rounded), hn::BitCast(dw, rounded)));
#else
  return hn::DemoteTo(DU16<D>(), hn::BitCast(di, hn::ShiftRight<16>(rounded)));
#endif
}
// bfloat16 narrowing by the CPU (VCVTNEPS2BF16, AVX512_BF16), chosen per output run
// when detail::NativeBF16(): the same rounding as above (nearest even, NaN quieted)
// except that the instruction flushes float32 subnormals to zero, so a vector holding
// one takes the code above. Highway 1.0.3 has no target with AVX512_BF16, hence the
// one instruction in assembly. 3-8% faster out of cache than the code above (bf16
// operations on Sapphire Rapids, one run); 512-bit vectors only.
#undef BNORM_NATIVE_BF16
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) && \
    (defined(__GNUC__) || defined(__clang__))
#define BNORM_NATIVE_BF16 1
struct NativeBF16 {};
template <class D>
HWY_INLINE hn::Vec<DU16<D>> Narrow(D d, NativeBF16, hn::Vec<D> v) {
  static_assert(hn::MaxLanes(D()) == 16, "512-bit vectors of float");
  if (HWY_UNLIKELY(!hn::AllFalse(d, Denormal(d, v)))) return Narrow(d, bnorm_bf16(), v);
  hn::Vec<DU16<D>> bits;
  asm("vcvtneps2bf16 %1, %0" : "=v"(bits.raw) : "v"(v.raw));
  return bits;
}
#else
#define BNORM_NATIVE_BF16 0
#endif

template <class D>
HWY_INLINE hn::Vec<DU16<D>> Narrow(D d, bnorm_f16, hn::Vec<D> v) {
#if BNORM_SOFT_F16
  // float_to_half_fast3_rtne (F. Giesen), one lane at a time in vector form.
  const hn::RebindToUnsigned<D> du;
  const hn::RebindToSigned<D> di;
  const auto bits = hn::BitCast(du, v);
  const auto sign = hn::And(bits, hn::Set(du, 0x80000000u));
  const auto f = hn::Xor(bits, sign);  // |v|
  // |v| >= 65536 (after rounding, Inf) or Inf / NaN.
  const auto inf_nan = hn::IfThenElse(hn::Gt(f, hn::Set(du, 0x7f800000u)), hn::Set(du, 0x7e00u),
                                      hn::Set(du, 0x7c00u));
  // |v| < 2^-14: subnormal or zero, rounded by a float32 add of 0.5 (not a multiply).
  const auto magic = hn::Set(du, 126u << 23);
  const auto sub =
      hn::Sub(hn::BitCast(du, hn::Add(hn::BitCast(d, f), hn::BitCast(d, magic))), magic);
  // Normal: rebias the exponent and round the 13 dropped bits to nearest even.
  const auto odd = hn::And(hn::ShiftRight<13>(f), hn::Set(du, 1u));
  const auto normal = hn::ShiftRight<13>(
      hn::Add(hn::Add(f, hn::Set(du, 0xc8000fffu)), odd));  // + ((15 - 127) << 23) + 0xfff
  const auto r =
      hn::IfThenElse(hn::Gt(hn::Set(du, (143u << 23) - 1), f),
                     hn::IfThenElse(hn::Gt(hn::Set(du, 113u << 23), f), sub, normal), inf_nan);
  return hn::DemoteTo(DU16<D>(), hn::BitCast(di, hn::Or(r, hn::ShiftRight<16>(sign))));
#else
  (void)d;
  const hn::Rebind<hwy::float16_t, D> dh;
  return hn::BitCast(DU16<D>(), hn::DemoteTo(dh, v));
#endif
}

template <typename T>
HWY_INLINE const uint16_t* Bits(const T* p) {
  return reinterpret_cast<const uint16_t*>(p);
}
template <typename T>
HWY_INLINE uint16_t* Bits(T* p) {
  return reinterpret_cast<uint16_t*>(p);
}

// Prefetches the line kPrefetchBytes past p, for the loops that read halves front to
// back. Out of cache, a loop with more work per byte than a copy (widening halves, the
// denormal test) otherwise stalls on every line it misses: measured on Sapphire
// Rapids, a bf16 affine pass took the sum of its compute and its memory time (8.7
// GB/s on one core) and reached 13.4 GB/s with this prefetch; bnorm's bf16 and f16
// operations became 1.1-1.9x faster out of cache. float32 loops do not gain (A/B over
// the benchmark shapes: geomean 1.00, from 0.88 to 1.08), so they do not prefetch.
// Narrowing two vectors per store (one permute per 32 bf16 values) measured 5% slower.
// A prefetch never faults, so one past the end of a tensor is harmless.
constexpr uintptr_t kPrefetchBytes = 2048;
template <typename T>
HWY_INLINE void PrefetchAhead(const T* p) {
  hwy::Prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(p) + kPrefetchBytes));
}

// Returns Lanes(d) values from p as float32.
template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const float* HWY_RESTRICT p) {
  return hn::LoadU(d, p);
}
template <class D, typename T>
HWY_INLINE hn::Vec<D> LoadAs(D d, const T* HWY_RESTRICT p) {
  PrefetchAhead(p);
  return Widen(d, T(), hn::LoadU(DU16<D>(), Bits(p)));
}

// LoadAs without the prefetch, for the loops that walk a block of rows down its
// columns (NHWC statistics and gradient sums): they prefetch the same columns one
// block ahead with PrefetchBlockAhead instead, since the lines 2 KiB past a load are
// only a few rows further. Measured on one core out of cache (NHWC 32x256x3136): bf16
// moments 1.32x, training 1.16x, float32 moments 1.05x faster; 2x32x262144 float32
// moments 1.12x.
template <class D>
HWY_INLINE hn::Vec<D> LoadNoPrefetch(D d, const float* HWY_RESTRICT p) {
  return hn::LoadU(d, p);
}
template <class D, typename T>
HWY_INLINE hn::Vec<D> LoadNoPrefetch(D d, const T* HWY_RESTRICT p) {
  return Widen(d, T(), hn::LoadU(DU16<D>(), Bits(p)));
}
// Prefetches the `bytes` from p + ahead values (p: the columns of one row of a block;
// ahead: the block's rows times the stride). The address is computed as an integer (no
// pointer past the tensor is formed), and a prefetch never faults.
template <typename T>
HWY_INLINE void PrefetchBlockAhead(const T* p, int64_t ahead, size_t bytes) {
  const uintptr_t q = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(ahead) * sizeof(T);
  for (size_t b = 0; b < bytes; b += 64) hwy::Prefetch(reinterpret_cast<const char*>(q + b));
}

// Returns lanes [0, count) from p and `pad` in the others; reads only p[0, count).
template <class D, typename T>
HWY_INLINE hn::Vec<D> LoadPart(D d, const T* HWY_RESTRICT p, size_t count, float pad) {
  if (count == hn::Lanes(d)) return LoadAs(d, p);
  HWY_ALIGN uint16_t buf[kMaxLanes] = {};
  for (size_t i = 0; i < count; ++i) buf[i] = Bits(p)[i];
  const hn::Vec<D> v = Widen(d, T(), hn::Load(DU16<D>(), buf));
  return hn::IfThenElse(hn::FirstN(d, count), v, hn::Set(d, pad));
}

// LoadPart without LoadAs's prefetch where count is a whole vector.
template <class D, typename T>
HWY_INLINE hn::Vec<D> LoadPartNoPrefetch(D d, const T* HWY_RESTRICT p, size_t count, float pad) {
  return count == hn::Lanes(d) ? LoadNoPrefetch(d, p) : LoadPart(d, p, count, pad);
}

// Stores all lanes of v to p, or lanes [0, count) (writes only p[0, count)). Halves
// are narrowed by Narrow(d, Tag(), v): Tag is T, or NativeBF16 for bnorm_bf16.
template <class D, class Tag = float>
HWY_INLINE void StoreAs(D d, hn::Vec<D> v, float* HWY_RESTRICT p, Tag = Tag()) {
  hn::StoreU(v, d, p);
}
template <class D, typename T, class Tag = T>
HWY_INLINE void StoreAs(D d, hn::Vec<D> v, T* HWY_RESTRICT p, Tag tag = Tag()) {
  hn::StoreU(Narrow(d, tag, v), DU16<D>(), Bits(p));
}
template <class D, typename T, class Tag = T>
HWY_INLINE void StorePart(D d, hn::Vec<D> v, T* HWY_RESTRICT p, size_t count, Tag tag = Tag()) {
  if (count == hn::Lanes(d)) return StoreAs(d, v, p, tag);
  HWY_ALIGN uint16_t buf[kMaxLanes] = {};  // (initialized: g++ 12 cannot tell count <= Lanes)
  hn::Store(Narrow(d, tag, v), DU16<D>(), buf);
  for (size_t i = 0; i < count; ++i) Bits(p)[i] = buf[i];
}

// Non-temporal stores of a whole vector to p (aligned to its size in memory).
template <class D, class Tag>
HWY_INLINE void StreamAs(D d, hn::Vec<D> v, float* HWY_RESTRICT p, Tag) {
  hn::Stream(v, d, p);
}
template <class D, typename T, class Tag>
HWY_INLINE void StreamAs(D d, hn::Vec<D> v, T* HWY_RESTRICT p, Tag tag) {
  hn::Stream(Narrow(d, tag, v), DU16<D>(), Bits(p));
}

// Whether WriteRun may stream T: x86's 128-bit Stream writes 16 bytes, more than a
// vector of halves there.
template <typename T>
constexpr bool CanStream() {
  return sizeof(T) == sizeof(float) || !(HWY_ARCH_X86 && HWY_MAX_BYTES <= 16);
}

// Returns the sum of v's lanes (fixed order for a given target).
template <class D>
HWY_INLINE float SumLanes(D d, hn::Vec<D> v) {
  return hn::GetLane(hn::SumOfLanes(d, v));
}

// ReLU that keeps NaN (x86 max would turn NaN into 0).
template <class D>
HWY_INLINE hn::Vec<D> Relu(D d, hn::Vec<D> v) {
  return hn::IfThenZeroElse(hn::Lt(v, hn::Zero(d)), v);
}

// Returns the float64 lanes of v (tag dd) rounded to float32 (tag d, as many lanes) as
// IEEE says: overflow and +-Inf give +-Inf. Highway 1.0.3's emulated DemoteTo (scalar,
// emu128) returns +-FLT_MAX for both, so those targets convert lane by lane in C++.
template <class D, class DD>
HWY_INLINE hn::Vec<D> DemoteF64(D d, DD dd, hn::Vec<DD> v) {
#if HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128
  HWY_ALIGN double wide[kMaxLanes];
  HWY_ALIGN float narrow[kMaxLanes] = {};
  hn::Store(v, dd, wide);
  for (size_t i = 0; i < hn::Lanes(dd); ++i) narrow[i] = static_cast<float>(wide[i]);
  return hn::Load(d, narrow);
#else
  (void)dd;
  return hn::DemoteTo(d, v);
#endif
}

// The tag of Wide's float64 vectors: half of a float32 vector each (the whole one on
// the scalar target).
#if HWY_TARGET == HWY_SCALAR
using DW = hn::Rebind<double, DF>;
#else
using DW = hn::Rebind<double, hn::Half<DF>>;
#endif

// Whether float64 lanes should promote float32 values from memory where they are
// there (the statistics of tiny blocks): x86 converts straight from memory (CVTPS2PD
// with a memory operand) without the shuffle that splitting a register takes, and in
// registers the conversions and that shuffle wait for the same port. Measured on
// Sapphire Rapids, L2-resident NCHW tensors of denormals, one thread, time / time on
// normal data: moments AVX2 1.62 -> 1.27, SSE4 1.91 -> 1.61; AVX-512 no faster. Arm
// promotes either half of a register as it is.
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3)
constexpr bool kWideFromMemory = true;
#else
constexpr bool kWideFromMemory = false;
#endif

// The float64 values of half `half` (0: lower, 1: upper) of an argument of Wide: the
// lanes of a vector, Lanes(d) float32 values in memory, or a constant.
template <class DD>
HWY_INLINE hn::Vec<DD> WideArg(DD dd, VF v, size_t half) {
#if HWY_TARGET == HWY_SCALAR
  (void)half;
  return hn::PromoteTo(dd, v);
#else
  const hn::Half<DF> dh;
  if (half == 0) return hn::PromoteTo(dd, hn::LowerHalf(dh, v));
  return hn::PromoteTo(dd, hn::UpperHalf(dh, v));
#endif
}

// SSE4 and SSSE3 convert from memory with an asm operand (g++ 12 loads the two values
// with MOVQ and converts the register), and Wide passes them its vector arguments
// through the stack (Spill).
#undef BNORM_WIDE_FROM_STACK
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3) && \
    (defined(__GNUC__) || defined(__clang__))
#define BNORM_WIDE_FROM_STACK 1
#else
#define BNORM_WIDE_FROM_STACK 0
#endif
template <class DD>
HWY_INLINE hn::Vec<DD> WideArg(DD dd, const float* HWY_RESTRICT p, size_t half) {
  p += half * hn::Lanes(dd);
#if BNORM_WIDE_FROM_STACK
  hn::Vec<DD> v;
  asm("cvtps2pd %1, %0" : "=x"(v.raw) : "m"(*reinterpret_cast<const float(*)[2]>(p)));
  return v;
#else
  return hn::PromoteTo(dd, hn::LoadU(hn::Rebind<float, DD>(), p));
#endif
}
template <class DD>
HWY_INLINE hn::Vec<DD> WideArg(DD dd, const double* HWY_RESTRICT p, size_t half) {
  return hn::LoadU(dd, p + half * hn::Lanes(dd));
}
template <class DD>
HWY_INLINE hn::Vec<DD> WideArg(DD dd, double c, size_t) {
  return hn::Set(dd, c);
}

// A vector argument of Wide stored to the stack, on SSE4 and SSSE3: converted from
// there (see kWideFromMemory) the float64 lanes cost less than from the register, e.g.
// NHWC affine on L2-resident denormals 1.86 -> 1.46x the time on normal data, NCHW
// 2.05 -> 1.84, one thread on Sapphire Rapids. (On AVX2, g++ 12 forwards the store and
// converts the register; forced with an asm operand, the conversions from memory
// measured no faster there and the float32 path slower.)
struct Spilled {
  HWY_ALIGN float v[kMaxLanes];
};
template <class DD>
HWY_INLINE hn::Vec<DD> WideArg(DD dd, const Spilled& s, size_t half) {
  return WideArg(dd, static_cast<const float*>(s.v), half);
}
template <class A>
HWY_INLINE A Spill(DF, A a) {
  return a;
}
// Lanes(d) float32 values at p + i, as an argument of Wide. (Its own copy of p: sharing
// the address p + i with the float32 path, g++ 12 computed it into a register there,
// three more instructions per vector.)
struct LanesAt {
  const float* p;
  size_t i;
};
HWY_INLINE const float* Spill(DF, LanesAt a) {
  const float* p = a.p;
  size_t i = a.i;
#if defined(__GNUC__) || defined(__clang__)
  asm("" : "+r"(p), "+r"(i));
#endif
  return p + i;
}
#if BNORM_WIDE_FROM_STACK
HWY_INLINE Spilled Spill(DF d, VF v) {
  Spilled s;
  hn::Store(v, d, s.v);
  return s;
}
#endif

// Returns fn(dd, a...) evaluated on float64 vectors (dd their tag) and rounded to
// float32, a lane of the result from that lane of each argument: a vector (VF), a
// pointer to Lanes(d) float32 values, or a float64 constant (every lane).
template <class Fn, class... A>
HWY_INLINE VF WideOf(DF d, Fn fn, const A&... a) {
#if HWY_TARGET == HWY_SCALAR
  const DW dd;
  return DemoteF64(d, dd, fn(dd, WideArg(dd, a, 0)...));
#else
  const hn::Half<DF> dh;
  const DW dd;
  const auto lo = DemoteF64(dh, dd, fn(dd, WideArg(dd, a, 0)...));
  const auto hi = DemoteF64(dh, dd, fn(dd, WideArg(dd, a, 1)...));
  return hn::Combine(d, hi, lo);
#endif
}
template <class Fn, class... A>
HWY_INLINE VF Wide(DF d, Fn fn, A... a) {
  return WideOf(d, fn, Spill(d, a)...);
}

// For the lambdas of the loops (WriteRun's fn, Guarded's fast and wide): always
// inlined. Left to g++ 12, the lambda of an NHWC affine run, with its float64 lanes,
// stayed a call at some of WriteRunAs's call sites, and what it captures by reference
// (the pattern's phase) lived in memory in the loop: SSE4 1.3x slower on normal data.
#define BNORM_LAMBDA HWY_ATTR __attribute__((always_inline))

// Returns fast(v...) in the lanes outside `tiny` and wide() in those inside (float64
// lanes rounded to float32: Wide); fast sees the `tiny` lanes of v as 0. Sets
// `took_wide` when some lane went through float64 (WriteRunAs stops streaming then).
template <class D, class Fast, class WideFn, class... V>
HWY_INLINE hn::Vec<D> Guarded(D d, hn::Mask<D> tiny, bool& took_wide, Fast fast, WideFn wide,
                              V... v) {
  // (No HWY_LIKELY: laid out as unlikely, the float64 lanes cost two taken jumps per
  // vector: AVX2 affine on denormal data 0.28 vs 0.24 ns per value; normal data the same.)
  if (hn::AllFalse(d, tiny)) return fast(v...);
  took_wide = true;
  const hn::Vec<D> w = wide();
  if (hn::AllTrue(d, tiny)) return w;
  return hn::IfThenElse(tiny, w, fast(hn::IfThenZeroElse(tiny, v)...));
}

// Returns a * b + c (MulAdd) where the lanes in `tiny` (a or b denormal) go through
// float64 (setting took_wide).
HWY_INLINE VF MulAddLanes(DF d, VF a, VF b, VF c, hn::Mask<DF> tiny, bool& took_wide) {
  auto fma = [](auto, auto va, auto vb, auto vc) BNORM_LAMBDA { return hn::MulAdd(va, vb, vc); };
  return Guarded(
      d, tiny, took_wide,
      [](VF va, VF vb, VF vc) BNORM_LAMBDA { return hn::MulAdd(va, vb, vc); },
      [&]() BNORM_LAMBDA { return Wide(d, fma, a, b, c); }, a, b, c);
}

// Coefficients of AffineLanes and Dx, three kinds:
// - Uniform: one value for every lane. It keeps its float64 copy: converted in the
//   loops, g++ 12 converts it again for every vector that takes the float64 lanes (9
//   instructions on SSE4).
// - const float*: Lanes(d) values in memory (a pattern at a phase, see
//   detail::kPatternPad), converted from memory by the float64 lanes (measured on AVX2
//   NHWC affine before it took PatternAt, L2-resident denormals: 2.5x the time of
//   normal data from the vector register, 1.9x from memory; the register form's
//   extracts and the conversions compete for one port on Sapphire Rapids).
// - PatternAt: a pattern at phase ph with a float64 copy, the float32 values at f, the
//   float64 ones at (*w)[ph], read by the float64 lanes without converting (AVX-512
//   converts from memory no faster than from registers: AVX3 NHWC affine 2.1 -> 1.9x
//   with the copy). The float64 lanes read the copy's address from memory (volatile)
//   when they run: kept in registers through the loop, the extra addresses made g++ 12
//   spill on AVX2 (its float32 path 1.2x slower).
// CoefVec returns their float32 vector, CoefWide their argument of Wide.
struct Uniform {
  explicit Uniform(float v) : f(v), w(v) {}
  float f;
  double w;
};
struct PatternAt {
  const float* f;
  const double* const* w;
  size_t ph;
};
HWY_INLINE VF CoefVec(DF d, Uniform c) { return hn::Set(d, c.f); }
HWY_INLINE VF CoefVec(DF d, const float* HWY_RESTRICT c) { return hn::LoadU(d, c); }
HWY_INLINE VF CoefVec(DF d, PatternAt c) { return hn::LoadU(d, c.f); }
HWY_INLINE double CoefWide(Uniform c) { return c.w; }
HWY_INLINE const float* CoefWide(const float* c) { return c; }
HWY_INLINE const double* CoefWide(PatternAt c) {
  return *static_cast<const double* const volatile*>(c.w) + c.ph;
}

// Returns v * m + a (MulAdd); the lanes where v is denormal go through float64 (setting
// took_wide). m, a: coefficients (Uniform, const float* or PatternAt).
// `from`: v as an argument of Wide (v itself, or the same values in memory: LanesAt).
template <class M, class A, class From = VF>
HWY_INLINE VF AffineLanes(DF d, VF v, M m, A a, bool& took_wide, From from) {
  const VF vm = CoefVec(d, m), va = CoefVec(d, a);
  return Guarded(
      d, Denormal(d, v), took_wide, [&](VF u) BNORM_LAMBDA { return hn::MulAdd(u, vm, va); },
      [&]() BNORM_LAMBDA {
        auto fma = [](auto, auto u, auto m64, auto a64)
                       BNORM_LAMBDA { return hn::MulAdd(u, m64, a64); };
        return Wide(d, fma, from, CoefWide(m), CoefWide(a));
      },
      v);
}
template <class M, class A>
HWY_INLINE VF AffineLanes(DF d, VF v, M m, A a, bool& took_wide) {
  return AffineLanes(d, v, m, a, took_wide, v);
}

// Computes out[0, len) one vector at a time: fn(i, valid, took_wide) returns the vector
// for out[i, i + valid) (valid < Lanes only at the ends) and sets took_wide when a lane
// went through float64 (Guarded). With `stream`, whole vectors go out with non-temporal
// stores after a head that aligns `out`, until a vector takes the float64 lanes: the
// rest of a long run then uses ordinary stores, and `stream` is cleared for the
// caller's next runs (a short run is not checked inside: a test per vector, or per
// group of kStreamCheck vectors, slowed runs of 49 values by 5-15%). Non-temporal
// stores only pay while the loop keeps up with memory; behind a slower loop they cost
// more than the loop itself (measured on Sapphire Rapids, 128 MiB, 16-byte stores: a
// loop of 3 cycles per value took 1.70 ns per value streaming and 0.92 storing; bnorm's
// SSE4 affine on denormal data 65 ms streaming, 33 ms not). Results are the same either
// way because each element is computed on its own. Halves are narrowed by
// Narrow(d, tag, v).
constexpr size_t kStreamCheck = 64;
template <class D, typename T, class Fn, class Tag>
HWY_INLINE void WriteRunAs(D d, T* HWY_RESTRICT out, size_t len, bool& stream, Fn& fn, Tag tag) {
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  bool took_wide = false;
  if (CanStream<T>() && stream && N > 1) {
    const size_t bytes = N * sizeof(T);
    const size_t misaligned = reinterpret_cast<uintptr_t>(out) % bytes;
    if (misaligned % sizeof(T) == 0) {  // elements are aligned; be safe anyway
      const size_t head = misaligned == 0 ? 0 : HWY_MIN(len, (bytes - misaligned) / sizeof(T));
      if (head != 0) StorePart(d, fn(size_t{0}, head, took_wide), out, head, tag);
      if (len - head <= kStreamCheck * N) {
        for (i = head; i + N <= len; i += N) StreamAs(d, fn(i, N, took_wide), out + i, tag);
      } else {
        for (i = head; i + N <= len && !took_wide;) {
          const size_t end = HWY_MIN(len, i + kStreamCheck * N);
          for (; i + N <= end; i += N) StreamAs(d, fn(i, N, took_wide), out + i, tag);
        }
      }
      stream = !took_wide;
    }
  }
  for (; i + N <= len; i += N) StoreAs(d, fn(i, N, took_wide), out + i, tag);
  if (i < len) StorePart(d, fn(i, len - i, took_wide), out + i, len - i, tag);
}
template <class D, typename T, class Fn>
HWY_INLINE void WriteRun(D d, T* HWY_RESTRICT out, size_t len, bool& stream, Fn fn) {
#if BNORM_NATIVE_BF16
  if (std::is_same<T, bnorm_bf16>::value && detail::NativeBF16()) {
    return WriteRunAs(d, out, len, stream, fn, NativeBF16());
  }
#endif
  WriteRunAs(d, out, len, stream, fn, T());
}

// Walks [0, len) for a reduction with four independent accumulator chains (4 adds in
// flight hide the add latency): body4(i) for whole groups of four vectors at i, then
// body1(i, valid) for single vectors, the last one partial.
template <class D, class Body4, class Body1>
HWY_INLINE void Visit4(D d, size_t len, Body4 body4, Body1 body1) {
  const size_t N = hn::Lanes(d);
  size_t i = 0;
  for (; i + 4 * N <= len; i += 4 * N) body4(i);
  for (; i < len; i += N) body1(i, HWY_MIN(N, len - i));
}

// Advances a pattern phase by `step` values, wrapping at `period`: one wrap without a
// branch, more (period < step) in a loop. (g++ 12 compiles the conditional to a branch,
// taken for every vector that does not wrap; with CMOV, NHWC affine on L2-resident
// data, one thread on Sapphire Rapids, took 0.7x (SSE4) and 0.9x (AVX2) the time on
// normal data, 0.85x on denormals. Not on the scalar target: one value per step, the
// CMOV's dependency chain made it 1.3x slower.)
HWY_INLINE size_t NextPhase(size_t ph, size_t step, size_t period) {
  ph += step;
#if HWY_ARCH_X86_64 && HWY_TARGET != HWY_SCALAR && (defined(__GNUC__) || defined(__clang__))
  const size_t wrapped = ph - period;
  asm("cmp %[p], %[ph]\n\tcmovae %[w], %[ph]"
      : [ph] "+r"(ph)
      : [p] "r"(period), [w] "r"(wrapped)
      : "cc");
#else
  ph = ph >= period ? ph - period : ph;
#endif
  while (HWY_UNLIKELY(ph >= period)) ph -= period;
  return ph;
}

// Calls fn(offset_in_plane, k_begin, length) for each contiguous segment of values
// [k0, k1) of an NCHW channel plane (one segment per image touched).
template <typename T, class Fn>
HWY_INLINE void ForEachSegment(const detail::Plane<T>& plane, int64_t k0, int64_t k1, Fn fn) {
  int64_t image = k0 / plane.spatial, s = k0 % plane.spatial;
  for (int64_t k = k0; k < k1; ++image, s = 0) {
    const int64_t len = HWY_MIN(plane.spatial - s, k1 - k);
    fn(image * plane.stride + s, k, static_cast<size_t>(len));
    k += len;
  }
}

// Calls fn(offset, len, run) for the pieces of values [v0, v1) of a tensor made of
// runs of `spatial` values (one piece per run touched; offset from the tensor start).
template <class Fn>
HWY_INLINE void ForEachRunPiece(int64_t spatial, int64_t v0, int64_t v1, Fn fn) {
  for (int64_t v = v0; v < v1;) {
    const int64_t run = v / spatial;
    const int64_t end = HWY_MIN(v1, (run + 1) * spatial);
    fn(v, static_cast<size_t>(end - v), run);
    v = end;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace bnorm
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
