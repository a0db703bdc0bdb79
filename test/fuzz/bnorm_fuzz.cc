// Fuzz target for the bnorm C API (libFuzzer's LLVMFuzzerTestOneInput). Decodes bytes
// into one call: target, operation (whole tensor or channel slice), shape, flags, eps,
// momentum, where every buffer lies
// (distinct, NULL, equal to another, or overlapping it by a few elements), and the data
// (NaN, Inf, denormals, huge and tiny values). It predicts the outcome from DESIGN.md
// ("Bad input") on its own, calls the library and checks:
//  - a call that breaks a rule returns bnorm_invalid_argument, changes no byte of any
//    buffer, and leaves a one-line message that starts with the function name and names
//    one of the broken arguments;
//  - a valid empty call succeeds and changes nothing;
//  - a valid call writes every output (of a slice: the slice's channels), nothing else,
//    bit-identical with and without BNORM_SERIAL (two runs, each on differently
//    poisoned outputs; a slice also bit-identical to the whole call), and matches the
//    float64 reference (test/reference.h) within the tolerances below.
// Any violation prints the decoded call and aborts (libFuzzer then saves the input).
// Built by test/fuzz/run_fuzz.sh (clang, -fsanitize=fuzzer,address,undefined) and, with
// replay_main.cc, by Meson as the corpus replay test (any compiler).
//
// Input format (little-endian; bytes past the end read as 0, so any input is valid):
//   op U8 % 6 (moments, training, inference, fold, affine, backward)
//   target U8 (+ bytes, see DecodeTarget)
//   shape: U8 (255: shape NULL; % 8 < 4 NCHW, < 7 NHWC, 7: raw U32 layout), then dims
//          n, c, spatial (fold: c only), each Dim()
//   flags U8 (>= 248: raw U32), eps U8 (+ U32), momentum U8 (+ U32)
//   per buffer of the operation, in C argument order: placement U8 (low nibble: own /
//          NULL / alias, high nibble: misalignment in floats), alias: host U8, kind U8,
//          amount U8
//   per input buffer: data mode U8, seed U32, mode parameters
//   slice U8 (% 4 == 3: the _slice_f32 entry point, not for fold), then c_begin and
//          c_end, each SliceBound()
// test/fuzz/make_seeds.py writes the seed corpus in this format.
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"
#include "test/reference.h"

namespace bnorm {
namespace fuzz {
namespace {

// ---------------------------------------------------------------------------------
// Tolerances: the values of test/test_util.h (kMeanUlps, kVarRelBigMean, kOutUlps; see
// the derivations there), with DESIGN.md's 1e-5 relative variance for |mean|/std up to
// 1e4 (test_util.h's kVarRel = 2e-6 is for normal data), extended to the whole float32
// range:
//  - every float32 intermediate has an absolute resolution of 2^-149 (denormals) on top
//    of its relative one: each tolerance adds a floor of a few 2^-149 per term;
//  - beyond |mean|/std = 1e4 the variance is allowed 1e-5 * (ratio / 1e4)^2 relative
//    (the rounding of the mean, squared: the float32 data cannot say more);
//  - results are checked where every float32 intermediate of the computation the API
//    describes is finite when its float64 counterpart is (|x - mean|, |x * scale|,
//    gamma * invstd, per-block sums of backward, each of the three terms of dx within
//    half the range so that any partial sum fits, ...): elsewhere the output may
//    legitimately overflow, and it is only required to be written and deterministic;
//  - NaN and Inf in the data: where the computation is elementwise or a plain sum
//    (affine, inference, fold, moments, training) the output is what IEEE float64
//    arithmetic gives (NaN where the reference has NaN, the same infinity where it has
//    one); in backward, whose formula the library factors differently, an output is
//    non-finite exactly where the reference's is.
constexpr double kUlp = ref::kUlp;
constexpr double kMeanUlps = 16;
constexpr double kVarRelBigMean = 1e-5;
constexpr double kOutUlps = 64;
const double kDenorm = std::numeric_limits<float>::denorm_min();  // 2^-149
const double kFltMax = std::numeric_limits<float>::max();
// A finite double rounds to a float32 infinity from here on (FLT_MAX + half an ulp).
const double kRoundsToInf = kFltMax + std::ldexp(1.0, 103);
const double kFloor = kOutUlps * kDenorm;  // absolute resolution budget per term

// Valid calls run for real up to this many tensor elements (bigger valid shapes are
// turned into a rejected call by dropping x).
constexpr int64_t kMaxElements = int64_t{1} << 19;

constexpr uint32_t kPoison1 = 0xFFFFFFFFu;  // outputs before the first run
constexpr uint32_t kPoison2 = 0x7FBADBADu;  // outputs before the second run
constexpr uint32_t kCanary = 0x7FA5A5A5u;   // misalignment padding

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
uint32_t ToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

[[noreturn]] void Abort() {
  std::fflush(stderr);
  std::abort();
}

// A fast generator for the data (std::mt19937 with std::normal_distribution took
// half of the fuzzer's time): splitmix64, and a normal-ish value from four uniforms.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t operator()() { return static_cast<uint32_t>(Next() >> 32); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1p-53; }  // [0, 1)
  // Mean 0, variance 1, support [-2 sqrt(3), 2 sqrt(3)].
  double Normal() { return (Unit() + Unit() + Unit() + Unit() - 2.0) * 1.7320508075688772; }

 private:
  uint64_t s_;
};

// ---------------------------------------------------------------------------------
// Decoding.

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t U8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{U8()} << (8 * i);
    return v;
  }
  uint64_t U64() { return uint64_t{U32()} | (uint64_t{U32()} << 32); }

 private:
  const uint8_t* p_;
  size_t n_;
};

enum Op { kMoments, kTraining, kInference, kFold, kAffine, kBackward, kNumOps };
const char* const kOpNames[] = {
    "bnorm_moments_f32", "bnorm_forward_training_f32", "bnorm_forward_inference_f32",
    "bnorm_fold_f32",    "bnorm_affine_f32",           "bnorm_backward_f32"};
const char* const kSliceNames[] = {"bnorm_moments_slice_f32",
                                   "bnorm_forward_training_slice_f32",
                                   "bnorm_forward_inference_slice_f32",
                                   "bnorm_fold_f32",
                                   "bnorm_affine_slice_f32",
                                   "bnorm_backward_slice_f32"};

enum Kind { kTensor, kChannel };
enum Role { kIn, kOut, kInOut };
// What "ordinary" data of a buffer looks like.
enum Sense { kData, kGrad, kMask, kSigned, kPositive, kNone };

struct SlotSpec {
  const char* name;
  Kind kind;
  Role role;
  bool required;  // backward's y: required with BNORM_FUSE_RELU only (handled apart)
  Sense sense;
};

struct OpSpec {
  std::vector<SlotSpec> slots;
};

const OpSpec& Spec(Op op) {
  static const OpSpec kSpecs[kNumOps] = {
      // moments
      {{{"x", kTensor, kIn, true, kData},
        {"mean", kChannel, kOut, true, kNone},
        {"var", kChannel, kOut, true, kNone}}},
      // training
      {{{"x", kTensor, kIn, true, kData},
        {"y", kTensor, kOut, true, kNone},
        {"gamma", kChannel, kIn, false, kSigned},
        {"beta", kChannel, kIn, false, kSigned},
        {"running_mean", kChannel, kInOut, false, kSigned},
        {"running_var", kChannel, kInOut, false, kPositive},
        {"saved_mean", kChannel, kOut, false, kNone},
        {"saved_invstd", kChannel, kOut, false, kNone}}},
      // inference
      {{{"x", kTensor, kIn, true, kData},
        {"y", kTensor, kOut, true, kNone},
        {"gamma", kChannel, kIn, false, kSigned},
        {"beta", kChannel, kIn, false, kSigned},
        {"mean", kChannel, kIn, true, kSigned},
        {"var", kChannel, kIn, true, kPositive}}},
      // fold
      {{{"gamma", kChannel, kIn, false, kSigned},
        {"beta", kChannel, kIn, false, kSigned},
        {"mean", kChannel, kIn, true, kSigned},
        {"var", kChannel, kIn, true, kPositive},
        {"scale", kChannel, kOut, true, kNone},
        {"shift", kChannel, kOut, true, kNone}}},
      // affine
      {{{"x", kTensor, kIn, true, kData},
        {"y", kTensor, kOut, true, kNone},
        {"scale", kChannel, kIn, true, kSigned},
        {"shift", kChannel, kIn, true, kSigned}}},
      // backward
      {{{"x", kTensor, kIn, true, kData},
        {"dy", kTensor, kIn, true, kGrad},
        {"saved_mean", kChannel, kIn, true, kSigned},
        {"saved_invstd", kChannel, kIn, true, kPositive},
        {"gamma", kChannel, kIn, false, kSigned},
        {"y", kTensor, kIn, false, kMask},
        {"dx", kTensor, kOut, false, kNone},
        {"dgamma", kChannel, kOut, false, kNone},
        {"dbeta", kChannel, kOut, false, kNone}}},
  };
  return kSpecs[op];
}

