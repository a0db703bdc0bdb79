// Shared helpers for the bnorm tests: the loop over every supported target, shapes
// that reach every remainder path, seeded data, poisoned buffers with canaries, and the
// tolerance checks against the float64 reference (reference.h).
// Include after doctest.h (each test file defines DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN).
#ifndef BNORM_TEST_TEST_UTIL_H_
#define BNORM_TEST_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"
#include "test/reference.h"

namespace bnorm {
namespace test {

// ---------------------------------------------------------------------------------
// Tolerances. All are against the float64 reference run on the same float32 inputs.
//
// kMeanUlps: the mean is accepted within 16 float32 ulps of |mean| + std
//   (ref::MeanMag). One pass over blocks merged in a tree rounds O(log count) times;
//   16 ulps is a few roundings of each level. Dropping or adding one element moves
//   the mean by about std/count, which is > 16 ulps of (|mean| + std) for every
//   count used here (count <= ~5000 in the edge shapes, |mean| <= 3 std).
constexpr double kMeanUlps = 16;
// kVarRel: the biased variance is accepted within 2e-6 relative (about 34 ulps) for
//   data with |mean| <= 3 std. A stable one-pass method (Welford / Chan, or shifted
//   sums) loses a few ulps per merge level and a factor of about (1 + |mean|/std)
//   through the rounding of the mean; 34 ulps leaves room for both. A divisor off by
//   one element (M2/(count +- 1)) is a relative error of 1/count >= 2e-4 here.
constexpr double kVarRel = 2e-6;
// kVarRelBigMean: data with |mean| = 1e4 std. DESIGN.md promises 1e-5 relative up to
//   that ratio. The naive E[x^2] - E[x]^2 in float32 cancels (1e4)^2 = 1e8 times the
//   variance, i.e. it is wrong by ~6 times the variance itself: rejected by far.
constexpr double kVarRelBigMean = 1e-5;
// kOutUlps: y, dx, dgamma, dbeta, scale and shift are accepted within 64 ulps of the
//   magnitude the reference provides (for y: (|x| + |mean| + std) * |invstd * gamma|
//   + |beta|). Each output is a handful of float32 roundings (< 8 ulps) of terms bounded
//   by that magnitude, plus, in training, the error of the batch statistics: mean
//   16 ulps of (|mean| + std) and invstd 1e-6 relative (half of kVarRel), i.e. < 50
//   ulps of the magnitude in all. Reading a neighbouring element instead of the right
//   one is off by O(std) = O(2^24 ulps) and fails.
constexpr double kOutUlps = 64;

// ---------------------------------------------------------------------------------
// Formatting for failure messages.

inline std::string Fmt(double v) {
  std::ostringstream os;
  os << std::setprecision(10) << v;
  return os.str();
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline std::string Hex(float f) {
  std::ostringstream os;
  os << "0x" << std::hex << std::setw(8) << std::setfill('0') << Bits(f);
  return os.str();
}

inline const char* LayoutName(bnorm_layout layout) {
  return layout == bnorm_nchw ? "NCHW" : layout == bnorm_nhwc ? "NHWC" : "bad-layout";
}

inline std::string ShapeString(const bnorm_shape& s) {
  std::ostringstream os;
  os << LayoutName(s.layout) << " n=" << s.n << " c=" << s.c << " spatial=" << s.spatial;
  return os.str();
}

// Returns "index I (image i, channel ch, position sp)" for element `index` of `s`.
inline std::string Where(const bnorm_shape& s, int64_t index) {
  int64_t i, ch, sp;
  if (s.layout == bnorm_nchw) {
    sp = index % s.spatial;
    ch = (index / s.spatial) % s.c;
    i = index / (s.spatial * s.c);
  } else {
    ch = index % s.c;
    sp = (index / s.c) % s.spatial;
    i = index / (s.spatial * s.c);
  }
  std::ostringstream os;
  os << "index " << index << " (image " << i << ", channel " << ch << ", position " << sp << ")";
  return os.str();
}

inline bnorm_shape Shape(int64_t n, int64_t c, int64_t spatial, bnorm_layout layout) {
  return bnorm_shape{n, c, spatial, layout};
}

// ---------------------------------------------------------------------------------
// Targets.

// Returns the names of a space-separated list (a target list, BNORM_TEST_TARGETS).
inline std::vector<std::string> SplitNames(const char* list) { return TargetNames(list ? list : ""); }

inline std::vector<std::string> SupportedTargets() { return SplitNames(bnorm_supported_targets()); }

// Whether the suite runs under an emulator (BNORM_TEST_QUICK set and not "0": tools/run.sh
// sets it in its qemu lanes, test/meson.build for the embedding tests of cross builds):
// tests then use fewer calls and smaller shapes of the same work plans.
inline bool QuickRun() {
  const char* env = std::getenv("BNORM_TEST_QUICK");
  return env != nullptr && *env != 0 && std::strcmp(env, "0") != 0;
}

// Restores the best target when a test leaves (also on a failed REQUIRE).
struct RestoreBestTarget {
  ~RestoreBestTarget() { bnorm_set_target(nullptr); }
};

// Returns the targets ForEachTarget runs: every supported one, or, when the environment
// variable BNORM_TEST_TARGETS lists names (space-separated), those of them, each of
// which must be supported. tools/run.sh uses it under emulation so that each (target,
// vector length) pair runs once over its five emulated CPUs rather than up to five
// times (NEON on every one of them).
inline std::vector<std::string> TestTargets() {
  const std::vector<std::string> supported = SupportedTargets();
  const char* env = std::getenv("BNORM_TEST_TARGETS");
  if (env == nullptr || env[0] == '\0') return supported;
  std::vector<std::string> chosen;
  for (const std::string& t : supported) {
    for (const std::string& wanted : SplitNames(env)) {
      if (t == wanted) chosen.push_back(t);
    }
  }
  for (const std::string& wanted : SplitNames(env)) {
    INFO("BNORM_TEST_TARGETS=", std::string(env), ", supported: ", bnorm_supported_targets());
    REQUIRE(std::find(supported.begin(), supported.end(), wanted) != supported.end());
  }
  return chosen;
}

// Runs body(target) once per target of TestTargets() (every supported target unless
// BNORM_TEST_TARGETS says otherwise), after selecting it and checking that dispatch
// really switched; restores the best target at the end.
template <class Body>
void ForEachTarget(Body&& body) {
  const std::vector<std::string> targets = TestTargets();
  REQUIRE(!targets.empty());
  RestoreBestTarget restore;
  for (const std::string& target : targets) {
    INFO("target ", target);
    REQUIRE(bnorm_set_target(target.c_str()) == bnorm_success);
    CHECK(std::string(bnorm_active_target()) == target);
    body(target);
  }
}

// ---------------------------------------------------------------------------------
// Shapes.

// Every pair of c and spatial in {1, 2, 3, 7, 15, 16, 17, 31, 33} (below, at and above
// every vector width from 1 to 16 lanes, and 2N+1), with n cycling over 1..3; then
// larger and prime sizes, channel counts above 512/1024 and counts above 2048/4096 (to
// cross block and tile boundaries). `min_count` drops shapes with n*spatial below it.
inline std::vector<bnorm_shape> EdgeShapes(bnorm_layout layout, int64_t min_count = 1) {
  static const int64_t kDims[] = {1, 2, 3, 7, 15, 16, 17, 31, 33};
  std::vector<bnorm_shape> shapes;
  int k = 0;
  for (int64_t c : kDims)
    for (int64_t sp : kDims) shapes.push_back(Shape(1 + (k++ % 3), c, sp, layout));
  const bnorm_shape extra[] = {
      Shape(1, 1000, 1, layout),  Shape(4, 1000, 1, layout), Shape(1, 1, 1000, layout),
      Shape(2, 1, 1009, layout),  Shape(1, 3, 1000, layout), Shape(2, 1000, 3, layout),
      Shape(3, 37, 97, layout),   Shape(1, 5, 4099, layout), Shape(7, 13, 61, layout),
      Shape(64, 33, 1, layout),   Shape(1, 2, 2, layout),    Shape(5, 2, 1000, layout),
      Shape(1, 513, 7, layout),   Shape(1, 1025, 3, layout), Shape(2, 3, 2049, layout),
      Shape(1, 17, 2053, layout), Shape(9, 19, 23, layout),  Shape(2, 4, 8, layout),
  };
  for (const bnorm_shape& s : extra) shapes.push_back(s);
  std::vector<bnorm_shape> kept;
  for (const bnorm_shape& s : shapes)
    if (s.n * s.spatial >= min_count) kept.push_back(s);
  return kept;
}

// A smaller list for tests that make many calls per shape.
inline std::vector<bnorm_shape> FewShapes(bnorm_layout layout, int64_t min_count = 1) {
  const bnorm_shape shapes[] = {
      Shape(1, 1, 2, layout),    Shape(2, 3, 1, layout),    Shape(1, 7, 15, layout),
      Shape(3, 16, 17, layout),  Shape(2, 17, 16, layout),  Shape(1, 33, 31, layout),
      Shape(1, 5, 1009, layout), Shape(2, 1000, 3, layout), Shape(1, 1, 1, layout),
  };
  std::vector<bnorm_shape> kept;
  for (const bnorm_shape& s : shapes)
    if (s.n * s.spatial >= min_count) kept.push_back(s);
  return kept;
}

// Shapes big enough to be cut into many chunks (determinism, accuracy on long channels).
inline std::vector<bnorm_shape> LargeShapes() {
  return {Shape(4, 3, 100000, bnorm_nchw), Shape(2, 77, 5000, bnorm_nhwc),
          Shape(1, 5, 200000, bnorm_nhwc),  Shape(2, 64, 3000, bnorm_nchw),
          // Short NCHW planes handled as rows: flat periods, and tiles of whole channels.
          Shape(3000, 7, 9, bnorm_nchw),    Shape(200, 100, 20, bnorm_nchw),
          // Wide NHWC rows cut into tiles and chunks.
          Shape(300, 1500, 1, bnorm_nhwc)};
}

constexpr bnorm_layout kLayouts[] = {bnorm_nchw, bnorm_nhwc};

// ---------------------------------------------------------------------------------
// Data.

// A fixed-seed generator per test (and per shape, so that shapes do not depend on the
// order they run in).
inline std::mt19937 Rng(const bnorm_shape& s, uint32_t salt) {
  std::seed_seq seq{static_cast<uint32_t>(s.n), static_cast<uint32_t>(s.c),
                    static_cast<uint32_t>(s.spatial), static_cast<uint32_t>(s.layout), salt};
  return std::mt19937(seq);
}

inline double Uniform(std::mt19937& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// Returns c values uniform in [lo, hi).
inline std::vector<float> RandomVec(int64_t c, std::mt19937& rng, double lo, double hi) {
  std::vector<float> v(c);
  for (auto& e : v) e = static_cast<float>(Uniform(rng, lo, hi));
  return v;
}

// Returns c values with |v| uniform in [lo, hi) and a random sign.
inline std::vector<float> RandomSigned(int64_t c, std::mt19937& rng, double lo, double hi) {
  std::vector<float> v(c);
  for (auto& e : v) {
    const double m = Uniform(rng, lo, hi);
    e = static_cast<float>(Uniform(rng, 0, 1) < 0.5 ? -m : m);
  }
  return v;
}

// Returns a tensor of normal values; each channel gets its own std (log-uniform in
// [1/8, 8], times `scale`) and mean (std times uniform in [-max_ratio, max_ratio]).
inline std::vector<float> RandomTensor(const bnorm_shape& s, std::mt19937& rng,
                                       double max_ratio = 3.0, double scale = 1.0) {
  std::vector<float> x(ref::Elements(s));
  std::normal_distribution<double> normal;
  for (int64_t ch = 0; ch < s.c; ++ch) {
    const double sd = scale * std::exp2(Uniform(rng, -3, 3));
    const double mean = sd * Uniform(rng, -max_ratio, max_ratio);
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp)
        x[ref::Offset(s, i, ch, sp)] = static_cast<float>(mean + sd * normal(rng));
  }
  return x;
}

inline std::vector<float> ToFloat(const ref::Vec& v) {
  return std::vector<float>(v.begin(), v.end());
}

// ---------------------------------------------------------------------------------
// Buffers.

// A float buffer between canaries: `size` floats starting `misalign` floats after a
// 64-byte boundary, surrounded by at least kPad canary words on each side. Poison()
// fills the inside with 0xFF bytes (a NaN no computation returns), so an element the
// library forgets to write fails its comparison; CanariesIntact() fails if anything
// outside was written.
class Buffer {
 public:
  static constexpr size_t kPad = 64;
  static constexpr uint32_t kCanary = 0x7FA5A5A5u;  // a signalling NaN
  static constexpr uint32_t kPoison = 0xFFFFFFFFu;

  explicit Buffer(size_t size = 0, size_t misalign = 0) : size_(size) {
    storage_.assign(size + 2 * kPad + 16 + misalign, kCanary);
    size_t first = kPad;
    while (reinterpret_cast<uintptr_t>(storage_.data() + first) % 64 != 0) ++first;
    begin_ = first + misalign;
    Poison();
  }
  Buffer(const std::vector<float>& v, size_t misalign) : Buffer(v.size(), misalign) { Fill(v); }

  float* data() { return reinterpret_cast<float*>(storage_.data() + begin_); }
  const float* data() const { return reinterpret_cast<const float*>(storage_.data() + begin_); }
  size_t size() const { return size_; }
  float& operator[](size_t i) { return data()[i]; }
  float operator[](size_t i) const { return data()[i]; }

  void Poison() {
    std::fill(storage_.begin() + begin_, storage_.begin() + begin_ + size_, kPoison);
  }
  void Fill(const std::vector<float>& v) {
    REQUIRE(v.size() == size_);
    if (size_ != 0) std::memcpy(data(), v.data(), size_ * sizeof(float));
  }
  // Returns whether every element still holds the poison (nothing was written).
  bool AllPoison() const {
    for (size_t i = begin_; i < begin_ + size_; ++i)
      if (storage_[i] != kPoison) return false;
    return true;
  }
  std::vector<float> ToVector() const { return std::vector<float>(data(), data() + size_); }

  // Returns whether every word outside [data(), data() + size()) still holds kCanary.
  bool CanariesIntact() const {
    for (size_t i = 0; i < storage_.size(); ++i)
      if ((i < begin_ || i >= begin_ + size_) && storage_[i] != kCanary) return false;
    return true;
  }
  // The whole storage, canaries included, for bytewise "untouched" checks.
  const std::vector<uint32_t>& Raw() const { return storage_; }

 private:
  std::vector<uint32_t> storage_;
  size_t begin_ = 0, size_ = 0;
};

// Checks the canaries of a buffer.
#define BNORM_CHECK_CANARIES(buffer) \
  CHECK_MESSAGE((buffer).CanariesIntact(), #buffer ": written outside its elements")

// ---------------------------------------------------------------------------------
// Comparisons. Each reports up to kMaxReports failing elements with their position,
// then one failed CHECK with the count; the caller's INFO adds target, shape, layout.

constexpr int kMaxReports = 4;

// Returns how many got[i] are not within k ulps of mag[i] of value[i] (no assertion).
inline int64_t CountFar(const float* got, const ref::Vec& value, const ref::Vec& mag, double k) {
  int64_t bad = 0;
  for (size_t i = 0; i < value.size(); ++i) bad += !ref::Near(got[i], value[i], mag[i], k);
  return bad;
}

// Checks got[i] against want.value[i] within k ulps of want.mag[i], for a tensor of `s`.
inline void CheckTensor(const char* what, const bnorm_shape& s, const float* got,
                        const ref::Output& want, double k) {
  int64_t bad = 0;
  for (size_t i = 0; i < want.value.size(); ++i) {
    if (ref::Near(got[i], want.value[i], want.mag[i], k)) continue;
    if (bad++ < kMaxReports)
      FAIL_CHECK(std::string(what)
                 << " at " << Where(s, static_cast<int64_t>(i)) << ": got " << Fmt(got[i]) << " ("
                 << Hex(got[i]) << "), want " << Fmt(want.value[i]) << " +- "
                 << Fmt(k * ref::kUlp * want.mag[i]));
  }
  if (bad)
    FAIL_CHECK(std::string(what) << ": " << bad << " of " << want.value.size()
                                 << " elements wrong");
}

// Checks per-channel got[ch] against value[ch] within k ulps of mag[ch].
inline void CheckChannels(const char* what, const float* got, const ref::Vec& value,
                          const ref::Vec& mag, double k) {
  int64_t bad = 0;
  for (size_t ch = 0; ch < value.size(); ++ch) {
    if (ref::Near(got[ch], value[ch], mag[ch], k)) continue;
    if (bad++ < kMaxReports)
      FAIL_CHECK(std::string(what)
                 << " at channel " << ch << ": got " << Fmt(got[ch]) << " (" << Hex(got[ch])
                 << "), want " << Fmt(value[ch]) << " +- " << Fmt(k * ref::kUlp * mag[ch]));
  }
  if (bad)
    FAIL_CHECK(std::string(what) << ": " << bad << " of " << value.size() << " channels wrong");
}

// Checks per-channel got[ch] against value[ch] within `rel` relative.
inline void CheckChannelsRel(const char* what, const float* got, const ref::Vec& value,
                             double rel) {
  ref::Vec mag(value.size());
  for (size_t ch = 0; ch < value.size(); ++ch) mag[ch] = std::fabs(value[ch]);
  CheckChannels(what, got, value, mag, rel / ref::kUlp);
}

// Checks the mean (kMeanUlps of |mean| + std) and the biased variance (`var_rel`).
inline void CheckMoments(const char* what_mean, const float* mean, const char* what_var,
                         const float* var, const ref::Stats& want, double var_rel) {
  ref::Vec mag(want.mean.size());
  for (size_t ch = 0; ch < mag.size(); ++ch) mag[ch] = ref::MeanMag(want.mean[ch], want.var[ch]);
  CheckChannels(what_mean, mean, want.mean, mag, kMeanUlps);
  CheckChannelsRel(what_var, var, want.var, var_rel);
}

// Returns the first index where a and b differ bitwise, or -1.
inline int64_t FirstDifference(const float* a, const float* b, size_t n) {
  if (n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0) return -1;
  for (size_t i = 0; i < n; ++i)
    if (Bits(a[i]) != Bits(b[i])) return static_cast<int64_t>(i);
  return -1;
}

// Checks that got and want are bit-identical.
inline void CheckSameBits(const char* what, const float* got, const float* want, size_t n) {
  const int64_t i = FirstDifference(got, want, n);
  if (i >= 0)
    FAIL_CHECK(std::string(what) << " differs at element " << i << ": " << Fmt(got[i]) << " ("
                                 << Hex(got[i]) << ") vs " << Fmt(want[i]) << " (" << Hex(want[i])
                                 << ")");
}

// Checks saved_mean (kMeanUlps) and saved_invstd: invstd = (var + eps)^-1/2 moves by
// half the relative error of var, plus a few roundings (+ eps, sqrt, division).
inline void CheckSaved(const float* saved_mean, const float* saved_invstd, const ref::Stats& st,
                       const ref::Vec& invstd, double var_rel) {
  ref::Vec mag(st.mean.size());
  for (size_t ch = 0; ch < mag.size(); ++ch) mag[ch] = ref::MeanMag(st.mean[ch], st.var[ch]);
  CheckChannels("saved_mean", saved_mean, st.mean, mag, kMeanUlps);
  CheckChannelsRel("saved_invstd", saved_invstd, invstd, var_rel / 2 + 8 * ref::kUlp);
}

// Checks running_mean/running_var after one training step from rm0/rv0. The batch
// parts carry the batch statistics' errors (kMeanUlps, var_rel), the rest a few
// roundings (8 ulps). With momentum 0 the running values must be unchanged, bitwise.
inline void CheckRunning(const bnorm_shape& s, const ref::Stats& stats, double momentum,
                         bool biased, const std::vector<float>& rm0, const std::vector<float>& rv0,
                         const float* rm, const float* rv, double var_rel) {
  if (momentum == 0.0) {
    CheckSameBits("running_mean (momentum 0)", rm, rm0.data(), rm0.size());
    CheckSameBits("running_var (momentum 0)", rv, rv0.data(), rv0.size());
    return;
  }
  ref::Vec want_m(rm0.begin(), rm0.end()), want_v(rv0.begin(), rv0.end());
  ref::RunningUpdate(stats, ref::Count(s), momentum, biased, want_m, want_v);
  const double m = momentum;
  const double correction = biased ? 1.0 : double(ref::Count(s)) / double(ref::Count(s) - 1);
  ref::Vec mag_m(s.c), mag_v(s.c);
  for (int64_t ch = 0; ch < s.c; ++ch) {
    mag_m[ch] = (1 - m) * std::fabs(rm0[ch]) + m * ref::MeanMag(stats.mean[ch], stats.var[ch]);
    const double tol = (1 - m) * std::fabs(rv0[ch]) * 8 * ref::kUlp +
                       m * stats.var[ch] * correction * (var_rel + 8 * ref::kUlp);
    mag_v[ch] = tol / ref::kUlp;
  }
  CheckChannels("running_mean", rm, want_m, mag_m, kMeanUlps + 8);
  CheckChannels("running_var", rv, want_v, mag_v, 1);
}

}  // namespace test
}  // namespace bnorm

#endif  // BNORM_TEST_TEST_UTIL_H_
