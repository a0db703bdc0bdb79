// `bnorm check`: every operation on every supported target against the float64
// reference of test/reference.h, over a sweep of shapes; a table of worst errors.
#ifndef BNORM_TOOLS_CHECK_H_
#define BNORM_TOOLS_CHECK_H_

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"
#include "test/reference.h"
#include "tools/cli_util.h"

namespace bnorm {
namespace tools {
namespace check {

// ---------------------------------------------------------------------------------
// What is measured, in which unit, against which tolerance.

enum class Unit {
  kUlp,       // |got - value| / (2^-24 * mag), mag from the reference
  kRelative,  // |got - value| / |value|
  kCount,     // number of bad calls or differing values
  kBound,     // half-precision tensors: |got - value| / (half an ulp of the type at
              // value + 64 float32 ulps of mag), so 1 is the bound
};

struct Metric {
  const char* name;
  Unit unit;
  double tolerance;
  const char* what;
};

enum MetricId {
  kMomentsMean,
  kMomentsVar,
  kTrainingY,
  kTrainingYRelu,
  kTrainingSavedMean,
  kTrainingSavedInvstd,
  kTrainingRunningMean,
  kTrainingRunningVar,
  kInferenceY,
  kInferenceYRelu,
  kFoldScale,
  kFoldShift,
  kAffineY,
  kAffineYRelu,
  kBackwardDx,
  kBackwardDgamma,
  kBackwardDbeta,
  kBackwardReluDx,
  kBackwardReluDgamma,
  kBackwardReluDbeta,
  kCalls,
  kDeterminism,
  kNumMetrics
};

// Tolerances: 64 ulps of mag for tensors and per-channel affine parameters, 16 ulps of
// |mean| + std (ref::MeanMag) for means, 1e-5 relative for variances and invstd.
constexpr Metric kMetrics[kNumMetrics] = {
    {"moments.mean", Unit::kUlp, 16, "mag = |mean| + std"},
    {"moments.var", Unit::kRelative, 1e-5, "biased variance"},
    {"training.y", Unit::kUlp, 64, "gamma, beta given"},
    {"training.y+relu", Unit::kUlp, 64, "gamma, beta absent, fused ReLU"},
    {"training.saved_mean", Unit::kUlp, 16, "mag = |mean| + std"},
    {"training.saved_invstd", Unit::kRelative, 1e-5, ""},
    {"training.running_mean", Unit::kUlp, 16, "momentum 0.1"},
    {"training.running_var", Unit::kRelative, 1e-5, "unbiased, and biased with the flag"},
    {"inference.y", Unit::kUlp, 64, "gamma, beta given"},
    {"inference.y+relu", Unit::kUlp, 64, "gamma, beta absent, fused ReLU"},
    {"fold.scale", Unit::kUlp, 64, "with and without gamma, beta"},
    {"fold.shift", Unit::kUlp, 64, "with and without gamma, beta"},
    {"affine.y", Unit::kUlp, 64, ""},
    {"affine.y+relu", Unit::kUlp, 64, "fused ReLU"},
    {"backward.dx", Unit::kUlp, 64, "gamma given; also dx alone"},
    {"backward.dgamma", Unit::kUlp, 64, ""},
    {"backward.dbeta", Unit::kUlp, 64, ""},
    {"backward+relu.dx", Unit::kUlp, 64, "gamma absent, ReLU mask from y"},
    {"backward+relu.dgamma", Unit::kUlp, 64, ""},
    {"backward+relu.dbeta", Unit::kUlp, 64, ""},
    {"calls", Unit::kCount, 0, "wrong status, canary, refusal or written-when-refused failures"},
    {"determinism", Unit::kCount, 0,
     "output bytes differing between 1, 3, default threads, serial"},
};

// Whether a metric is a tensor output (y, dx), stored in the tensors' element type.
inline bool IsTensor(MetricId id) {
  switch (id) {
    case kTrainingY:
    case kTrainingYRelu:
    case kInferenceY:
    case kInferenceYRelu:
    case kAffineY:
    case kAffineYRelu:
    case kBackwardDx:
    case kBackwardReluDx:
      return true;
    default:
      return false;
  }
}

// The metric of an output for tensors of bfloat16 / float16 (`half`) or float32: a half
// tensor output is the float32 result rounded once, so its bound adds half an ulp of
// the type to the float32 tolerance; every other output is float32 in either case.
inline Metric MetricOf(MetricId id, bool half) {
  if (!half || !IsTensor(id)) return kMetrics[id];
  return {kMetrics[id].name, Unit::kBound, 1,
          "fraction of (half an ulp of the type + 64 float32 ulps of mag)"};
}

inline const char* UnitName(Unit unit) {
  return unit == Unit::kUlp        ? "ulp"
         : unit == Unit::kRelative ? "relative"
         : unit == Unit::kCount    ? "count"
                                   : "bound";
}

// Fold takes and returns per-channel floats only: it has no half-precision variant.
inline bool Applies(MetricId id, bool half) {
  return !half || (id != kFoldScale && id != kFoldShift);
}

struct Result {
  double worst = 0;  // in the metric's unit; +inf for a non-finite mismatch
  int64_t checked = 0;
  int64_t failed = 0;
};

// One target's results for one element type, and whether dispatch switched to it.
struct TargetResults {
  std::string name;          // the target
  std::string type = "f32";  // the tensors' element type: f32, bf16 or f16
  bool dispatched = false;
  std::string dispatch_message;
  Result results[kNumMetrics];
  int64_t nonfinite_notes = 0;  // NaN for Inf or the reverse, in the NaN+Inf cases
  int64_t shapes = 0;           // cases of the sweep checked
  bool half() const { return type != "f32"; }
  // The target, with the element type where it is not float32 ("AVX3 bf16").
  std::string Label() const { return half() ? name + " " + type : name; }
  bool Pass() const {
    if (!dispatched) return false;
    for (const Result& r : results) {
      if (r.failed) return false;
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------
// Test data.

// splitmix64: a small, fixed-seed generator, so every run checks the same values.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  double Uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0);
  }
  // Roughly normal (Irwin-Hall of 4 uniforms), mean 0, std 1.
  double Normal() {
    double sum = 0;
    for (int i = 0; i < 4; ++i) sum += Uniform(0, 1);
    return (sum - 2.0) * std::sqrt(3.0);
  }

 private:
  uint64_t state_;
};

struct Case {
  bnorm_shape shape;
  bool high_mean = false;  // |mean| / std = 1e4 in every channel
  bool nonfinite = false;  // one NaN in channel 1, one +Inf in channel 3 (c >= 4)
};

inline std::string CaseString(const Case& c) {
  return std::string(c.shape.layout == bnorm_nchw ? "nchw " : "nhwc ") + std::to_string(c.shape.n) +
         "x" + std::to_string(c.shape.c) + "x" + std::to_string(c.shape.spatial) +
         (c.high_mean ? " high-mean" : "") + (c.nonfinite ? " NaN+Inf" : "");
}

// Returns the sweep: both layouts; c and spatial in {1, 2, 3, 7, 15, 16, 17, 31, 33,
// 61, 127, 257, 1000}, n in {1, 2, 5} (only n = 1 above 256 Ki elements); a few larger
// shapes that cross any chunk boundary; |mean|/std = 1e4 cases; and cases with a NaN
// and an Inf in the data (they must reach their own channel's outputs, and no other).
inline std::vector<Case> Sweep() {
  const int64_t sizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 61, 127, 257, 1000};
  std::vector<Case> cases;
  for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
    for (const int64_t n : {1, 2, 5}) {
      for (const int64_t c : sizes) {
        for (const int64_t spatial : sizes) {
          if (n > 1 && n * c * spatial > 262144) continue;
          cases.push_back({{n, c, spatial, layout}});
        }
      }
    }
    for (const bnorm_shape s :
         {bnorm_shape{1, 1, (1 << 20) + 3, layout}, bnorm_shape{7, 13, 10007, layout},
          bnorm_shape{256, 1024, 1, layout}, bnorm_shape{2, 64, 56 * 56, layout},
          bnorm_shape{3, 5, 40009, layout}}) {
      cases.push_back({s});
    }
    for (const bnorm_shape s : {bnorm_shape{4, 17, 1000, layout}, bnorm_shape{2, 33, 4099, layout},
                                bnorm_shape{100, 64, 1, layout}}) {
      cases.push_back({s, true});
    }
    for (const bnorm_shape s : {bnorm_shape{2, 5, 33, layout}, bnorm_shape{3, 7, 1000, layout},
                                bnorm_shape{64, 33, 1, layout}, bnorm_shape{1, 19, 4099, layout}}) {
      cases.push_back({s, false, true});
    }
  }
  return cases;
}

// Returns the sweep of `bnorm check --quick`: the same kinds of cases at about a
// twentieth of the elements, for emulators
// (qemu runs the Arm lanes of tools/run.sh some 30 to 100 times slower): c and spatial
// in {1, 2, 3, 7, 16, 17, 33, 61, 257}, n in {1, 2}, at most 16 Ki elements, then one
// shape per layout past every chunk, fusion and threading threshold (256 Ki values in
// one NCHW channel; 140 K NHWC values), and the high-mean and NaN+Inf cases, smaller.
inline std::vector<Case> QuickSweep() {
  const int64_t sizes[] = {1, 2, 3, 7, 16, 17, 33, 61, 257};
  std::vector<Case> cases;
  for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
    for (const int64_t n : {1, 2}) {
      for (const int64_t c : sizes) {
        for (const int64_t spatial : sizes) {
          if (n * c * spatial > 16384) continue;
          cases.push_back({{n, c, spatial, layout}});
        }
      }
    }
    cases.push_back({layout == bnorm_nchw ? bnorm_shape{1, 1, (1 << 18) + 3, layout}
                                          : bnorm_shape{2, 64, 1100, layout}});
    for (const bnorm_shape s : {bnorm_shape{2, 17, 1000, layout}, bnorm_shape{2, 3, 4099, layout},
                                bnorm_shape{100, 64, 1, layout}}) {
      cases.push_back({s, true});
    }
    for (const bnorm_shape s : {bnorm_shape{2, 5, 33, layout}, bnorm_shape{3, 7, 1000, layout},
                                bnorm_shape{64, 33, 1, layout}, bnorm_shape{1, 5, 4099, layout}}) {
      cases.push_back({s, false, true});
    }
  }
  return cases;
}

// A buffer of T (float, bnorm_bf16, bnorm_f16) with a canary zone behind it: Poison()
// fills the payload with a NaN and the canary with a pattern; CanaryOk() says whether
// the canary survived.
template <typename T>
class Guarded {
 public:
  static constexpr size_t kCanary = 16;
  explicit Guarded(size_t n = 0) : n_(n), v_(n + kCanary) { Poison(); }
  T* data() { return v_.data(); }
  const T* data() const { return v_.data(); }
  size_t size() const { return n_; }
  void Poison() {
    std::fill(v_.begin(), v_.begin() + n_, Pattern(kPoison));
    std::fill(v_.begin() + n_, v_.end(), Pattern(kCanaryBits));
  }
  void Fill(const std::vector<T>& values) {
    std::copy(values.begin(), values.end(), v_.begin());
    std::fill(v_.begin() + n_, v_.end(), Pattern(kCanaryBits));
  }
  bool CanaryOk() const {
    const T canary = Pattern(kCanaryBits);
    for (size_t i = n_; i < v_.size(); ++i) {
      if (std::memcmp(&v_[i], &canary, sizeof(T)) != 0) return false;
    }
    return true;
  }
  // Whether the payload is bit-identical to `other`.
  bool SameBits(const std::vector<T>& other) const {
    return other.size() == n_ && std::memcmp(other.data(), v_.data(), n_ * sizeof(T)) == 0;
  }
  // Whether the payload still holds the poison (nothing was written).
  bool Untouched() const {
    const T poison = Pattern(kPoison);
    for (size_t i = 0; i < n_; ++i) {
      if (std::memcmp(&v_[i], &poison, sizeof(T)) != 0) return false;
    }
    return true;
  }