bool IsInput(Role r) { return r != kOut; }
bool IsOutput(Role r) { return r != kIn; }

// Highway 1.0.3's target names, on every architecture: bnorm_set_target knows these.
const char* const kKnownTargets[] = {"AVX3_DL",     "AVX3", "AVX2",   "SSE4",  "SSSE3", "SVE2_128",
                                     "SVE_256",     "SVE2", "SVE",    "NEON",  "RVV",   "PPC8",
                                     "WASM_EMU256", "WASM", "EMU128", "SCALAR"};

// Values chosen to break things: signed zeros, the float32 range limits, denormals,
// squares that overflow or underflow, NaN and infinities.
float Interesting(Reader& r) {
  static const float kTable[] = {0.0f,
                                 -0.0f,
                                 1.0f,
                                 -1.0f,
                                 0.5f,
                                 3.0f,
                                 -7.25f,
                                 1e-5f,
                                 1e4f,
                                 -1e4f,
                                 1e19f,
                                 3e19f,
                                 -3e19f,
                                 1e30f,
                                 1e38f,
                                 std::numeric_limits<float>::max(),
                                 -std::numeric_limits<float>::max(),
                                 std::numeric_limits<float>::min(),
                                 -std::numeric_limits<float>::min(),
                                 std::numeric_limits<float>::denorm_min(),
                                 1e-40f,
                                 -1e-40f,
                                 1e-20f,
                                 1e-30f,
                                 std::numeric_limits<float>::quiet_NaN(),
                                 -std::numeric_limits<float>::quiet_NaN(),
                                 std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(),
                                 16777216.0f,
                                 0.1f,
                                 1.0f / 3};
  constexpr int kCount = sizeof(kTable) / sizeof(kTable[0]);
  static_assert(kCount == 31, "31 table entries, then raw bits");
  const int k = r.U8() % 32;
  return k < kCount ? kTable[k] : FromBits(r.U32());
}

// Returns a dimension: mostly small, sometimes zero, negative, huge or raw.
int64_t Dim(Reader& r) {
  const int kind = r.U8() % 16;
  switch (kind) {
    case 8:
      return 34 + r.U16() % 5000;
    case 9:
      return r.U32() % (kMaxElements + 1);
    case 10:
      return 0;
    case 11:
      return -static_cast<int64_t>(r.U8()) - 1;
    case 12:
      return std::numeric_limits<int64_t>::min() + r.U8();
    case 13: {
      const int64_t p = int64_t{1} << (r.U8() % 63);
      return p + (r.U8() % 3) - 1;
    }
    case 14:
      return std::numeric_limits<int64_t>::max() - r.U8();
    case 15:
      return static_cast<int64_t>(r.U64());
    default:
      return 1 + r.U8() % 33;
  }
}

struct Placement {
  bool present = true;
  int host = -1;  // alias: the slot this one lies in or beside
  int alias_kind = 0, amount = 0;
  int misalign = 0;
};

enum DataMode { kSensible = 0, kNormal = 4, kRaw, kPalette, kSpecials, kConstant, kRamp };

struct DataSpec {
  int mode = kSensible;
  uint32_t seed = 0;
  float a = 0, b = 0;
  std::vector<float> palette;
  std::vector<uint32_t> raw;
  double special_p = 0;
};

enum TargetKind { kTargetSupported, kTargetNull, kTargetEmpty, kTargetNamed };

struct Request {
  Op op = kMoments;
  TargetKind target_kind = kTargetSupported;
  std::string target_name;
  bool shape_null = false;
  int32_t layout = 0;
  int64_t n = 1, c = 1, spatial = 1;  // fold: c
  unsigned flags = 0;
  float eps = 1e-5f, momentum = 0.1f;
  std::vector<Placement> place;
  std::vector<DataSpec> data;
  bool slice = false;  // bnorm_*_slice_f32 on channels [cb, ce)
  int64_t cb = 0, ce = 0;
  bool dropped_x = false;  // a valid call too big to run, made invalid by x = NULL
};

const std::vector<std::string>& Supported() {
  static const std::vector<std::string> names = TargetNames(bnorm_supported_targets());
  return names;
}

void DecodeTarget(Reader& r, Request& q) {
  const std::vector<std::string>& sup = Supported();
  const int t = r.U8();
  q.target_kind = kTargetNamed;
  switch (t % 16) {
    case 10:
      q.target_kind = kTargetNull;
      return;
    case 11:
      q.target_kind = kTargetEmpty;
      return;
    case 12: {  // a supported name in lower case
      std::string name = sup[r.U8() % sup.size()];
      for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      q.target_name = name;
      return;
    }
    case 13: {  // a name Highway knows that this build or CPU lacks
      std::vector<std::string> lacking;
      for (const char* k : kKnownTargets)
        if (std::find(sup.begin(), sup.end(), k) == sup.end()) lacking.push_back(k);
      q.target_name = lacking.empty() ? sup[0] : lacking[r.U8() % lacking.size()];
      return;
    }
    case 14: {
      static const char* const kUnknown[] = {"AVX9",  "FOO",   "x86", "AVX2 SSE4", "AVX2x",
                                             " AVX2", "AVX2 ", "SSE", "avx-512",   "SCALAR2"};
      q.target_name = kUnknown[r.U8() % 10];
      return;
    }
    case 15: {  // raw bytes up to the first NUL
      const int len = r.U8() % 16;
      std::string name;
      bool ended = false;
      for (int i = 0; i < len; ++i) {
        const char ch = static_cast<char>(r.U8());
        if (ch == '\0') ended = true;
        if (!ended) name += ch;
      }
      q.target_name = name;
      return;
    }
    default:
      q.target_kind = kTargetSupported;
      q.target_name = sup[t % sup.size()];
      return;
  }
}

float DecodeEps(Reader& r) {
  const int k = r.U8() % 24;
  switch (k) {
    case 12:
      return 1e-3f;
    case 13:
      return 0.1f;
    case 14:
      return 1.0f;
    case 15:
      return 1e-30f;
    case 16:
      return std::numeric_limits<float>::denorm_min();
    case 17:
      return std::numeric_limits<float>::max();
    case 18:
      return 0.0f;
    case 19:
      return -0.0f;
    case 20:
      return -1e-5f;
    case 21:
      return std::numeric_limits<float>::quiet_NaN();
    case 22:
      return (r.U8() & 1 ? -1 : 1) * std::numeric_limits<float>::infinity();
    case 23:
      return FromBits(r.U32());
    default:
      return 1e-5f;
  }
}

float DecodeMomentum(Reader& r) {
  const int k = r.U8() % 24;
  switch (k) {
    case 12:
      return 0.0f;
    case 13:
      return 1.0f;
    case 14:
      return -0.0f;
    case 15:
      return 0.5f;
    case 16:
      return std::nextafter(1.0f, 2.0f);
    case 17:
      return -std::numeric_limits<float>::denorm_min();
    case 18:
      return std::numeric_limits<float>::quiet_NaN();
    case 19:
      return std::numeric_limits<float>::infinity();
    case 20:
      return -std::numeric_limits<float>::infinity();
    case 21:
      return 2.0f;
    case 22:
      return r.U8() / 255.0f;
    case 23:
      return FromBits(r.U32());
    default:
      return 0.1f;
  }
}