 private:
  // float: a quiet NaN and -1234.5678f; halves: 0xFFFF (a NaN) and 0xABCD.
  static constexpr uint32_t kPoison = sizeof(T) == 4 ? 0x7FC00000u : 0xFFFFu;
  static constexpr uint32_t kCanaryBits = sizeof(T) == 4 ? 0xC49A522Bu : 0xABCDu;
  static T Pattern(uint32_t bits) {
    T t;
    std::memcpy(&t, &bits, sizeof(T));  // little-endian: the low bytes for halves
    return t;
  }
  size_t n_;
  std::vector<T> v_;
};

// The inputs of one case, and the float64 reference of every operation on them.
struct CaseData {
  Case cs;
  std::vector<float> x, dy, gamma, beta, inf_mean, inf_var, running_mean0, running_var0, scale,
      shift, saved_mean, saved_invstd, relu_y;
  bool trainable = false;  // count >= 2
  ref::Stats stats;
  ref::Output training_y, training_y_relu, inference_y, inference_y_relu, affine_y, affine_y_relu;
  ref::Vec invstd, running_mean, running_var, running_var_biased, running_mean_mag;
  ref::Folded fold, fold_default;
  ref::Gradients backward, backward_relu;
};

constexpr float kEps = 1e-5f;
constexpr float kMomentum = 0.1f;

inline std::vector<float> ToFloat(const ref::Vec& v) {
  return std::vector<float>(v.begin(), v.end());
}

// Makes the inputs of a case and their reference for tensors of element type H
// (ref::F32, BF16, F16): the tensor inputs (x, dy, and the y that masks the ReLU
// backward) are values of H, so that the reference is that of what the call is given;
// float16's high-mean channels keep |x| below its largest finite value.
template <typename H = ref::F32>
CaseData MakeCase(const Case& cs, uint64_t seed) {
  CaseData d;
  d.cs = cs;
  const bnorm_shape& s = cs.shape;
  const size_t elements = static_cast<size_t>(ref::Elements(s));
  const size_t c = static_cast<size_t>(s.c);
  Rng rng(seed);
  std::vector<double> channel_mean(c), channel_sd(c);
  for (size_t ch = 0; ch < c; ++ch) {
    channel_sd[ch] = std::exp(rng.Uniform(std::log(0.1), std::log(10.0)));
    if (cs.high_mean) channel_sd[ch] = std::min(channel_sd[ch], H::Max() / 2e4);
    channel_mean[ch] =
        cs.high_mean ? (rng.Uniform(0, 1) < 0.5 ? -1e4 : 1e4) * channel_sd[ch] : rng.Uniform(-3, 3);
  }
  d.x.resize(elements);
  d.dy.resize(elements);
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t ch = 0; ch < s.c; ++ch) {
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        d.x[o] = static_cast<float>(H::Round(channel_mean[ch] + channel_sd[ch] * rng.Normal()));
        d.dy[o] = static_cast<float>(H::Round(rng.Normal()));
      }
    }
  }
  if (cs.nonfinite) {
    d.x[ref::Offset(s, s.n - 1, 1, s.spatial / 2)] = std::numeric_limits<float>::quiet_NaN();
    d.x[ref::Offset(s, 0, 3, 0)] = std::numeric_limits<float>::infinity();
  }
  for (size_t ch = 0; ch < c; ++ch) {
    d.gamma.push_back(static_cast<float>(rng.Uniform(0.5, 2.0) * (ch % 5 == 4 ? -1 : 1)));
    d.beta.push_back(static_cast<float>(rng.Uniform(-1, 1)));
    // Inference statistics near the data's, as after training.
    d.inf_mean.push_back(static_cast<float>(channel_mean[ch] + 0.1 * channel_sd[ch]));
    d.inf_var.push_back(static_cast<float>(channel_sd[ch] * channel_sd[ch] * 1.1));
    d.running_mean0.push_back(static_cast<float>(rng.Uniform(-1, 1)));
    d.running_var0.push_back(static_cast<float>(rng.Uniform(0.5, 2)));
  }
  const float* x = d.x.data();
  d.stats = ref::Moments(s, x);
  d.fold = ref::Fold(s.c, d.gamma.data(), d.beta.data(), d.inf_mean.data(), d.inf_var.data(), kEps);
  d.fold_default = ref::Fold(s.c, nullptr, nullptr, d.inf_mean.data(), d.inf_var.data(), kEps);
  d.scale = ToFloat(d.fold.scale.value);
  d.shift = ToFloat(d.fold.shift.value);
  d.inference_y = ref::ForwardInference(s, x, d.gamma.data(), d.beta.data(), d.inf_mean.data(),
                                        d.inf_var.data(), kEps, false);
  d.inference_y_relu = ref::ForwardInference(s, x, nullptr, nullptr, d.inf_mean.data(),
                                             d.inf_var.data(), kEps, true);
  d.affine_y = ref::Affine(s, x, d.scale.data(), d.shift.data(), false);
  d.affine_y_relu = ref::Affine(s, x, d.scale.data(), d.shift.data(), true);
  const int64_t count = ref::Count(s);
  d.trainable = count >= 2;
  if (d.trainable) {
    const ref::Training t = ref::ForwardTraining(s, x, d.gamma.data(), d.beta.data(), kEps, false);
    d.training_y = t.y;
    d.invstd = t.invstd;
    d.training_y_relu = ref::ForwardTraining(s, x, nullptr, nullptr, kEps, true).y;
    d.running_mean.assign(d.running_mean0.begin(), d.running_mean0.end());
    d.running_var.assign(d.running_var0.begin(), d.running_var0.end());
    ref::RunningUpdate(d.stats, count, kMomentum, false, d.running_mean, d.running_var);
    ref::Vec unused(d.running_mean0.begin(), d.running_mean0.end());
    d.running_var_biased.assign(d.running_var0.begin(), d.running_var0.end());
    ref::RunningUpdate(d.stats, count, kMomentum, true, unused, d.running_var_biased);
    for (size_t ch = 0; ch < c; ++ch) {
      d.running_mean_mag.push_back((1 - kMomentum) * std::fabs(d.running_mean0[ch]) +
                                   kMomentum * ref::MeanMag(d.stats.mean[ch], d.stats.var[ch]));
    }
  }
  // Backward inputs: the statistics rounded to float, as a training pass saves them,
  // and a y with both signs for the ReLU mask.
  for (size_t ch = 0; ch < c; ++ch) {
    d.saved_mean.push_back(static_cast<float>(d.stats.mean[ch]));
    d.saved_invstd.push_back(static_cast<float>(1.0 / std::sqrt(d.stats.var[ch] + kEps)));
  }
  for (const double v : d.inference_y.value) d.relu_y.push_back(static_cast<float>(H::Round(v)));
  d.backward = ref::Backward(s, x, d.dy.data(), d.saved_mean.data(), d.saved_invstd.data(),
                             d.gamma.data(), nullptr, false);
  d.backward_relu = ref::Backward(s, x, d.dy.data(), d.saved_mean.data(), d.saved_invstd.data(),
                                  nullptr, d.relu_y.data(), true);
  return d;
}