// Returns a slice bound for c channels: the ends, inside, just outside, or anything.
int64_t SliceBound(Reader& r, int64_t c) {
  const int kind = r.U8() % 8;
  const int64_t room = c >= 0 && c < std::numeric_limits<int64_t>::max() ? c + 1 : 1;
  switch (kind) {
    case 0:
      return 0;
    case 1:
      return c;
    case 2:
      return r.U8() % room;
    case 3:
      return c - r.U8() % room;
    case 4:
      return -1 - r.U8();
    case 5:
      return c < std::numeric_limits<int64_t>::max() - 4 ? c + 1 + r.U8() % 4 : c;
    case 6:
      return static_cast<int64_t>(r.U64());
    default:
      return r.U8() & 1 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
}

Request Decode(Reader& r) {
  Request q;
  q.op = static_cast<Op>(r.U8() % kNumOps);
  DecodeTarget(r, q);
  const uint8_t sh = r.U8();
  q.shape_null = sh == 255;
  const int lk = sh % 8;
  q.layout = lk < 4 ? bnorm_nchw : lk < 7 ? bnorm_nhwc : static_cast<int32_t>(r.U32());
  if (q.op == kFold) {
    q.c = Dim(r);
  } else {
    q.n = Dim(r);
    q.c = Dim(r);
    q.spatial = Dim(r);
  }
  const uint8_t f = r.U8();
  q.flags = f < 248 ? (f & 7u) : r.U32();
  q.eps = DecodeEps(r);
  q.momentum = DecodeMomentum(r);
  const OpSpec& spec = Spec(q.op);
  for (const SlotSpec& slot : spec.slots) {
    const uint8_t v = r.U8();
    const int code = v & 15;
    Placement p;
    p.misalign = v >> 4;
    const int own_below = slot.required ? 12 : 7, null_below = slot.required ? 13 : 12;
    if (code < own_below) {
      // own buffer
    } else if (code < null_below) {
      p.present = false;
    } else {
      p.host = r.U8();  // resolved against the present slots before this one
      p.alias_kind = r.U8() % 8;
      p.amount = 1 + r.U8() % 8;
    }
    q.place.push_back(p);
  }
  for (const SlotSpec& slot : spec.slots) {
    DataSpec d;
    if (IsInput(slot.role)) {
      d.mode = r.U8() % 10;
      d.seed = r.U32();
      switch (d.mode) {
        case kNormal:
        case kRamp:
          d.a = Interesting(r);
          d.b = Interesting(r);
          break;
        case kRaw: {
          const int words = 1 + r.U8() % 16;
          for (int i = 0; i < words; ++i) d.raw.push_back(r.U32());
          break;
        }
        case kPalette:
        case kConstant: {
          const int k = 1 + r.U8() % (d.mode == kPalette ? 8 : 4);
          for (int i = 0; i < k; ++i) d.palette.push_back(Interesting(r));
          break;
        }
        case kSpecials:
          d.special_p = r.U8() / 255.0 * 0.25;
          break;
        default:
          d.mode = kSensible;
      }
    }
    q.data.push_back(d);
  }
  q.slice = q.op != kFold && r.U8() % 4 == 3;
  if (q.slice) {
    q.cb = SliceBound(r, q.c);
    q.ce = SliceBound(r, q.c);
  }
  return q;
}

// ---------------------------------------------------------------------------------
// The prediction: which rules of DESIGN.md "Bad input" the call breaks.

struct Violation {
  std::string rule;
  std::vector<std::string> names;  // the message must name one of these
};

struct Prediction {
  std::vector<Violation> violations;
  bool shape_ok = false;  // not NULL, no negative dimension, sizes within int64
  int64_t elements = 0, count = 0, c = 0;
  bool active = false;        // the call has work: elements > 0 (fold: c > 0)
  std::vector<int64_t> lens;  // declared floats of every slot
};

bool MulOverflows(int64_t a, int64_t b, int64_t* out) { return __builtin_mul_overflow(a, b, out); }

bool Relu(const Request& q) { return (q.flags & BNORM_FUSE_RELU) != 0; }

bool SlotRequired(const Request& q, size_t i) {
  const SlotSpec& s = Spec(q.op).slots[i];
  if (q.op == kBackward && std::string(s.name) == "y") return Relu(q);
  return s.required;
}

// Pointers of the slots, as integers (nullptr = 0), for the overlap rule.
Prediction Predict(const Request& q, const std::vector<uintptr_t>& ptrs) {
  Prediction p;
  const OpSpec& spec = Spec(q.op);
  auto fail = [&](const std::string& rule, std::vector<std::string> names) {
    p.violations.push_back(Violation{rule, std::move(names)});
  };
  if (q.op == kFold) {
    if (q.c < 0) {
      fail("c < 0", {"c"});
    } else if (q.c > std::numeric_limits<int64_t>::max() / 4) {
      fail("c * sizeof(float) overflows", {"c"});
    } else {
      p.shape_ok = true;
      p.c = q.c;
      p.active = q.c > 0;
    }
  } else if (q.shape_null) {
    fail("shape NULL", {"shape"});
  } else {
    bool neg = false;
    if (q.n < 0) fail("n < 0", {"shape->n"}), neg = true;
    if (q.c < 0) fail("c < 0", {"shape->c"}), neg = true;
    if (q.spatial < 0) fail("spatial < 0", {"shape->spatial"}), neg = true;
    if (q.layout != bnorm_nchw && q.layout != bnorm_nhwc) fail("unknown layout", {"shape->layout"});
    int64_t count = 0, elements = 0, bytes = 0;
    if (!neg) {
      if (MulOverflows(q.n, q.spatial, &count) || MulOverflows(count, q.c, &elements) ||
          MulOverflows(elements, 4, &bytes)) {
        fail("n*spatial or n*c*spatial*sizeof(float) overflows int64", {"shape"});
      } else if (q.c > std::numeric_limits<int64_t>::max() / 4) {
        // Per-channel buffers hold c floats: their size must fit too (with n or spatial
        // 0 the tensor is empty, but a c * 4 that overflows is no size at all).
        fail("c*sizeof(float) overflows int64", {"shape", "shape->c"});
      } else {
        p.shape_ok = true;
        p.count = count;
        p.elements = elements;
        p.c = q.c;
        p.active = elements > 0;
      }
    }
  }
  if (q.op == kTraining || q.op == kInference || q.op == kFold) {
    if (!(std::isfinite(q.eps) && q.eps > 0)) fail("eps not finite or not > 0", {"eps"});
  }
  if (q.op == kTraining && !(std::isfinite(q.momentum) && q.momentum >= 0 && q.momentum <= 1))
    fail("momentum not finite or outside [0, 1]", {"momentum"});
  if ((q.op != kMoments || q.slice) && q.op != kFold && (q.flags & ~7u) != 0)
    fail("unknown flag bits", {"flags"});
  if (q.slice && p.shape_ok && !(0 <= q.cb && q.cb <= q.ce && q.ce <= q.c)) {
    fail("slice not within 0 <= c_begin <= c_end <= c", {"c_begin", "c_end"});
    p.active = false;
  }
  if (q.slice && q.cb >= q.ce) p.active = false;
  if (q.op == kTraining) {
    const bool rm = ptrs[4] != 0, rv = ptrs[5] != 0;
    if (rm != rv)
      fail("running_mean and running_var: both or neither", {"running_mean", "running_var"});
    if (p.shape_ok && p.c > 0 && p.count < 2) fail("training with count < 2", {"shape"});
  }
  if (!p.shape_ok) return p;
  for (size_t i = 0; i < spec.slots.size(); ++i)
    p.lens.push_back(spec.slots[i].kind == kTensor ? p.elements : p.c);
  for (size_t i = 0; i < spec.slots.size(); ++i)
    if (p.active && ptrs[i] == 0 && SlotRequired(q, i))
      fail(std::string(spec.slots[i].name) + " NULL", {spec.slots[i].name});
  // Overlaps: an output must not share a byte with another buffer, except an output
  // tensor equal to an input tensor (in place), and in fold a per-channel output equal
  // to a per-channel input.
  for (size_t i = 0; i < spec.slots.size(); ++i) {
    const SlotSpec& out = spec.slots[i];
    if (!IsOutput(out.role) || ptrs[i] == 0 || p.lens[i] == 0) continue;
    for (size_t j = 0; j < spec.slots.size(); ++j) {
      const SlotSpec& other = spec.slots[j];
      if (j == i || ptrs[j] == 0 || p.lens[j] == 0) continue;
      const __int128 a0 = ptrs[i], a1 = a0 + __int128{p.lens[i]} * 4;
      const __int128 b0 = ptrs[j], b1 = b0 + __int128{p.lens[j]} * 4;
      if (!(a0 < b1 && b0 < a1)) continue;
      const bool exact = ptrs[i] == ptrs[j] && out.kind == other.kind && other.role == kIn &&
                         (out.kind == kTensor || q.op == kFold);
      if (exact) continue;
      fail(std::string(out.name) + " overlaps " + other.name, {out.name, other.name});
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------
// Memory: buffers grouped by aliasing, one heap block per group (exactly its size, so
// that AddressSanitizer sees any access past the end).

struct Group {
  int64_t lo = 0, hi = 0;  // float offsets spanned, relative to the first member
  int64_t head = 0;        // misalignment padding before lo (canaries)
  std::unique_ptr<float[]> mem;
  int64_t size() const { return head + hi - lo; }
};

struct Memory {
  std::vector<Group> groups;
  std::vector<int> group_of;    // per slot, -1 when NULL
  std::vector<int64_t> offset;  // per slot, relative to the group's first member
  std::vector<int64_t> alloc;   // per slot: floats backed by memory
  std::vector<float*> ptr;      // per slot
  std::vector<std::vector<uint32_t>> snapshot;

  float* At(int g, int64_t off) {
    return groups[g].mem.get() + groups[g].head + (off - groups[g].lo);
  }
  void Snapshot() {
    snapshot.clear();
    for (Group& g : groups) {
      std::vector<uint32_t> bits(static_cast<size_t>(g.size()));
      if (!bits.empty()) std::memcpy(bits.data(), g.mem.get(), bits.size() * 4);
      snapshot.push_back(std::move(bits));
    }
  }
  void Restore() {
    for (size_t g = 0; g < groups.size(); ++g)
      if (!snapshot[g].empty())
        std::memcpy(groups[g].mem.get(), snapshot[g].data(), snapshot[g].size() * 4);
  }
  // Returns the first group (and float) that differs from the snapshot, or -1.
  int64_t Changed(int* which) const {
    for (size_t g = 0; g < groups.size(); ++g) {
      const std::vector<uint32_t>& s = snapshot[g];
      if (s.empty() || std::memcmp(groups[g].mem.get(), s.data(), s.size() * 4) == 0) continue;
      for (size_t k = 0; k < s.size(); ++k) {
        uint32_t v;
        std::memcpy(&v, groups[g].mem.get() + k, 4);
        if (v != s[k]) {
          *which = static_cast<int>(g);
          return static_cast<int64_t>(k);
        }
      }
    }
    return -1;
  }
};

// Lays out the buffers: `lens` are the declared floats per slot; each gets memory for at
// most `cap` of them (all of them when the call can run; a call on a bigger shape must
// be refused before it touches anything).
void Layout(const Request& q, const std::vector<int64_t>& lens, int64_t cap, Memory& m) {
  const size_t slots = q.place.size();
  m.group_of.assign(slots, -1);
  m.offset.assign(slots, 0);
  m.alloc.assign(slots, 0);
  m.ptr.assign(slots, nullptr);
  std::vector<int> present;
  for (size_t i = 0; i < slots; ++i) {
    const Placement& p = q.place[i];
    if (!p.present) continue;
    const int64_t len = std::max<int64_t>(0, std::min(lens[i], cap));
    m.alloc[i] = len;
    if (p.host < 0 || present.empty()) {
      Group g;
      g.lo = 0;
      g.hi = len;
      g.head = p.misalign;
      m.groups.push_back(std::move(g));
      m.group_of[i] = static_cast<int>(m.groups.size()) - 1;
      m.offset[i] = 0;
    } else {
      const int host = present[p.host % present.size()];
      const int64_t host_len = m.alloc[host], a = p.amount;
      int64_t delta = 0;
      switch (p.alias_kind) {
        case 0:
          delta = 0;
          break;  // exactly equal
        case 1:
          delta = a;
          break;  // inside, a floats in
        case 2:
          delta = -a;
          break;  // starting a floats before
        case 3:
          delta = host_len - a;
          break;  // across the host's end
        case 4:
          delta = -(len - a);
          break;  // its end across the host's start
        case 5:
          delta = host_len;
          break;  // right after the host: no overlap
        case 6:
          delta = -len;
          break;  // right before the host: no overlap
        default:
          delta = host_len + a;
          break;  // a gap after the host
      }
      const int g = m.group_of[host];
      m.group_of[i] = g;
      m.offset[i] = m.offset[host] + delta;
      m.groups[g].lo = std::min(m.groups[g].lo, m.offset[i]);
      m.groups[g].hi = std::max(m.groups[g].hi, m.offset[i] + len);
    }
    present.push_back(static_cast<int>(i));
  }
  for (Group& g : m.groups) {
    g.mem.reset(new float[static_cast<size_t>(std::max<int64_t>(g.size(), 1))]);
    for (int64_t k = 0; k < g.size(); ++k) g.mem[k] = FromBits(kCanary);
  }
  for (size_t i = 0; i < slots; ++i)
    if (m.group_of[i] >= 0) m.ptr[i] = m.At(m.group_of[i], m.offset[i]);
}

// Fills the first `len` values of input slot `i` according to its data spec (sensible
// data depends on the slot).
void FillInput(const Request& q, const Prediction& p, size_t i, int64_t len, Memory& m) {
  const SlotSpec& slot = Spec(q.op).slots[i];
  const DataSpec& d = q.data[i];
  float* out = m.ptr[i];
  Rng rng((uint64_t{d.seed} << 8) + i);
  auto unit = [&rng] { return rng.Unit(); };
  auto normal = [&rng] { return rng.Normal(); };
  const int64_t c = std::max<int64_t>(p.c, 1);
  // Channel of element k: tensors in their layout, per-channel arrays k itself.
  auto channel = [&](int64_t k) -> int64_t {
    if (slot.kind == kChannel || q.op == kFold) return k;
    const int64_t spatial = std::max<int64_t>(q.spatial, 1);
    return q.layout == bnorm_nhwc ? k % c : (k / spatial) % c;
  };
  auto sensible = [&](int64_t k, const std::vector<double>& mean, const std::vector<double>& sd) {
    switch (slot.sense) {
      case kData: {
        const int64_t ch = channel(k) % static_cast<int64_t>(mean.size());
        return static_cast<float>(mean[ch] + sd[ch] * normal());
      }
      case kGrad:
      case kMask:
        return static_cast<float>(normal());
      case kPositive:
        return static_cast<float>(0.1 + 3.9 * unit());
      default:
        return static_cast<float>(unit() * 4 - 2);
    }
  };
  // Per-channel mean and std of sensible tensor data (as test_util.h RandomTensor).
  std::vector<double> mean(static_cast<size_t>(std::max<int64_t>(1, std::min(c, len)))),
      sd(mean.size());
  for (size_t ch = 0; ch < mean.size(); ++ch) {
    sd[ch] = std::exp2(unit() * 6 - 3);
    mean[ch] = sd[ch] * (unit() * 6 - 3);
  }
  static const float kSpecialValues[] = {std::numeric_limits<float>::quiet_NaN(),
                                         std::numeric_limits<float>::infinity(),
                                         -std::numeric_limits<float>::infinity(),
                                         std::numeric_limits<float>::denorm_min(),
                                         -1e-40f,
                                         0.0f,
                                         -0.0f,
                                         std::numeric_limits<float>::max(),
                                         std::numeric_limits<float>::min(),
                                         1e30f,
                                         -1e-30f,
                                         3e19f};
  for (int64_t k = 0; k < len; ++k) {
    float v = 0;
    switch (d.mode) {
      case kNormal:
        v = static_cast<float>(d.a + std::fabs(static_cast<double>(d.b)) * normal());
        break;
      case kRaw:
        v = FromBits(d.raw[static_cast<size_t>(k) % d.raw.size()]);
        break;
      case kPalette:
        v = d.palette[rng() % d.palette.size()];
        break;
      case kSpecials:
        v = unit() < d.special_p ? kSpecialValues[rng() % 12] : sensible(k, mean, sd);
        break;
      case kConstant:
        v = d.palette[static_cast<size_t>(channel(k)) % d.palette.size()];
        break;
      case kRamp:
        v = static_cast<float>(static_cast<double>(d.a) + static_cast<double>(d.b) * (k % 4099));
        break;
      default:
        v = sensible(k, mean, sd);
    }
    out[k] = v;
  }
}

// ---------------------------------------------------------------------------------
// Failure reports.

const char* FunctionName(const Request& q) { return (q.slice ? kSliceNames : kOpNames)[q.op]; }

std::string Describe(const Request& q, const Prediction& p, const Memory* m) {
  char buf[512];
  std::string s;
  std::snprintf(buf, sizeof(buf), "%s on %s", FunctionName(q), bnorm_active_target());
  s += buf;
  if (q.slice) {
    std::snprintf(buf, sizeof(buf), ", channels [%" PRId64 ", %" PRId64 ")", q.cb, q.ce);
    s += buf;
  }
  if (q.op == kFold) {
    std::snprintf(buf, sizeof(buf), ", c=%" PRId64, q.c);
  } else if (q.shape_null) {
    std::snprintf(buf, sizeof(buf), ", shape NULL");
  } else {
    std::snprintf(buf, sizeof(buf), ", n=%" PRId64 " c=%" PRId64 " spatial=%" PRId64 " layout=%d",
                  q.n, q.c, q.spatial, q.layout);
  }
  s += buf;
  std::snprintf(buf, sizeof(buf), ", flags=0x%x eps=%g (0x%08x) momentum=%g (0x%08x)%s\n", q.flags,
                q.eps, ToBits(q.eps), q.momentum, ToBits(q.momentum),
                q.dropped_x ? " [x dropped: too big to run]" : "");
  s += buf;
  const OpSpec& spec = Spec(q.op);
  for (size_t i = 0; i < spec.slots.size(); ++i) {
    const Placement& pl = q.place[i];
    std::snprintf(buf, sizeof(buf), "  %-13s %s", spec.slots[i].name,
                  !pl.present   ? "NULL"
                  : pl.host < 0 ? "own"
                                : "alias");
    s += buf;
    if (m && m->group_of[i] >= 0) {
      std::snprintf(buf, sizeof(buf), " group %d offset %" PRId64 " (%" PRId64 " floats)",
                    m->group_of[i], m->offset[i], p.lens.empty() ? int64_t{-1} : p.lens[i]);
      s += buf;
    }
    if (IsInput(spec.slots[i].role)) {
      std::snprintf(buf, sizeof(buf), " data mode %d", q.data[i].mode);
      s += buf;
    }
    s += "\n";
  }
  s += "  predicted: ";
  if (p.violations.empty()) s += "valid";
  for (const Violation& v : p.violations) s += "[" + v.rule + "] ";
  s += "\n";
  return s;
}

// ---------------------------------------------------------------------------------
// Expected outputs.

enum Mode : uint8_t { kSkip, kStrict, kClassify };
struct Expect {
  double value = 0, tol = 0;
  Mode mode = kSkip;
};

// Returns whether `got` is acceptable for `e` (see the tolerance notes at the top).
bool Accept(float got, const Expect& e) {
  const double g = got, v = e.value;
  switch (e.mode) {
    case kSkip:
      return true;
    case kClassify:
      if (!std::isfinite(v)) return !std::isfinite(g);
      break;
    case kStrict:
      if (std::isnan(v)) return std::isnan(g);
      if (std::isinf(v)) return g == v;
      break;
  }
  if (std::isnan(g)) return false;
  if (std::isinf(g)) return (g > 0) == (v > 0) && std::fabs(v) + e.tol >= kRoundsToInf;
  return std::fabs(g - v) <= e.tol;
}

bool Finite(double v) { return std::isfinite(v); }
// Whether a finite float64 intermediate is also finite in float32.
bool InRange(double v) { return !std::isfinite(v) || std::fabs(v) <= kFltMax; }
bool InHalfRange(double v) { return !std::isfinite(v) || std::fabs(v) <= kFltMax / 2; }

// Whether a nonzero float64 value rounds to 0 in float32.
bool Flushes(double v) { return v != 0 && static_cast<float>(v) == 0; }

// Variance tolerance, relative, by |mean| / std (see the notes at the top). Not
// kVarRel: that bound is for normal data (test_util.h); an outlier at the start of a
// block costs more (seen: 5e-6), within DESIGN.md's 1e-5.
double VarRel(double mean, double var) {
  const double sd = std::sqrt(var);
  const double ratio = sd > 0 ? std::fabs(mean) / sd : (mean == 0 ? 0 : 1e300);
  if (ratio <= 1e4) return kVarRelBigMean;
  return kVarRelBigMean * std::min(1e30, (ratio / 1e4) * (ratio / 1e4));
}

struct Inputs {  // values of every input slot before the call (empty: NULL)
  std::vector<std::vector<float>> v;
  const float* operator[](size_t i) const { return v[i].empty() ? nullptr : v[i].data(); }
};

using Expected = std::vector<std::vector<Expect>>;  // per slot (outputs only)

bnorm_shape ShapeOf(const Request& q) {
  bnorm_shape s{q.n, q.c, q.spatial, bnorm_nchw};
  std::memcpy(&s.layout, &q.layout, sizeof(int32_t));
  return s;
}

// Statistics of every channel of x and their tolerances.
struct ChannelStats {
  ref::Stats st;
  std::vector<double> mean_tol, var_tol;
};
ChannelStats StatsOf(const bnorm_shape& s, const float* x) {
  ChannelStats cs;
  cs.st = ref::Moments(s, x);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double mean = cs.st.mean[ch], var = cs.st.var[ch];
    const double sd = std::sqrt(var);
    cs.mean_tol.push_back(kMeanUlps * kUlp * (std::fabs(mean) + sd) + 16 * kDenorm);
    cs.var_tol.push_back(VarRel(mean, var) * var + 16 * kDenorm);
  }
  return cs;
}

Expected ExpectMoments(const Request& q, const Inputs& in) {
  const bnorm_shape s = ShapeOf(q);
  const ChannelStats cs = StatsOf(s, in[0]);
  Expected e(3);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    e[1].push_back({cs.st.mean[ch], cs.mean_tol[ch], kStrict});
    e[2].push_back({cs.st.var[ch], cs.var_tol[ch], kStrict});
  }
  return e;
}

Expected ExpectTraining(const Request& q, const Inputs& in) {
  const bnorm_shape s = ShapeOf(q);
  const float *x = in[0], *gamma = in[2], *beta = in[3], *rm = in[4], *rv = in[5];
  const ChannelStats cs = StatsOf(s, x);
  const double eps = q.eps, mo = q.momentum;
  const double count = static_cast<double>(ref::Count(s));
  const double corr = (q.flags & BNORM_RUNNING_VAR_BIASED) ? 1.0 : count / (count - 1);
  Expected e(8);
  e[1].resize(static_cast<size_t>(ref::Elements(s)));
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double mean = cs.st.mean[ch], var = cs.st.var[ch];
    const double invstd = 1.0 / std::sqrt(var + eps);
    const double invstd_rel = 0.5 * cs.var_tol[ch] / (var + eps) + 8 * kUlp;
    const double g = gamma ? gamma[ch] : 1.0, b = beta ? beta[ch] : 0.0;
    const double mul = g * invstd, sd = std::sqrt(var);
    const bool stats_finite = Finite(mean) && Finite(var);
    const bool params_finite = Finite(g) && Finite(b);
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        const double xc = x[o] - mean;
        double v = xc * invstd * g + b;
        if (Relu(q) && v < 0) v = 0;
        Expect& ex = e[1][static_cast<size_t>(o)];
        ex.value = v;
        if (!stats_finite) {
          ex.mode = kStrict;  // NaN or Inf in the channel: every y is NaN
          continue;
        }
        if (!InRange(xc) || !InRange(mul) || !InRange(xc * mul)) continue;  // float32 overflow
        ex.mode = params_finite ? kStrict : kClassify;
        const double mag = (std::fabs(x[o]) + std::fabs(mean) + sd) * std::fabs(mul) + std::fabs(b);
        ex.tol = (kOutUlps * kUlp + invstd_rel) * mag + cs.mean_tol[ch] * std::fabs(mul) +
                 kFloor * (1 + std::fabs(xc));
      }
    e[6].push_back({mean, cs.mean_tol[ch], kStrict});
    e[7].push_back({invstd, invstd_rel * invstd + 16 * kDenorm, kStrict});
    if (rm) {
      const double m_new = (1 - mo) * rm[ch] + mo * mean;
      const double v_new = (1 - mo) * rv[ch] + mo * var * corr;
      e[4].push_back({m_new,
                      mo * cs.mean_tol[ch] +
                          8 * kUlp * (std::fabs((1 - mo) * rm[ch]) + std::fabs(mo * mean)) +
                          16 * kDenorm,
                      kStrict});
      e[5].push_back({v_new,
                      mo * corr * cs.var_tol[ch] +
                          8 * kUlp * (std::fabs((1 - mo) * rv[ch]) + std::fabs(mo * var * corr)) +
                          16 * kDenorm,
                      kStrict});
    }
  }
  return e;
}

// y = (x - mean) * mul + add per element, mul = gamma / sqrt(var + eps) (inference) or
// scale (affine, mean 0): the elementwise expectation shared by both.
Expected ExpectElementwise(const Request& q, const float* x, const std::vector<double>& sub,
                           const std::vector<double>& mul, const std::vector<double>& add,
                           size_t slots, size_t y_slot) {
  const bnorm_shape s = ShapeOf(q);
  Expected e(slots);
  e[y_slot].resize(static_cast<size_t>(ref::Elements(s)));
  for (int64_t ch = 0; ch < s.c; ++ch)
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        const double xc = x[o] - sub[ch], prod = xc * mul[ch];
        double v = prod + add[ch];
        if (Relu(q) && v < 0) v = 0;
        Expect& ex = e[y_slot][static_cast<size_t>(o)];
        ex.value = v;
        if (!InRange(xc) || !InRange(mul[ch]) || !InRange(prod)) continue;
        // A multiplier below float32's range is 0 there: Inf * 0 is NaN, not Inf.
        if (!Finite(xc) && Flushes(mul[ch])) continue;
        ex.mode = kStrict;
        const double mag =
            (std::fabs(x[o]) + std::fabs(sub[ch])) * std::fabs(mul[ch]) + std::fabs(add[ch]);
        ex.tol = kOutUlps * kUlp * mag + kFloor * (1 + std::fabs(xc));
      }
  return e;
}