// ---------------------------------------------------------------------------------
// Comparison.

class Checker {
 public:
  // half_ulp: H::HalfUlp of the tensors' element type, null for float32.
  Checker(TargetResults* target, std::vector<std::string>* failures,
          std::vector<std::string>* notes = nullptr, double (*half_ulp)(double) = nullptr)
      : target_(target), failures_(failures), notes_(notes), half_ulp_(half_ulp) {}

  void SetCase(const Case* cs) { case_ = cs; }
  // Names the variant being checked ("in place"), for failure messages; "" for none.
  void SetVariant(const char* variant) { variant_ = variant; }
  TargetResults* target() { return target_; }

  // Compares n values against value/mag in ulps of mag: passes where ref::Near does.
  // A half-precision tensor output may also be off by its rounding: it passes within
  // half an ulp of its type at value plus k ulps of mag, and counts in that unit.
  void Ulp(MetricId id, const float* got, const ref::Vec& value, const ref::Vec& mag, size_t n) {
    Result& r = target_->results[id];
    const double k = kMetrics[id].tolerance;
    const bool bound = half_ulp_ != nullptr && IsTensor(id);
    double worst = r.worst;
    for (size_t i = 0; i < n; ++i) {
      // The error's unit, and the tolerance in it.
      const double unit = bound ? half_ulp_(value[i]) + k * ref::kUlp * mag[i] : ref::kUlp * mag[i];
      const double tolerance = bound ? 1 : k;
      // Fast path, finite values within tolerance (a NaN difference fails the test).
      const double diff = std::fabs(got[i] - value[i]);
      if (diff <= tolerance * unit + 1e-37) {
        if (diff > 0) worst = std::max(worst, unit > 0 ? diff / unit : 0.0);
        continue;
      }
      double err;
      if (std::isfinite(value[i]) && std::isfinite(got[i])) {
        err = unit > 0 ? diff / unit : std::numeric_limits<double>::infinity();
      } else {
        err = NonFinite(id, i, got[i], value[i], ref::Near(got[i], value[i], mag[i], k));
      }
      if (err > 0) Failed(id, r, err, i, got[i], value[i]);
      worst = std::max(worst, err);
    }
    r.worst = worst;
    r.checked += static_cast<int64_t>(n);
  }
  void Ulp(MetricId id, const float* got, const ref::Output& want, size_t n) {
    Ulp(id, got, want.value, want.mag, n);
  }