Expected ExpectInference(const Request& q, const Inputs& in) {
  const int64_t c = q.c;
  std::vector<double> sub(c), mul(c), add(c);
  for (int64_t ch = 0; ch < c; ++ch) {
    const double g = in[2] ? in[2][ch] : 1.0;
    sub[ch] = in[4][ch];
    mul[ch] = g / std::sqrt(static_cast<double>(in[5][ch]) + q.eps);
    add[ch] = in[3] ? in[3][ch] : 0.0;
  }
  return ExpectElementwise(q, in[0], sub, mul, add, 6, 1);
}

Expected ExpectAffine(const Request& q, const Inputs& in) {
  const int64_t c = q.c;
  std::vector<double> sub(c, 0.0), mul(c), add(c);
  for (int64_t ch = 0; ch < c; ++ch) {
    mul[ch] = in[2][ch];
    add[ch] = in[3][ch];
  }
  return ExpectElementwise(q, in[0], sub, mul, add, 4, 1);
}

Expected ExpectFold(const Request& q, const Inputs& in) {
  Expected e(6);
  for (int64_t ch = 0; ch < q.c; ++ch) {
    const double g = in[0] ? in[0][ch] : 1.0, b = in[1] ? in[1][ch] : 0.0;
    const double m = in[2][ch], v = in[3][ch];
    const double scale = g / std::sqrt(v + q.eps);
    const double shift = b - m * scale;
    e[4].push_back({scale, 4 * kUlp * std::fabs(scale) + 4 * kDenorm, kStrict});
    e[5].push_back(
        {shift, 4 * kUlp * (std::fabs(b) + std::fabs(m * scale)) + 4 * kDenorm, kStrict});
  }
  return e;
}