  // Compares n values relative to |value| (an exact 0 must stay 0 within 1e-37).
  void Relative(MetricId id, const float* got, const ref::Vec& value, size_t n) {
    Result& r = target_->results[id];
    const double tol = kMetrics[id].tolerance;
    double worst = r.worst;
    for (size_t i = 0; i < n; ++i) {
      const double diff = std::fabs(got[i] - value[i]);
      if (diff <= tol * std::fabs(value[i]) + 1e-37) {
        if (diff > 0 && value[i] != 0) worst = std::max(worst, diff / std::fabs(value[i]));
        continue;
      }
      double err;
      if (std::isfinite(value[i]) && std::isfinite(got[i])) {
        err = value[i] != 0 ? diff / std::fabs(value[i]) : std::numeric_limits<double>::infinity();
      } else {
        const bool exact = std::isnan(value[i]) ? std::isnan(got[i]) : got[i] == value[i];
        err = NonFinite(id, i, got[i], value[i], exact);
      }
      if (err > 0) Failed(id, r, err, i, got[i], value[i]);
      worst = std::max(worst, err);
    }
    r.worst = worst;
    r.checked += static_cast<int64_t>(n);
  }

  // Records a bad call (status, canary, an output written when it must not be).
  void Call(bool ok, const std::string& what) {
    Result& r = target_->results[kCalls];
    ++r.checked;
    if (ok) return;
    ++r.failed;
    r.worst = static_cast<double>(r.failed);
    Fail("calls: " + what);
  }

  // Calls fn (returning bnorm_status) expecting `expected`; records the outcome.
  template <typename Fn>
  bool Expect(bnorm_status expected, const char* what, Fn fn) {
    const bnorm_status got = fn();
    const bool ok = got == expected;
    Call(ok, std::string(what) + " returned " + bnorm_status_string(got) + " (" +
                 (got == bnorm_success ? "" : bnorm_last_error()) + "), expected " +
                 bnorm_status_string(expected));
    return ok && got == bnorm_success;
  }

  template <typename T>
  void Canary(const Guarded<T>& g, const char* what) {
    Call(g.CanaryOk(), std::string(what) + ": wrote past the end of the output");
  }

  void Fail(const std::string& message) {
    if (failures_->size() < kMaxFailures) {
      failures_->push_back(target_->Label() + (case_ ? " " + CaseString(*case_) : std::string()) +
                           (*variant_ ? std::string(" (") + variant_ + ")" : "") + ": " + message);
    }
  }

 private:
  static constexpr size_t kMaxFailures = 30;

  // Counts a value out of tolerance; the first three per target and metric are logged.
  void Failed(MetricId id, Result& r, double err, size_t i, double got, double want) {
    if (++r.failed > 3) return;
    char buffer[256];
    std::snprintf(buffer, sizeof(buffer), "%s[%zu] = %.9g, reference %.9g (error %.3g %s)",
                  kMetrics[id].name, i, got, want, err,
                  UnitName(MetricOf(id, half_ulp_ != nullptr).unit));
    Fail(buffer);
  }

  // Returns the error (0 or +inf) where the reference or the result is not finite.
  // Exact matches pass. In cases with NaN and Inf in the data, any non-finite result
  // stands for any non-finite reference (the contract says they propagate to their
  // channel, not which one comes out); a NaN where the reference has an Inf, or the
  // reverse, is then counted as a note, not a failure.
  double NonFinite(MetricId id, size_t i, double got, double want, bool exact) {
    if (exact) return 0;
    if (!(case_ && case_->nonfinite) || std::isfinite(got) || std::isfinite(want)) {
      return std::numeric_limits<double>::infinity();
    }
    if (++target_->nonfinite_notes <= 3 && notes_ != nullptr) {
      char buffer[256];
      std::snprintf(buffer, sizeof(buffer), "%s %s%s: %s[%zu] = %g, reference %g",
                    target_->Label().c_str(), CaseString(*case_).c_str(),
                    *variant_ ? (std::string(" (") + variant_ + ")").c_str() : "",
                    kMetrics[id].name, i, got, want);
      notes_->push_back(buffer);
    }
    return 0;
  }

  TargetResults* target_;
  std::vector<std::string>* failures_;
  std::vector<std::string>* notes_;
  double (*half_ulp_)(double);
  const Case* case_ = nullptr;
  const char* variant_ = "";
};

// The tensors of a case in element type H (values already of H: exact), and back.
template <typename H>
std::vector<typename H::T> Encoded(const std::vector<float>& v) {
  std::vector<typename H::T> out;
  out.reserve(v.size());
  for (const float f : v) out.push_back(H::Encode(f));
  return out;
}
template <typename H>
std::vector<float> Decoded(const Guarded<typename H::T>& g) {
  std::vector<float> out(g.size());
  for (size_t i = 0; i < g.size(); ++i) out[i] = static_cast<float>(H::Decode(g.data()[i]));
  return out;
}

// Runs every operation of one case on the active target with tensors of element type
// H (made by MakeCase<H>) and compares. Fold, whose arguments are per-channel floats
// whatever the tensors hold, runs with float32 only.
template <typename H>
void CheckCase(const CaseData& d, Checker& ck) {
  using T = typename H::T;
  using Api = detail::Api<T>;
  const bnorm_shape* s = &d.cs.shape;
  const size_t elements = d.x.size(), c = static_cast<size_t>(s->c);
  const std::vector<T> xt = Encoded<H>(d.x), dyt = Encoded<H>(d.dy), relu_yt = Encoded<H>(d.relu_y);
  const T* x = xt.data();
  auto ulp = [&](MetricId id, const Guarded<T>& got, const ref::Output& want) {
    ck.Ulp(id, Decoded<H>(got).data(), want, elements);
  };
  ref::Vec mean_mag(c);
  for (size_t ch = 0; ch < c; ++ch) mean_mag[ch] = ref::MeanMag(d.stats.mean[ch], d.stats.var[ch]);

  // Moments.
  {
    Guarded<float> mean(c), var(c);
    if (ck.Expect(bnorm_success, "moments",
                  [&] { return Api::moments(s, x, mean.data(), var.data()); })) {
      ck.Ulp(kMomentsMean, mean.data(), d.stats.mean, mean_mag, c);
      ck.Relative(kMomentsVar, var.data(), d.stats.var, c);
    }
    ck.Canary(mean, "moments mean");
    ck.Canary(var, "moments var");
  }

  // Training forward: (a) gamma, beta, unbiased running var; (b) no gamma, beta, ReLU,
  // biased running var. With count < 2 the call must be refused, nothing written.
  for (const bool relu : {false, true}) {
    Guarded<T> y(elements);
    Guarded<float> running_mean(c), running_var(c), saved_mean(c), saved_invstd(c);
    running_mean.Fill(d.running_mean0);
    running_var.Fill(d.running_var0);
    const unsigned flags = relu ? BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED : 0u;
    const bnorm_status expected = d.trainable ? bnorm_success : bnorm_invalid_argument;
    const bool ran = ck.Expect(expected, relu ? "training+relu" : "training", [&] {
      return Api::forward_training(s, x, y.data(), relu ? nullptr : d.gamma.data(),
                                   relu ? nullptr : d.beta.data(), kEps, kMomentum,
                                   running_mean.data(), running_var.data(), saved_mean.data(),
                                   saved_invstd.data(), flags);
    });
    if (ran) {
      ulp(relu ? kTrainingYRelu : kTrainingY, y, relu ? d.training_y_relu : d.training_y);
      ck.Ulp(kTrainingSavedMean, saved_mean.data(), d.stats.mean, mean_mag, c);
      ck.Relative(kTrainingSavedInvstd, saved_invstd.data(), d.invstd, c);
      ck.Ulp(kTrainingRunningMean, running_mean.data(), d.running_mean, d.running_mean_mag, c);
      ck.Relative(kTrainingRunningVar, running_var.data(),
                  relu ? d.running_var_biased : d.running_var, c);
    } else if (!d.trainable) {
      const bool untouched = y.Untouched() && saved_mean.Untouched() && saved_invstd.Untouched() &&
                             running_mean.SameBits(d.running_mean0) &&
                             running_var.SameBits(d.running_var0);
      ck.Call(untouched, "refused training call (count < 2) changed an output");
    }
    ck.Canary(y, "training y");
    ck.Canary(running_mean, "training running_mean");
    ck.Canary(running_var, "training running_var");
    ck.Canary(saved_mean, "training saved_mean");
    ck.Canary(saved_invstd, "training saved_invstd");
  }

  // Inference: (a) gamma, beta; (b) neither, ReLU.
  for (const bool relu : {false, true}) {
    Guarded<T> y(elements);
    if (ck.Expect(bnorm_success, relu ? "inference+relu" : "inference", [&] {
          return Api::forward_inference(s, x, y.data(), relu ? nullptr : d.gamma.data(),
                                        relu ? nullptr : d.beta.data(), d.inf_mean.data(),
                                        d.inf_var.data(), kEps, relu ? BNORM_FUSE_RELU : 0u);
        })) {
      ulp(relu ? kInferenceYRelu : kInferenceY, y, relu ? d.inference_y_relu : d.inference_y);
    }
    ck.Canary(y, "inference y");
  }

  // Fold, with and without gamma and beta.
  for (const bool defaults : {false, true}) {
    if (!std::is_same<T, float>::value) break;
    Guarded<float> scale(c), shift(c);
    if (ck.Expect(bnorm_success, "fold", [&] {
          return bnorm_fold_f32(s->c, defaults ? nullptr : d.gamma.data(),
                                defaults ? nullptr : d.beta.data(), d.inf_mean.data(),
                                d.inf_var.data(), kEps, scale.data(), shift.data());
        })) {
      const ref::Folded& f = defaults ? d.fold_default : d.fold;
      ck.Ulp(kFoldScale, scale.data(), f.scale, c);
      ck.Ulp(kFoldShift, shift.data(), f.shift, c);
    }
    ck.Canary(scale, "fold scale");
    ck.Canary(shift, "fold shift");
  }

  // Affine, without and with ReLU.
  for (const bool relu : {false, true}) {
    Guarded<T> y(elements);
    if (ck.Expect(bnorm_success, relu ? "affine+relu" : "affine", [&] {
          return Api::affine(s, x, y.data(), d.scale.data(), d.shift.data(),
                             relu ? BNORM_FUSE_RELU : 0u);
        })) {
      ulp(relu ? kAffineYRelu : kAffineY, y, relu ? d.affine_y_relu : d.affine_y);
    }
    ck.Canary(y, "affine y");
  }

  // Backward: (a) gamma, all gradients; (b) no gamma, ReLU mask; (c) dx alone.
  for (int variant = 0; variant < 3; ++variant) {
    const bool relu = variant == 1, dx_only = variant == 2;
    Guarded<T> dx(elements);
    Guarded<float> dgamma(c), dbeta(c);
    if (ck.Expect(bnorm_success, relu ? "backward+relu" : "backward", [&] {
          return Api::backward(s, x, dyt.data(), d.saved_mean.data(), d.saved_invstd.data(),
                               relu ? nullptr : d.gamma.data(), relu ? relu_yt.data() : nullptr,
                               dx.data(), dx_only ? nullptr : dgamma.data(),
                               dx_only ? nullptr : dbeta.data(), relu ? BNORM_FUSE_RELU : 0u);
        })) {
      const ref::Gradients& g = relu ? d.backward_relu : d.backward;
      ulp(relu ? kBackwardReluDx : kBackwardDx, dx, g.dx);
      if (!dx_only) {
        ck.Ulp(relu ? kBackwardReluDgamma : kBackwardDgamma, dgamma.data(), g.dgamma, c);
        ck.Ulp(relu ? kBackwardReluDbeta : kBackwardDbeta, dbeta.data(), g.dbeta, c);
      } else {
        ck.Call(dgamma.Untouched() && dbeta.Untouched(),
                "backward with dgamma = dbeta = NULL wrote them");
      }
    }
    ck.Canary(dx, "backward dx");
    ck.Canary(dgamma, "backward dgamma");
    ck.Canary(dbeta, "backward dbeta");
  }

  // In place, which the contract allows: y == x for the forward operations, dx == dy.
  ck.SetVariant("in place");
  Guarded<T> buffer(elements);
  buffer.Fill(xt);
  if (ck.Expect(bnorm_success, "affine in place", [&] {
        return Api::affine(s, buffer.data(), buffer.data(), d.scale.data(), d.shift.data(), 0);
      })) {
    ulp(kAffineY, buffer, d.affine_y);
  }
  buffer.Fill(xt);
  if (ck.Expect(bnorm_success, "inference in place", [&] {
        return Api::forward_inference(s, buffer.data(), buffer.data(), d.gamma.data(),
                                      d.beta.data(), d.inf_mean.data(), d.inf_var.data(), kEps, 0);
      })) {
    ulp(kInferenceY, buffer, d.inference_y);
  }
  if (d.trainable) {
    buffer.Fill(xt);
    Guarded<float> saved_mean(c), saved_invstd(c);
    if (ck.Expect(bnorm_success, "training in place", [&] {
          return Api::forward_training(s, buffer.data(), buffer.data(), d.gamma.data(),
                                       d.beta.data(), kEps, kMomentum, nullptr, nullptr,
                                       saved_mean.data(), saved_invstd.data(), 0);
        })) {
      ulp(kTrainingY, buffer, d.training_y);
      ck.Ulp(kTrainingSavedMean, saved_mean.data(), d.stats.mean, mean_mag, c);
      ck.Relative(kTrainingSavedInvstd, saved_invstd.data(), d.invstd, c);
    }
  }
  buffer.Fill(dyt);
  if (ck.Expect(bnorm_success, "backward in place", [&] {
        return Api::backward(s, x, buffer.data(), d.saved_mean.data(), d.saved_invstd.data(),
                             d.gamma.data(), nullptr, buffer.data(), nullptr, nullptr, 0);
      })) {
    ulp(kBackwardDx, buffer, d.backward.dx);
  }
  ck.Canary(buffer, "in-place buffer");
  ck.SetVariant("");
}