Expected ExpectBackward(const Request& q, const Inputs& in) {
  const bnorm_shape s = ShapeOf(q);
  const float *x = in[0], *dy = in[1], *sm = in[2], *si = in[3], *gamma = in[4], *y = in[5];
  const bool relu = Relu(q);
  const ref::Gradients want = ref::Backward(s, x, dy, sm, si, gamma, y, relu);
  const double count = static_cast<double>(ref::Count(s));
  Expected e(9);
  e[6].resize(static_cast<size_t>(ref::Elements(s)));
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double mean = sm[ch], invstd = si[ch], g = gamma ? gamma[ch] : 1.0;
    // finite: no NaN or Inf among the values the channel's results depend on (dy where
    // the ReLU mask zeroes it does not count: both sides use 0 there).
    bool finite = Finite(mean) && Finite(invstd) && Finite(g);
    // The float32 parts: x - mean, dy * (x - mean), and the block sums of dy and of
    // dy * (x - mean) must not overflow where they are finite in float64.
    bool xc_ok = true;
    double abs_dy = 0, abs_dy_xc = 0;
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        const double d = relu && y[o] <= 0 ? 0.0 : static_cast<double>(dy[o]);
        const double xc = x[o] - mean, t = d * xc;
        finite = finite && Finite(x[o]) && Finite(d);
        xc_ok = xc_ok && InRange(xc) && InRange(t);
        if (Finite(d)) abs_dy += std::fabs(d);
        if (Finite(t)) abs_dy_xc += std::fabs(t);
      }
    const bool dbeta_ok = abs_dy <= kFltMax / 2;
    const bool dgamma_ok = dbeta_ok && xc_ok && abs_dy_xc <= kFltMax / 2;
    const double k = g * invstd;
    const double dg = want.dgamma.value[ch], db = want.dbeta.value[ch];
    const double k_xc = -k * invstd * dg / count, k_0 = -k * db / count;
    const bool coef_ok = dgamma_ok && InRange(k) && InRange(k_xc) && InRange(k_0);
    const Mode mode = finite ? kStrict : kClassify;
    e[7].push_back(
        {dg, kOutUlps * kUlp * want.dgamma.mag[ch] + kFloor * (1 + count) * (1 + std::fabs(invstd)),
         dgamma_ok ? mode : kSkip});
    e[8].push_back(
        {db, kOutUlps * kUlp * want.dbeta.mag[ch] + kFloor * (1 + count), dbeta_ok ? mode : kSkip});
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        const double d = relu && y[o] <= 0 ? 0.0 : static_cast<double>(dy[o]);
        const double xc = x[o] - mean;
        Expect& ex = e[6][static_cast<size_t>(o)];
        ex.value = want.dx.value[static_cast<size_t>(o)];
        // dx sums three terms: each within half the float32 range, any partial sum fits.
        if (!coef_ok || !InHalfRange(k * d) || !InHalfRange(k_xc * xc) || !InHalfRange(k_0))
          continue;
        ex.mode = mode;
        ex.tol = kOutUlps * kUlp * want.dx.mag[static_cast<size_t>(o)] +
                 kFloor * (1 + std::fabs(d) + std::fabs(xc) +
                           std::fabs(k) * (1 + std::fabs(xc * invstd)) * (1 + std::fabs(invstd)));
      }
  }
  return e;
}

Expected ExpectOf(const Request& q, const Inputs& in) {
  switch (q.op) {
    case kMoments:
      return ExpectMoments(q, in);
    case kTraining:
      return ExpectTraining(q, in);
    case kInference:
      return ExpectInference(q, in);
    case kFold:
      return ExpectFold(q, in);
    case kAffine:
      return ExpectAffine(q, in);
    case kBackward:
      return ExpectBackward(q, in);
    default:
      return {};
  }
}

// ---------------------------------------------------------------------------------
// The call.