// Checks that empty tensors succeed and write nothing.
template <typename H>
void CheckEmpty(Checker& ck) {
  using T = typename H::T;
  using Api = detail::Api<T>;
  Guarded<T> out(4);
  Guarded<float> stats(4), stats2(4);
  const float one[4] = {1, 1, 1, 1};
  const T in[4] = {H::Encode(1), H::Encode(1), H::Encode(1), H::Encode(1)};
  for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
    const bnorm_shape no_channels{4, 0, 5, layout}, no_images{0, 4, 5, layout};
    ck.Expect(bnorm_success, "moments on c = 0",
              [&] { return Api::moments(&no_channels, in, stats.data(), stats2.data()); });
    ck.Expect(bnorm_success, "training on c = 0", [&] {
      return Api::forward_training(&no_channels, in, out.data(), nullptr, nullptr, kEps, kMomentum,
                                   nullptr, nullptr, nullptr, nullptr, 0);
    });
    ck.Expect(bnorm_success, "affine on n = 0",
              [&] { return Api::affine(&no_images, in, out.data(), one, one, 0); });
    ck.Expect(bnorm_success, "inference on n = 0", [&] {
      return Api::forward_inference(&no_images, in, out.data(), nullptr, nullptr, one, one, kEps,
                                    0);
    });
    ck.Expect(bnorm_success, "backward on c = 0", [&] {
      return Api::backward(&no_channels, in, in, one, one, nullptr, nullptr, out.data(),
                           stats.data(), stats2.data(), 0);
    });
  }
  ck.Call(out.Untouched() && stats.Untouched() && stats2.Untouched() && out.CanaryOk() &&
              stats.CanaryOk() && stats2.CanaryOk(),
          "an empty-tensor call wrote an output");
}

// Checks that bad arguments are refused with the right status and a message, and that
// nothing is written: partial overlap, bad eps and momentum, unknown flag bits and
// layouts, null or half-given buffers, negative sizes; with float32 also unknown target
// names.
template <typename H>
void CheckRefusals(Checker& ck) {
  using T = typename H::T;
  using Api = detail::Api<T>;
  constexpr size_t kN = 2 * 3 * 5;
  std::vector<T> x;
  for (size_t i = 0; i < kN + 8; ++i) x.push_back(H::Encode(static_cast<double>(i % 5)));
  const std::vector<float> params(3, 1.0f);
  Guarded<T> y(kN), xs(kN + 8);
  xs.Fill(x);
  Guarded<float> stats(3), stats2(3);
  const bnorm_shape s{2, 3, 5, bnorm_nchw};
  const float* p = params.data();
  auto refused = [&](const char* what, bnorm_status expected, bnorm_status got) {
    ck.Call(got == expected && bnorm_last_error()[0] != '\0',
            std::string(what) + ": returned " + bnorm_status_string(got) + ", expected " +
                bnorm_status_string(expected) + " with a message (last error: \"" +
                bnorm_last_error() + "\")");
  };
  const bnorm_status bad = bnorm_invalid_argument;
  T* const xd = xs.data();
  refused("affine with y = x + 1 (partial overlap)", bad, Api::affine(&s, xd, xd + 1, p, p, 0));
  refused("training with eps = 0", bad,
          Api::forward_training(&s, xd, y.data(), p, p, 0.0f, kMomentum, nullptr, nullptr, nullptr,
                                nullptr, 0));
  refused("training with eps = NaN", bad,
          Api::forward_training(&s, xd, y.data(), p, p, std::numeric_limits<float>::quiet_NaN(),
                                kMomentum, nullptr, nullptr, nullptr, nullptr, 0));
  refused("training with momentum = 1.5", bad,
          Api::forward_training(&s, xd, y.data(), p, p, kEps, 1.5f, stats.data(), stats2.data(),
                                nullptr, nullptr, 0));
  refused("training with running_mean but no running_var", bad,
          Api::forward_training(&s, xd, y.data(), p, p, kEps, kMomentum, stats.data(), nullptr,
                                nullptr, nullptr, 0));
  refused("inference with an unknown flag bit", bad,
          Api::forward_inference(&s, xd, y.data(), p, p, p, p, kEps, 1u << 7));
  const bnorm_shape bad_layout{2, 3, 5, static_cast<bnorm_layout>(7)};
  refused("moments with layout 7", bad, Api::moments(&bad_layout, xd, stats.data(), stats2.data()));
  const bnorm_shape negative{2, -3, 5, bnorm_nchw};
  refused("moments with c = -3", bad, Api::moments(&negative, xd, stats.data(), stats2.data()));
  refused("moments with x = NULL", bad, Api::moments(&s, nullptr, stats.data(), stats2.data()));
  refused("backward with ReLU and y = NULL", bad,
          Api::backward(&s, xd, xd, p, p, p, nullptr, y.data(), stats.data(), stats2.data(),
                        BNORM_FUSE_RELU));
  ck.Call(xs.SameBits(x) && y.Untouched() && stats.Untouched() && stats2.Untouched(),
          "a refused call wrote an output");
  if (!std::is_same<T, float>::value) return;

  // Target names: unknown is invalid_argument, a foreign ISA is unsupported, and
  // neither changes the active target.
  const std::string active = bnorm_active_target();
#if defined(__x86_64__) || defined(__i386__)
  const char* foreign = "NEON";
#else
  const char* foreign = "AVX2";
#endif
  refused("bnorm_set_target(\"NO_SUCH_ISA\")", bad, bnorm_set_target("NO_SUCH_ISA"));
  refused((std::string("bnorm_set_target(\"") + foreign + "\")").c_str(), bnorm_unsupported,
          bnorm_set_target(foreign));
  ck.Call(active == bnorm_active_target(),
          "a refused bnorm_set_target changed the active target to " +
              std::string(bnorm_active_target()));
}

// Runs training, backward and moments on one shape with `threads` threads (0: the
// default arena; -1: the BNORM_SERIAL flag) and returns the bits of every output,
// concatenated; *ok tells whether every call succeeded.
template <typename H>
std::vector<uint8_t> DeterminismRun(const CaseData& d, int threads, bool* ok) {
  using T = typename H::T;
  using Api = detail::Api<T>;
  const bnorm_shape* s = &d.cs.shape;
  const size_t elements = d.x.size(), c = static_cast<size_t>(s->c);
  const std::vector<T> x = Encoded<H>(d.x), dy = Encoded<H>(d.dy);
  std::vector<T> y(elements), dx(elements);
  std::vector<float> per_channel(6 * c);
  float* pc = per_channel.data();
  const unsigned flags = threads < 0 ? BNORM_SERIAL : 0u;
  auto run = [&] {
    *ok = Api::forward_training(s, x.data(), y.data(), d.gamma.data(), d.beta.data(), kEps,
                                kMomentum, nullptr, nullptr, pc, pc + c, flags) == bnorm_success &&
          Api::backward(s, x.data(), dy.data(), d.saved_mean.data(), d.saved_invstd.data(),
                        d.gamma.data(), nullptr, dx.data(), pc + 2 * c, pc + 3 * c,
                        flags) == bnorm_success &&
          Api::moments(s, x.data(), pc + 4 * c, pc + 5 * c) == bnorm_success;
  };
  if (threads <= 0) {
    run();
  } else if (threads == 1) {
    tbb::global_control one(tbb::global_control::max_allowed_parallelism, 1);
    run();
  } else {
    // More threads than cores: chunking must not depend on the thread count either.
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
    tbb::task_arena arena(threads);
    arena.execute(run);
  }
  std::vector<uint8_t> bits(2 * elements * sizeof(T) + per_channel.size() * sizeof(float));
  uint8_t* at = bits.data();
  std::memcpy(at, y.data(), elements * sizeof(T));
  std::memcpy(at += elements * sizeof(T), dx.data(), elements * sizeof(T));
  std::memcpy(at + elements * sizeof(T), pc, per_channel.size() * sizeof(float));
  return bits;
}

// Counts bytes of outputs that differ between runs with 1, 3 and the default threads,
// with BNORM_SERIAL, and between two default runs.
template <typename H>
void CheckDeterminism(const std::vector<CaseData>& cases, Checker& ck) {
  Result& r = ck.target()->results[kDeterminism];
  for (const CaseData& d : cases) {
    ck.SetCase(&d.cs);
    bool ok = true;
    const std::vector<uint8_t> base = DeterminismRun<H>(d, 0, &ok);
    ck.Call(ok, "determinism run failed: " + std::string(bnorm_last_error()));
    for (const int threads : {0, 1, 3, -1}) {
      const std::vector<uint8_t> other = DeterminismRun<H>(d, threads, &ok);
      ck.Call(ok, "determinism run failed: " + std::string(bnorm_last_error()));
      int64_t differ = 0;
      for (size_t i = 0; i < base.size(); ++i) differ += base[i] != other[i];
      r.checked += static_cast<int64_t>(base.size());
      if (differ) {
        r.failed += differ;
        r.worst = std::max(r.worst, static_cast<double>(differ));
        ck.Fail("determinism: " + std::to_string(differ) + " of " + std::to_string(base.size()) +
                " output bytes differ between the default thread count and " +
                (threads > 0    ? std::to_string(threads) + " threads"
                 : threads == 0 ? std::string("a second run")
                                : std::string("BNORM_SERIAL")));
      }
    }
  }
  ck.SetCase(nullptr);
}

// ---------------------------------------------------------------------------------
// Report.

inline std::string FormatError(const Metric& m, const Result& r) {
  char buffer[32];
  if (r.checked == 0) return "-";
  if (!std::isfinite(r.worst)) return "inf";
  if (m.unit == Unit::kRelative) {
    std::snprintf(buffer, sizeof(buffer), "%.2e", r.worst);
  } else if (m.unit == Unit::kCount) {
    std::snprintf(buffer, sizeof(buffer), "%.0f", r.worst);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.2f", r.worst);
  }
  return buffer;
}

inline std::string FormatTolerance(const Metric& m) {
  char buffer[32];
  if (m.unit == Unit::kRelative) {
    std::snprintf(buffer, sizeof(buffer), "%.0e rel", m.tolerance);
  } else if (m.unit == Unit::kCount) {
    std::snprintf(buffer, sizeof(buffer), "%.0f", m.tolerance);
  } else {
    std::snprintf(buffer, sizeof(buffer), "%.0f %s", m.tolerance, UnitName(m.unit));
  }
  return buffer;
}

// Prints one table per element type, a column per target.
inline void PrintTable(const std::vector<TargetResults>& targets) {
  std::printf(
      "\nworst error per target (ulp: |got - ref| / (2^-24 * mag); rel: / |ref|; bound: "
      "|got - ref| / (half an ulp of the type + 64 ulp), half-precision tensors; '!' marks "
      "a failure)\n");
  for (const char* type : {"f32", "bf16", "f16"}) {
    std::vector<const TargetResults*> columns;
    for (const TargetResults& t : targets) {
      if (t.type == type) columns.push_back(&t);
    }
    if (columns.empty()) continue;
    const bool half = columns[0]->half();
    std::printf("\n%-24s %-9s",
                half ? (std::string("tensors of ") + type).c_str() : "tensors of f32", "tolerance");
    for (const TargetResults* t : columns) std::printf(" %11s", t->name.c_str());
    std::printf("\n");
    for (int id = 0; id < kNumMetrics; ++id) {
      if (!Applies(static_cast<MetricId>(id), half)) continue;
      const Metric m = MetricOf(static_cast<MetricId>(id), half);
      std::printf("%-24s %-9s", m.name, FormatTolerance(m).c_str());
      for (const TargetResults* t : columns) {
        const Result& r = t->results[id];
        std::printf(" %10s%c", FormatError(m, r).c_str(), r.failed ? '!' : ' ');
      }
      std::printf("\n");
    }
    std::printf("%-34s", "dispatch + verdict");
    for (const TargetResults* t : columns) {
      std::printf(" %11s", !t->dispatched ? "NO-DISPATCH" : t->Pass() ? "pass" : "FAIL");
    }
    std::printf("\n");
  }
}

inline void WriteJson(const std::string& path, const std::vector<TargetResults>& targets,
                      size_t cases, double seconds, bool pass, bool selected, bool types_selected) {
  Json j;
  j.BeginObject();
  j.Key("tool").String("bnorm check");
  j.Key("cpu").String(CpuModel());
  j.Key("compiled_targets").String(bnorm_compiled_targets());
  j.Key("supported_targets").String(bnorm_supported_targets());
  j.Key("cases").Int(static_cast<int64_t>(cases));
  j.Key("seconds").Number(seconds);
  j.Key("pass").Bool(pass);
  // Whether the targets were chosen (--target, BNORM_CHECK_TARGETS), not all supported.
  j.Key("targets_selected").Bool(selected);
  // Whether the element types were chosen (--type), not all three.
  j.Key("types_selected").Bool(types_selected);
  j.Key("targets").BeginArray();
  for (const TargetResults& t : targets) {
    j.BeginObject();
    j.Key("target").String(t.name);
    j.Key("type").String(t.type);
    j.Key("dispatched").Bool(t.dispatched);
    if (!t.dispatched) j.Key("dispatch_message").String(t.dispatch_message);
    j.Key("pass").Bool(t.Pass());
    j.Key("nonfinite_kind_differs").Int(t.nonfinite_notes);
    j.Key("shapes").Int(t.shapes);
    j.Key("operations").BeginObject();
    for (int id = 0; id < kNumMetrics; ++id) {
      if (!Applies(static_cast<MetricId>(id), t.half())) continue;
      const Metric m = MetricOf(static_cast<MetricId>(id), t.half());
      const Result& r = t.results[id];
      j.Key(m.name).BeginObject();
      j.Key("what").String(m.what);
      j.Key("worst").Number(r.worst);
      j.Key("unit").String(UnitName(m.unit));
      j.Key("tolerance").Number(m.tolerance);
      j.Key("checked").Int(r.checked);
      j.Key("failed").Int(r.failed);
      j.Key("pass").Bool(r.failed == 0);
      j.EndObject();
    }
    j.EndObject();
    j.EndObject();
  }
  j.EndArray();
  j.EndObject();
  if (!j.WriteFile(path)) {
    throw UsageError{"--json: cannot write '" + path + "': " + std::strerror(errno)};
  }
}