bnorm_status Call(const Request& q, const std::vector<float*>& b, unsigned flags, bool slice) {
  const bnorm_shape shape = ShapeOf(q);
  const bnorm_shape* s = q.shape_null ? nullptr : &shape;
  const int64_t cb = q.cb, ce = q.ce;
  if (slice) switch (q.op) {
      case kMoments:
        return bnorm_moments_slice_f32(s, cb, ce, b[0], b[1], b[2], flags);
      case kTraining:
        return bnorm_forward_training_slice_f32(s, cb, ce, b[0], b[1], b[2], b[3], q.eps,
                                                q.momentum, b[4], b[5], b[6], b[7], flags);
      case kInference:
        return bnorm_forward_inference_slice_f32(s, cb, ce, b[0], b[1], b[2], b[3], b[4], b[5],
                                                 q.eps, flags);
      case kAffine:
        return bnorm_affine_slice_f32(s, cb, ce, b[0], b[1], b[2], b[3], flags);
      case kBackward:
        return bnorm_backward_slice_f32(s, cb, ce, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                                        b[8], flags);
      default:
        break;
    }
  switch (q.op) {
    case kMoments:
      return bnorm_moments_f32(s, b[0], b[1], b[2]);
    case kTraining:
      return bnorm_forward_training_f32(s, b[0], b[1], b[2], b[3], q.eps, q.momentum, b[4], b[5],
                                        b[6], b[7], flags);
    case kInference:
      return bnorm_forward_inference_f32(s, b[0], b[1], b[2], b[3], b[4], b[5], q.eps, flags);
    case kFold:
      return bnorm_fold_f32(q.c, b[0], b[1], b[2], b[3], q.eps, b[4], b[5]);
    case kAffine:
      return bnorm_affine_f32(s, b[0], b[1], b[2], b[3], flags);
    case kBackward:
      return bnorm_backward_f32(s, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], flags);
    default:
      return bnorm_internal_error;
  }
}

bool NamesToken(const std::string& msg, const std::string& name) {
  auto ident = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
  for (size_t at = msg.find(name); at != std::string::npos; at = msg.find(name, at + 1)) {
    const size_t end = at + name.size();
    // "shape->n" must not match "shape->n" inside "shape->nothing"; '-' and '>' end a token.
    if ((at == 0 || !ident(msg[at - 1])) && (end >= msg.size() || !ident(msg[end]))) return true;
  }
  return false;
}

const char kSentinel[] = "fuzz-sentinel-target";

void SetSentinel() {
  if (bnorm_set_target(kSentinel) != bnorm_invalid_argument) {
    std::fprintf(stderr, "bnorm_set_target(\"%s\") was not refused\n", kSentinel);
    Abort();
  }
}

// Selects the decoded target and checks bnorm_set_target's answer.
void ApplyTarget(const Request& q) {
  if (bnorm_set_target(nullptr) != bnorm_success) {
    std::fprintf(stderr, "bnorm_set_target(NULL) failed: %s\n", bnorm_last_error());
    Abort();
  }
  const std::string best = bnorm_active_target();
  const std::vector<std::string>& sup = Supported();
  if (best != sup[0]) {
    std::fprintf(stderr, "best target %s, active %s\n", sup[0].c_str(), best.c_str());
    Abort();
  }
  if (q.target_kind == kTargetNull) return;  // already done
  const char* name = q.target_kind == kTargetEmpty ? "" : q.target_name.c_str();
  bnorm_status want = bnorm_invalid_argument;
  std::string canonical = best;
  if (name[0] != '\0') {
    for (const char* known : kKnownTargets) {
      if (strcasecmp(known, name) != 0) continue;
      const bool supported = std::find(sup.begin(), sup.end(), known) != sup.end();
      want = supported ? bnorm_success : bnorm_unsupported;
      canonical = supported ? known : best;
    }
  } else {
    want = bnorm_success;
  }
  SetSentinel();
  const bnorm_status got = bnorm_set_target(name);
  const std::string active = bnorm_active_target(), msg = bnorm_last_error();
  if (got != want || active != canonical ||
      (got != bnorm_success && msg.find(name) == std::string::npos) ||
      (got == bnorm_success && msg.find(kSentinel) == std::string::npos)) {
    std::fprintf(stderr,
                 "bnorm_set_target(\"%s\"): status %d (want %d), active %s (want %s), "
                 "message \"%s\"\n",
                 name, got, want, active.c_str(), canonical.c_str(), msg.c_str());
    Abort();
  }
}

void CheckRejected(const Request& q, const Prediction& p, Memory& m, bnorm_status got) {
  const std::string msg = bnorm_last_error();
  const std::string prefix = std::string(FunctionName(q)) + ": ";
  const char* problem = nullptr;
  int g = -1;
  int64_t changed = m.Changed(&g);
  bool named = false;
  for (const Violation& v : p.violations)
    for (const std::string& n : v.names)
      named = named || NamesToken(msg.substr(std::min(msg.size(), prefix.size())), n);
  if (got != bnorm_invalid_argument) {
    problem = "status is not bnorm_invalid_argument";
  } else if (changed >= 0) {
    problem = "a failed call changed a buffer";
  } else if (msg.compare(0, prefix.size(), prefix) != 0) {
    problem = "the message does not start with the function name";
  } else if (msg.find('\n') != std::string::npos || msg.size() >= 511) {
    problem = "the message is not one line";
  } else if (!named) {
    problem = "the message names none of the broken arguments";
  }
  if (!problem) return;
  std::fprintf(stderr, "FAIL: %s\n%sstatus %d (%s), message \"%s\"\n", problem,
               Describe(q, p, &m).c_str(), got, bnorm_status_string(got), msg.c_str());
  if (changed >= 0)
    std::fprintf(stderr, "first changed float: group %d index %" PRId64 "\n", g, changed);
  Abort();
}

// Returns whether element k of slot i belongs to the call's channels (a slice's
// [cb, ce), or all).
bool InCall(const Request& q, size_t i, int64_t k) {
  if (!q.slice) return true;
  int64_t ch = k;
  if (Spec(q.op).slots[i].kind == kTensor)
    ch = q.layout == bnorm_nhwc ? k % q.c : (k / q.spatial) % q.c;
  return q.cb <= ch && ch < q.ce;
}

// Positions (group, float index) the call may write: its outputs' elements of its
// channels.
std::vector<std::vector<uint8_t>> OutputMask(const Request& q, Memory& m) {
  std::vector<std::vector<uint8_t>> mask;
  for (const Group& g : m.groups) mask.emplace_back(static_cast<size_t>(g.size()), 0);
  const OpSpec& spec = Spec(q.op);
  for (size_t i = 0; i < spec.slots.size(); ++i) {
    if (!IsOutput(spec.slots[i].role) || m.group_of[i] < 0) continue;
    const Group& g = m.groups[m.group_of[i]];
    const int64_t first = g.head + m.offset[i] - g.lo;
    for (int64_t k = 0; k < m.alloc[i]; ++k)
      if (InCall(q, i, k)) mask[m.group_of[i]][first + k] = 1;
  }
  return mask;
}

std::vector<std::vector<uint32_t>> GroupBits(const Memory& m) {
  std::vector<std::vector<uint32_t>> all;
  for (const Group& g : m.groups) {
    std::vector<uint32_t> bits(static_cast<size_t>(g.size()));
    if (!bits.empty()) std::memcpy(bits.data(), g.mem.get(), bits.size() * 4);
    all.push_back(std::move(bits));
  }
  return all;
}

void RunValid(const Request& q, const Prediction& p, Memory& m) {
  const OpSpec& spec = Spec(q.op);
  const size_t slots = spec.slots.size();
  // Inputs and their values before the call (inputs may overlap each other: read back).
  Inputs in;
  in.v.resize(slots);
  for (size_t i = 0; i < slots; ++i)
    if (IsInput(spec.slots[i].role) && m.ptr[i]) in.v[i].assign(m.ptr[i], m.ptr[i] + m.alloc[i]);
  const std::vector<std::vector<uint8_t>> mask = OutputMask(q, m);
  // Outputs that no input shares get the poison of each run.
  auto poison = [&](uint32_t bits) {
    m.Restore();
    for (size_t i = 0; i < slots; ++i) {
      if (spec.slots[i].role != kOut || !m.ptr[i]) continue;
      bool shared = false;
      for (size_t j = 0; j < slots; ++j)
        shared = shared || (j != i && IsInput(spec.slots[j].role) && m.ptr[j] == m.ptr[i]);
      if (shared) continue;
      for (int64_t k = 0; k < m.alloc[i]; ++k) m.ptr[i][k] = FromBits(bits);
    }
  };
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "FAIL: %s\n%s", what.c_str(), Describe(q, p, &m).c_str());
    Abort();
  };
  // Runs the call and checks that nothing outside `mask` changed; returns the bits of
  // every output (outside the call's channels: as they were).
  auto run = [&](const char* name, unsigned flags, bool slice) {
    const std::vector<std::vector<uint32_t>> before = GroupBits(m);
    const bnorm_status got = Call(q, m.ptr, flags, slice);
    if (got != bnorm_success)
      fail(std::string(name) + ": a valid call failed: " + bnorm_status_string(got) + ": " +
           bnorm_last_error());
    if (slice == q.slice) {  // (the whole call of a slice request writes more)
      for (size_t g = 0; g < m.groups.size(); ++g)
        for (size_t k = 0; k < mask[g].size(); ++k) {
          uint32_t v;
          std::memcpy(&v, m.groups[g].mem.get() + k, 4);
          if (!mask[g][k] && v != before[g][k])
            fail(std::string(name) + ": a float outside the outputs" +
                 (q.slice ? " of the slice" : "") + " changed (group " + std::to_string(g) +
                 ", index " + std::to_string(k) + ")");
        }
    }
    std::vector<std::vector<uint32_t>> out(slots);
    for (size_t i = 0; i < slots; ++i) {
      if (!IsOutput(spec.slots[i].role) || !m.ptr[i]) continue;
      out[i].resize(static_cast<size_t>(m.alloc[i]));
      if (!out[i].empty()) std::memcpy(out[i].data(), m.ptr[i], out[i].size() * 4);
    }
    return out;
  };
  // Compares the outputs of two runs on the call's channels.
  auto same = [&](const std::vector<std::vector<uint32_t>>& a,
                  const std::vector<std::vector<uint32_t>>& b, const char* what) {
    for (size_t i = 0; i < slots; ++i)
      for (size_t k = 0; k < a[i].size(); ++k) {
        if (a[i][k] == b[i][k] || !InCall(q, i, static_cast<int64_t>(k))) continue;
        char buf[240];
        std::snprintf(buf, sizeof(buf), "%s[%zu] differs: 0x%08x, then 0x%08x %s",
                      spec.slots[i].name, k, a[i][k], b[i][k], what);
        fail(buf);
      }
  };
  poison(kPoison1);
  const std::vector<std::vector<uint32_t>> first = run("run 1", q.flags, q.slice);
  // The second run toggles BNORM_SERIAL: results must not depend on the threads, and an
  // unwritten output shows as the other poison.
  poison(kPoison2);
  same(first, run("run 2", q.flags ^ BNORM_SERIAL, q.slice),
       "with BNORM_SERIAL toggled (unwritten, or not deterministic)");
  if (q.slice) {  // a slice gives the bits of the whole call
    poison(kPoison1);
    same(first, run("whole call", q.flags, false), "in the whole call");
  }
  const Expected want = ExpectOf(q, in);
  for (size_t i = 0; i < slots; ++i) {
    if (!IsOutput(spec.slots[i].role) || !m.ptr[i]) continue;
    const std::vector<Expect>& e = want[i];
    if (static_cast<int64_t>(e.size()) != m.alloc[i]) fail("internal: expectation size");
    for (size_t k = 0; k < e.size(); ++k) {
      const float got = FromBits(first[i][k]);
      if (!InCall(q, i, static_cast<int64_t>(k)) || Accept(got, e[k])) continue;
      char buf[300];
      std::snprintf(buf, sizeof(buf), "%s[%zu] = %.9g (0x%08x), want %.17g +- %.3g (%s)",
                    spec.slots[i].name, k, got, first[i][k], e[k].value, e[k].tol,
                    e[k].mode == kStrict ? "strict" : "finite iff the reference is");
      std::string what = buf;
      if (spec.slots[i].kind == kTensor && q.op != kFold) {
        const bnorm_shape s = ShapeOf(q);
        const int64_t o = static_cast<int64_t>(k);
        const int64_t ch = q.layout == bnorm_nhwc ? o % s.c : (o / s.spatial) % s.c;
        what += ", channel " + std::to_string(ch);
        if (in[0]) {
          std::snprintf(buf, sizeof(buf), ", x = %.9g", in[0][k]);
          what += buf;
        }
      }
      fail(what);
    }
  }
}

// BNORM_FUZZ_VERBOSE=1: describe every call (to check what seeds decode to).
bool Verbose() {
  static const bool verbose = std::getenv("BNORM_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

void RunOne(const uint8_t* data, size_t size) {
  Reader r(data, size);
  Request q = Decode(r);
  ApplyTarget(q);
  const OpSpec& spec = Spec(q.op);
  const size_t slots = spec.slots.size();

  // Lay out with the declared lengths (when the shape has them), predict, and if the
  // call is valid but too big to run, drop x (or fold's mean) and predict again.
  Memory m;
  Prediction p;
  struct Report {  // prints the call once decided, with BNORM_FUZZ_VERBOSE
    const Request& q;
    const Prediction& p;
    const Memory& m;
    ~Report() {
      if (Verbose()) std::fprintf(stderr, "%s", Describe(q, p, &m).c_str());
    }
  } report{q, p, m};
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<int64_t> lens(slots, 16);
    {
      const Prediction shape_only = Predict(q, std::vector<uintptr_t>(slots, 0));
      if (shape_only.shape_ok) lens = shape_only.lens;
    }
    const int64_t longest = *std::max_element(lens.begin(), lens.end());
    m = Memory();
    Layout(q, lens, longest <= kMaxElements ? kMaxElements : 4096, m);
    std::vector<uintptr_t> ptrs(slots);
    for (size_t i = 0; i < slots; ++i) ptrs[i] = reinterpret_cast<uintptr_t>(m.ptr[i]);
    p = Predict(q, ptrs);
    const int64_t work = q.op == kFold ? p.c : p.elements;
    if (p.violations.empty() && p.active && work > kMaxElements) {
      const size_t drop = q.op == kFold ? 2 : 0;  // mean, x
      q.place[drop].present = false;
      q.dropped_x = true;
      continue;
    }
    break;
  }
  // Data: outputs get poison, then inputs their data (an input that shares memory with
  // an output, in place, keeps its data).
  for (size_t i = 0; i < slots; ++i)
    if (spec.slots[i].role == kOut && m.ptr[i])
      for (int64_t k = 0; k < m.alloc[i]; ++k) m.ptr[i][k] = FromBits(kPoison1);
  // A call that must be refused reads nothing: a few thousand values are enough.
  const bool refused = !p.violations.empty();
  for (size_t i = 0; i < slots; ++i)
    if (IsInput(spec.slots[i].role) && m.ptr[i])
      FillInput(q, p, i, refused ? std::min<int64_t>(m.alloc[i], 4096) : m.alloc[i], m);
  m.Snapshot();

  if (refused) {
    SetSentinel();
    const bnorm_status got = Call(q, m.ptr, q.flags, q.slice);
    CheckRejected(q, p, m, got);
    return;
  }
  if (!p.active) {
    SetSentinel();
    const bnorm_status got = Call(q, m.ptr, q.flags, q.slice);
    int g = -1;
    const int64_t changed = m.Changed(&g);
    if (got != bnorm_success || changed >= 0) {
      std::fprintf(stderr, "FAIL: empty call: status %d (%s), %s\n%s", got, bnorm_last_error(),
                   changed >= 0 ? "a buffer changed" : "no buffer changed",
                   Describe(q, p, &m).c_str());
      Abort();
    }
    return;
  }
  RunValid(q, p, m);
}

}  // namespace
}  // namespace fuzz
}  // namespace bnorm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bnorm::fuzz::RunOne(data, size);
  return 0;
}