// Checks the sweep, empty tensors, refusals and determinism with tensors of element
// type H on each dispatched target of `targets` (whose type is H's).
template <typename H>
void CheckType(const std::vector<Case>& sweep, bool quick,
               const std::vector<TargetResults*>& targets, std::vector<std::string>* failures,
               std::vector<std::string>* notes) {
  if (targets.empty()) return;
  double (*half_ulp)(double) = std::is_same<H, ref::F32>::value ? nullptr : &H::HalfUlp;
  uint64_t seed = 1;
  size_t done = 0;
  for (const Case& cs : sweep) {
    ++seed;
    // Quick, the half types take every fourth small plain shape and every other case
    // (chunk and threading thresholds, high mean, NaN and Inf): the float64 reference
    // is what costs under emulation, and the conversions are the same on every shape.
    if (quick && half_ulp != nullptr && !cs.high_mean && !cs.nonfinite &&
        ref::Elements(cs.shape) <= 16384 && (seed % 4) != 0) {
      continue;
    }
    const CaseData d = MakeCase<H>(cs, seed - 1);
    for (TargetResults* t : targets) {
      if (!t->dispatched) continue;
      bnorm_set_target(t->name.c_str());
      Checker ck(t, failures, notes, half_ulp);
      ck.SetCase(&d.cs);
      CheckCase<H>(d, ck);
      ++t->shapes;
    }
    if (++done % 200 == 0) {
      std::printf("  %s: %zu / %zu shapes\n", H::kName, done, sweep.size());
      std::fflush(stdout);
    }
  }

  // Empty tensors, and bit-identical results whatever the thread count.
  std::vector<CaseData> det_cases;
  if (quick) {  // each still above the threading threshold (64 Ki values)
    det_cases.push_back(MakeCase<H>({{2, 16, 56 * 56, bnorm_nchw}}, 1001));
    det_cases.push_back(MakeCase<H>({{2, 16, 56 * 56, bnorm_nhwc}}, 1002));
    det_cases.push_back(MakeCase<H>({{320, 256, 1, bnorm_nhwc}}, 1003));
  } else {
    det_cases.push_back(MakeCase<H>({{8, 64, 56 * 56, bnorm_nchw}}, 1001));
    det_cases.push_back(MakeCase<H>({{8, 64, 56 * 56, bnorm_nhwc}}, 1002));
    det_cases.push_back(MakeCase<H>({{512, 256, 1, bnorm_nhwc}}, 1003));
  }
  for (TargetResults* t : targets) {
    if (!t->dispatched) continue;
    bnorm_set_target(t->name.c_str());
    Checker ck(t, failures, nullptr, half_ulp);
    CheckEmpty<H>(ck);
    CheckRefusals<H>(ck);
    CheckDeterminism<H>(det_cases, ck);
  }
  bnorm_set_target("");
}

}  // namespace check

struct CheckOptions {
  std::string json_path;
  std::vector<std::string> targets;  // empty: every supported target
  std::vector<std::string> types;    // f32, bf16, f16; empty: all three
  bool quick = false;                // QuickSweep and smaller determinism cases
};

// Runs `bnorm check`; returns the process exit code.
inline int RunCheck(const CheckOptions& options) {
  using namespace check;  // NOLINT(build/namespaces): this file's own namespace
  const auto start = std::chrono::steady_clock::now();
  // Targets: --target, else BNORM_CHECK_TARGETS (tools/run.sh under emulation), else
  // every supported one. A named target the CPU lacks is reported as not dispatched.
  const char* env_targets = std::getenv("BNORM_CHECK_TARGETS");
  std::vector<std::string> names = options.targets;
  if (names.empty() && env_targets != nullptr) names = TargetNames(env_targets);
  const bool selected = !names.empty();
  if (!selected) names = TargetNames(bnorm_supported_targets());
  std::printf("bnorm check: %s\n", CpuModel().c_str());
  std::printf(
      "targets: %s (supported: %s)\n",
      [&] {
        std::string all;
        for (const std::string& n : names) all += (all.empty() ? "" : " ") + n;
        return all;
      }()
          .c_str(),
      bnorm_supported_targets());

  std::vector<std::string> types = options.types;  // validated by the option parser
  if (types.empty()) types = {"f32", "bf16", "f16"};
  std::vector<std::string> failures, notes;

  const std::vector<Case> sweep = options.quick ? QuickSweep() : Sweep();
  int64_t elements = 0;
  for (const Case& cs : sweep) elements += ref::Elements(cs.shape);
  std::string type_list;
  for (const std::string& type : types) type_list += (type_list.empty() ? "" : ", ") + type;
  std::printf(
      "cases: %zu shapes (both layouts, %.1f M elements), every operation, with and "
      "without ReLU, tensors of %s\n",
      sweep.size(), elements * 1e-6, type_list.c_str());
  std::fflush(stdout);

  // Each target's dispatch is checked once up front; a target that cannot be selected
  // is reported and skipped. One result column per target and type.
  std::vector<TargetResults> targets;
  for (const std::string& name : names) {
    TargetResults t;
    t.name = name;
    const bnorm_status st = bnorm_set_target(name.c_str());
    const std::string active = bnorm_active_target();
    t.dispatched = st == bnorm_success && active == name;
    if (!t.dispatched) {
      t.dispatch_message =
          st != bnorm_success ? std::string(bnorm_status_string(st)) + ": " + bnorm_last_error()
                              : "bnorm_set_target(\"" + name +
                                    "\") succeeded but bnorm_active_target() is \"" + active + "\"";
      failures.push_back(name + ": dispatch: " + t.dispatch_message);
    }
    for (const std::string& type : types) {
      targets.push_back(t);
      targets.back().type = type;
    }
  }
  bnorm_set_target("");
  auto of_type = [&](const char* type) {
    std::vector<TargetResults*> list;
    for (TargetResults& t : targets) {
      if (t.type == type) list.push_back(&t);
    }
    return list;
  };
  CheckType<ref::F32>(sweep, options.quick, of_type("f32"), &failures, &notes);
  CheckType<ref::BF16>(sweep, options.quick, of_type("bf16"), &failures, &notes);
  CheckType<ref::F16>(sweep, options.quick, of_type("f16"), &failures, &notes);

  PrintTable(targets);
  bool pass = !targets.empty();
  for (const TargetResults& t : targets) pass = pass && t.Pass();
  int64_t note_count = 0;
  for (const TargetResults& t : targets) note_count += t.nonfinite_notes;
  if (note_count > 0) {
    std::printf(
        "\nnote (not a failure): %lld outputs are NaN where the reference has an Inf, or "
        "the reverse, in the NaN+Inf cases; first ones:\n",
        static_cast<long long>(note_count));
    for (const std::string& n : notes) std::printf("  %s\n", n.c_str());
  }
  if (!failures.empty()) {
    std::printf("\nfirst failures:\n");
    for (const std::string& f : failures) std::printf("  %s\n", f.c_str());
  }
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  std::printf("\n%s: %zu targets x %zu types, %zu shapes, %.1f s\n", pass ? "PASS" : "FAIL",
              names.size(), types.size(), sweep.size(), seconds.count());
  if (!options.json_path.empty()) {
    WriteJson(options.json_path, targets, sweep.size(), seconds.count(), pass, selected,
              !options.types.empty());
    std::printf("wrote %s\n", options.json_path.c_str());
  }
  return pass ? 0 : kExitFailure;
}

}  // namespace tools
}  // namespace bnorm

#endif  // BNORM_TOOLS_CHECK_H_
