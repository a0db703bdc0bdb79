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
    {"determinism", Unit::kCount, 0, "values differing between 1, 3, default threads, serial"},
};

struct Result {
  double worst = 0;  // in the metric's unit; +inf for a non-finite mismatch
  int64_t checked = 0;
  int64_t failed = 0;
};

// One target's results, and whether dispatch switched to it.
struct TargetResults {
  std::string name;
  bool dispatched = false;
  std::string dispatch_message;
  Result results[kNumMetrics];
  int64_t nonfinite_notes = 0;  // NaN for Inf or the reverse, in the NaN+Inf cases
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

// A float buffer with a canary zone behind it: Poison() fills the payload with NaN and
// the canary with a pattern; CanaryOk() says whether the canary survived.
class Guarded {
 public:
  static constexpr size_t kCanary = 16;
  explicit Guarded(size_t n = 0) : n_(n), v_(n + kCanary) { Poison(); }
  float* data() { return v_.data(); }
  const float* data() const { return v_.data(); }
  size_t size() const { return n_; }
  float operator[](size_t i) const { return v_[i]; }
  void Poison() {
    std::fill(v_.begin(), v_.begin() + n_, std::numeric_limits<float>::quiet_NaN());
    std::fill(v_.begin() + n_, v_.end(), kCanaryValue);
  }
  void Fill(const std::vector<float>& values) {
    std::copy(values.begin(), values.end(), v_.begin());
    std::fill(v_.begin() + n_, v_.end(), kCanaryValue);
  }
  bool CanaryOk() const {
    for (size_t i = n_; i < v_.size(); ++i) {
      if (std::memcmp(&v_[i], &kCanaryValue, sizeof(float)) != 0) return false;
    }
    return true;
  }
  // Whether the payload is bit-identical to `other`'s.
  bool SameBits(const std::vector<float>& other) const {
    return other.size() == n_ && std::memcmp(other.data(), v_.data(), n_ * sizeof(float)) == 0;
  }

 private:
  static constexpr float kCanaryValue = -1234.5678f;
  size_t n_;
  std::vector<float> v_;
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

inline CaseData MakeCase(const Case& cs, uint64_t seed) {
  CaseData d;
  d.cs = cs;
  const bnorm_shape& s = cs.shape;
  const size_t elements = static_cast<size_t>(ref::Elements(s));
  const size_t c = static_cast<size_t>(s.c);
  Rng rng(seed);
  std::vector<double> channel_mean(c), channel_sd(c);
  for (size_t ch = 0; ch < c; ++ch) {
    channel_sd[ch] = std::exp(rng.Uniform(std::log(0.1), std::log(10.0)));
    channel_mean[ch] =
        cs.high_mean ? (rng.Uniform(0, 1) < 0.5 ? -1e4 : 1e4) * channel_sd[ch] : rng.Uniform(-3, 3);
  }
  d.x.resize(elements);
  d.dy.resize(elements);
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t ch = 0; ch < s.c; ++ch) {
      for (int64_t sp = 0; sp < s.spatial; ++sp) {
        const int64_t o = ref::Offset(s, i, ch, sp);
        d.x[o] = static_cast<float>(channel_mean[ch] + channel_sd[ch] * rng.Normal());
        d.dy[o] = static_cast<float>(rng.Normal());
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
  d.relu_y = ToFloat(d.inference_y.value);
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
  Checker(TargetResults* target, std::vector<std::string>* failures,
          std::vector<std::string>* notes = nullptr)
      : target_(target), failures_(failures), notes_(notes) {}

  void SetCase(const Case* cs) { case_ = cs; }
  // Names the variant being checked ("in place"), for failure messages; "" for none.
  void SetVariant(const char* variant) { variant_ = variant; }
  TargetResults* target() { return target_; }

  // Compares n values against value/mag in ulps of mag: passes where ref::Near does.
  void Ulp(MetricId id, const float* got, const ref::Vec& value, const ref::Vec& mag, size_t n) {
    Result& r = target_->results[id];
    const double k = kMetrics[id].tolerance;
    double worst = r.worst;
    for (size_t i = 0; i < n; ++i) {
      // Fast path, finite values within tolerance (a NaN difference fails the test).
      const double diff = std::fabs(got[i] - value[i]);
      if (diff <= k * ref::kUlp * mag[i] + 1e-37) {
        if (diff > 0) worst = std::max(worst, mag[i] > 0 ? diff / (ref::kUlp * mag[i]) : 0.0);
        continue;
      }
      double err;
      if (std::isfinite(value[i]) && std::isfinite(got[i])) {
        err = mag[i] > 0 ? diff / (ref::kUlp * mag[i]) : std::numeric_limits<double>::infinity();
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

  void Canary(const Guarded& g, const char* what) {
    Call(g.CanaryOk(), std::string(what) + ": wrote past the end of the output");
  }

  void Fail(const std::string& message) {
    if (failures_->size() < kMaxFailures) {
      failures_->push_back(target_->name + (case_ ? " " + CaseString(*case_) : std::string()) +
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
                  kMetrics[id].unit == Unit::kUlp ? "ulp" : "relative");
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
                    target_->name.c_str(), CaseString(*case_).c_str(),
                    *variant_ ? (std::string(" (") + variant_ + ")").c_str() : "",
                    kMetrics[id].name, i, got, want);
      notes_->push_back(buffer);
    }
    return 0;
  }

  TargetResults* target_;
  std::vector<std::string>* failures_;
  std::vector<std::string>* notes_;
  const Case* case_ = nullptr;
  const char* variant_ = "";
};

// Runs every operation of one case on the active target and compares.
inline void CheckCase(const CaseData& d, Checker& ck) {
  const bnorm_shape* s = &d.cs.shape;
  const size_t elements = d.x.size(), c = static_cast<size_t>(s->c);
  const float* x = d.x.data();

  // Moments.
  {
    Guarded mean(c), var(c);
    if (ck.Expect(bnorm_success, "moments",
                  [&] { return bnorm_moments_f32(s, x, mean.data(), var.data()); })) {
      ref::Vec mag(c);
      for (size_t ch = 0; ch < c; ++ch) mag[ch] = ref::MeanMag(d.stats.mean[ch], d.stats.var[ch]);
      ck.Ulp(kMomentsMean, mean.data(), d.stats.mean, mag, c);
      ck.Relative(kMomentsVar, var.data(), d.stats.var, c);
    }
    ck.Canary(mean, "moments mean");
    ck.Canary(var, "moments var");
  }

  // Training forward: (a) gamma, beta, unbiased running var; (b) no gamma, beta, ReLU,
  // biased running var. With count < 2 the call must be refused, nothing written.
  for (const bool relu : {false, true}) {
    Guarded y(elements), running_mean(c), running_var(c), saved_mean(c), saved_invstd(c);
    running_mean.Fill(d.running_mean0);
    running_var.Fill(d.running_var0);
    const unsigned flags = relu ? BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED : 0u;
    const bnorm_status expected = d.trainable ? bnorm_success : bnorm_invalid_argument;
    const bool ran = ck.Expect(expected, relu ? "training+relu" : "training", [&] {
      return bnorm_forward_training_f32(s, x, y.data(), relu ? nullptr : d.gamma.data(),
                                        relu ? nullptr : d.beta.data(), kEps, kMomentum,
                                        running_mean.data(), running_var.data(), saved_mean.data(),
                                        saved_invstd.data(), flags);
    });
    if (ran) {
      ck.Ulp(relu ? kTrainingYRelu : kTrainingY, y.data(), relu ? d.training_y_relu : d.training_y,
             elements);
      ref::Vec mag(c);
      for (size_t ch = 0; ch < c; ++ch) mag[ch] = ref::MeanMag(d.stats.mean[ch], d.stats.var[ch]);
      ck.Ulp(kTrainingSavedMean, saved_mean.data(), d.stats.mean, mag, c);
      ck.Relative(kTrainingSavedInvstd, saved_invstd.data(), d.invstd, c);
      ck.Ulp(kTrainingRunningMean, running_mean.data(), d.running_mean, d.running_mean_mag, c);
      ck.Relative(kTrainingRunningVar, running_var.data(),
                  relu ? d.running_var_biased : d.running_var, c);
    } else if (!d.trainable) {
      Guarded fresh(elements);
      const Guarded fresh_c(c);
      auto payload = [](const Guarded& g) {
        return std::vector<float>(g.data(), g.data() + g.size());
      };
      const bool untouched = fresh.SameBits(payload(y)) && fresh_c.SameBits(payload(saved_mean)) &&
                             fresh_c.SameBits(payload(saved_invstd)) &&
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
    Guarded y(elements);
    if (ck.Expect(bnorm_success, relu ? "inference+relu" : "inference", [&] {
          return bnorm_forward_inference_f32(s, x, y.data(), relu ? nullptr : d.gamma.data(),
                                             relu ? nullptr : d.beta.data(), d.inf_mean.data(),
                                             d.inf_var.data(), kEps, relu ? BNORM_FUSE_RELU : 0u);
        })) {
      ck.Ulp(relu ? kInferenceYRelu : kInferenceY, y.data(),
             relu ? d.inference_y_relu : d.inference_y, elements);
    }
    ck.Canary(y, "inference y");
  }

  // Fold, with and without gamma and beta.
  for (const bool defaults : {false, true}) {
    Guarded scale(c), shift(c);
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
    Guarded y(elements);
    if (ck.Expect(bnorm_success, relu ? "affine+relu" : "affine", [&] {
          return bnorm_affine_f32(s, x, y.data(), d.scale.data(), d.shift.data(),
                                  relu ? BNORM_FUSE_RELU : 0u);
        })) {
      ck.Ulp(relu ? kAffineYRelu : kAffineY, y.data(), relu ? d.affine_y_relu : d.affine_y,
             elements);
    }
    ck.Canary(y, "affine y");
  }

  // Backward: (a) gamma, all gradients; (b) no gamma, ReLU mask; (c) dx alone.
  for (int variant = 0; variant < 3; ++variant) {
    const bool relu = variant == 1, dx_only = variant == 2;
    Guarded dx(elements), dgamma(c), dbeta(c);
    if (ck.Expect(bnorm_success, relu ? "backward+relu" : "backward", [&] {
          return bnorm_backward_f32(s, x, d.dy.data(), d.saved_mean.data(), d.saved_invstd.data(),
                                    relu ? nullptr : d.gamma.data(),
                                    relu ? d.relu_y.data() : nullptr, dx.data(),
                                    dx_only ? nullptr : dgamma.data(),
                                    dx_only ? nullptr : dbeta.data(), relu ? BNORM_FUSE_RELU : 0u);
        })) {
      const ref::Gradients& g = relu ? d.backward_relu : d.backward;
      ck.Ulp(relu ? kBackwardReluDx : kBackwardDx, dx.data(), g.dx, elements);
      if (!dx_only) {
        ck.Ulp(relu ? kBackwardReluDgamma : kBackwardDgamma, dgamma.data(), g.dgamma, c);
        ck.Ulp(relu ? kBackwardReluDbeta : kBackwardDbeta, dbeta.data(), g.dbeta, c);
      } else {
        const Guarded fresh(c);
        ck.Call(fresh.SameBits(std::vector<float>(dgamma.data(), dgamma.data() + c)) &&
                    fresh.SameBits(std::vector<float>(dbeta.data(), dbeta.data() + c)),
                "backward with dgamma = dbeta = NULL wrote them");
      }
    }
    ck.Canary(dx, "backward dx");
    ck.Canary(dgamma, "backward dgamma");
    ck.Canary(dbeta, "backward dbeta");
  }

  // In place, which the contract allows: y == x for the forward operations, dx == dy.
  ck.SetVariant("in place");
  Guarded buffer(elements);
  buffer.Fill(d.x);
  if (ck.Expect(bnorm_success, "affine in place", [&] {
        return bnorm_affine_f32(s, buffer.data(), buffer.data(), d.scale.data(), d.shift.data(), 0);
      })) {
    ck.Ulp(kAffineY, buffer.data(), d.affine_y, elements);
  }
  buffer.Fill(d.x);
  if (ck.Expect(bnorm_success, "inference in place", [&] {
        return bnorm_forward_inference_f32(s, buffer.data(), buffer.data(), d.gamma.data(),
                                           d.beta.data(), d.inf_mean.data(), d.inf_var.data(), kEps,
                                           0);
      })) {
    ck.Ulp(kInferenceY, buffer.data(), d.inference_y, elements);
  }
  if (d.trainable) {
    buffer.Fill(d.x);
    Guarded saved_mean(c), saved_invstd(c);
    if (ck.Expect(bnorm_success, "training in place", [&] {
          return bnorm_forward_training_f32(s, buffer.data(), buffer.data(), d.gamma.data(),
                                            d.beta.data(), kEps, kMomentum, nullptr, nullptr,
                                            saved_mean.data(), saved_invstd.data(), 0);
        })) {
      ck.Ulp(kTrainingY, buffer.data(), d.training_y, elements);
      ref::Vec mag(c);
      for (size_t ch = 0; ch < c; ++ch) mag[ch] = ref::MeanMag(d.stats.mean[ch], d.stats.var[ch]);
      ck.Ulp(kTrainingSavedMean, saved_mean.data(), d.stats.mean, mag, c);
      ck.Relative(kTrainingSavedInvstd, saved_invstd.data(), d.invstd, c);
    }
  }
  buffer.Fill(d.dy);
  if (ck.Expect(bnorm_success, "backward in place", [&] {
        return bnorm_backward_f32(s, x, buffer.data(), d.saved_mean.data(), d.saved_invstd.data(),
                                  d.gamma.data(), nullptr, buffer.data(), nullptr, nullptr, 0);
      })) {
    ck.Ulp(kBackwardDx, buffer.data(), d.backward.dx, elements);
  }
  ck.Canary(buffer, "in-place buffer");
  ck.SetVariant("");
}

// Checks that empty tensors succeed and write nothing.
inline void CheckEmpty(Checker& ck) {
  Guarded out(4), out2(4);
  const float one[4] = {1, 1, 1, 1};
  for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
    const bnorm_shape no_channels{4, 0, 5, layout}, no_images{0, 4, 5, layout};
    ck.Expect(bnorm_success, "moments on c = 0",
              [&] { return bnorm_moments_f32(&no_channels, one, out.data(), out2.data()); });
    ck.Expect(bnorm_success, "training on c = 0", [&] {
      return bnorm_forward_training_f32(&no_channels, one, out.data(), nullptr, nullptr, kEps,
                                        kMomentum, nullptr, nullptr, nullptr, nullptr, 0);
    });
    ck.Expect(bnorm_success, "affine on n = 0",
              [&] { return bnorm_affine_f32(&no_images, one, out.data(), one, one, 0); });
    ck.Expect(bnorm_success, "inference on n = 0", [&] {
      return bnorm_forward_inference_f32(&no_images, one, out.data(), nullptr, nullptr, one, one,
                                         kEps, 0);
    });
    ck.Expect(bnorm_success, "backward on c = 0", [&] {
      return bnorm_backward_f32(&no_channels, one, one, one, one, nullptr, nullptr, out.data(),
                                out2.data(), out2.data(), 0);
    });
  }
  const Guarded fresh(4);
  ck.Call(fresh.SameBits(std::vector<float>(out.data(), out.data() + 4)) &&
              fresh.SameBits(std::vector<float>(out2.data(), out2.data() + 4)) && out.CanaryOk() &&
              out2.CanaryOk(),
          "an empty-tensor call wrote an output");
}

// Checks that bad arguments are refused with the right status and a message, and that
// nothing is written: partial overlap, bad eps and momentum, unknown flag bits and
// layouts, null or half-given buffers, negative sizes, unknown target names.
inline void CheckRefusals(Checker& ck) {
  constexpr size_t kN = 2 * 3 * 5;
  std::vector<float> x(kN + 8, 0.5f), params(3, 1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5);
  const std::vector<float> x0 = x;
  Guarded y(kN), stats(3), stats2(3);
  const bnorm_shape s{2, 3, 5, bnorm_nchw};
  const float* p = params.data();
  auto refused = [&](const char* what, bnorm_status expected, bnorm_status got) {
    ck.Call(got == expected && bnorm_last_error()[0] != '\0',
            std::string(what) + ": returned " + bnorm_status_string(got) + ", expected " +
                bnorm_status_string(expected) + " with a message (last error: \"" +
                bnorm_last_error() + "\")");
  };
  const bnorm_status bad = bnorm_invalid_argument;
  refused("affine with y = x + 1 (partial overlap)", bad,
          bnorm_affine_f32(&s, x.data(), x.data() + 1, p, p, 0));
  refused("training with eps = 0", bad,
          bnorm_forward_training_f32(&s, x.data(), y.data(), p, p, 0.0f, kMomentum, nullptr,
                                     nullptr, nullptr, nullptr, 0));
  refused("training with eps = NaN", bad,
          bnorm_forward_training_f32(&s, x.data(), y.data(), p, p,
                                     std::numeric_limits<float>::quiet_NaN(), kMomentum, nullptr,
                                     nullptr, nullptr, nullptr, 0));
  refused("training with momentum = 1.5", bad,
          bnorm_forward_training_f32(&s, x.data(), y.data(), p, p, kEps, 1.5f, stats.data(),
                                     stats2.data(), nullptr, nullptr, 0));
  refused("training with running_mean but no running_var", bad,
          bnorm_forward_training_f32(&s, x.data(), y.data(), p, p, kEps, kMomentum, stats.data(),
                                     nullptr, nullptr, nullptr, 0));
  refused("inference with an unknown flag bit", bad,
          bnorm_forward_inference_f32(&s, x.data(), y.data(), p, p, p, p, kEps, 1u << 7));
  const bnorm_shape bad_layout{2, 3, 5, static_cast<bnorm_layout>(7)};
  refused("moments with layout 7", bad,
          bnorm_moments_f32(&bad_layout, x.data(), stats.data(), stats2.data()));
  const bnorm_shape negative{2, -3, 5, bnorm_nchw};
  refused("moments with c = -3", bad,
          bnorm_moments_f32(&negative, x.data(), stats.data(), stats2.data()));
  refused("moments with x = NULL", bad,
          bnorm_moments_f32(&s, nullptr, stats.data(), stats2.data()));
  refused("backward with ReLU and y = NULL", bad,
          bnorm_backward_f32(&s, x.data(), x.data(), p, p, p, nullptr, y.data(), stats.data(),
                             stats2.data(), BNORM_FUSE_RELU));
  const Guarded fresh(kN), fresh3(3);
  auto payload = [](const Guarded& g) { return std::vector<float>(g.data(), g.data() + g.size()); };
  ck.Call(x == x0 && fresh.SameBits(payload(y)) && fresh3.SameBits(payload(stats)) &&
              fresh3.SameBits(payload(stats2)),
          "a refused call wrote an output");

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
// default arena; -1: the BNORM_SERIAL flag) and returns every output, concatenated;
// *ok tells whether every call succeeded.
inline std::vector<float> DeterminismRun(const CaseData& d, int threads, bool* ok) {
  const bnorm_shape* s = &d.cs.shape;
  const size_t elements = d.x.size(), c = static_cast<size_t>(s->c);
  std::vector<float> y(elements), dx(elements), per_channel(6 * c);
  float* pc = per_channel.data();
  const unsigned flags = threads < 0 ? BNORM_SERIAL : 0u;
  auto run = [&] {
    *ok = bnorm_forward_training_f32(s, d.x.data(), y.data(), d.gamma.data(), d.beta.data(), kEps,
                                     kMomentum, nullptr, nullptr, pc, pc + c,
                                     flags) == bnorm_success &&
          bnorm_backward_f32(s, d.x.data(), d.dy.data(), d.saved_mean.data(), d.saved_invstd.data(),
                             d.gamma.data(), nullptr, dx.data(), pc + 2 * c, pc + 3 * c,
                             flags) == bnorm_success &&
          bnorm_moments_f32(s, d.x.data(), pc + 4 * c, pc + 5 * c) == bnorm_success;
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
  y.insert(y.end(), dx.begin(), dx.end());
  y.insert(y.end(), per_channel.begin(), per_channel.end());
  return y;
}

// Counts values that differ bitwise between runs with 1, 3 and the default threads,
// with BNORM_SERIAL, and between two default runs.
inline void CheckDeterminism(const std::vector<CaseData>& cases, Checker& ck) {
  Result& r = ck.target()->results[kDeterminism];
  for (const CaseData& d : cases) {
    ck.SetCase(&d.cs);
    bool ok = true;
    const std::vector<float> base = DeterminismRun(d, 0, &ok);
    ck.Call(ok, "determinism run failed: " + std::string(bnorm_last_error()));
    for (const int threads : {0, 1, 3, -1}) {
      const std::vector<float> other = DeterminismRun(d, threads, &ok);
      ck.Call(ok, "determinism run failed: " + std::string(bnorm_last_error()));
      int64_t differ = 0;
      for (size_t i = 0; i < base.size(); ++i) {
        differ += std::memcmp(&base[i], &other[i], sizeof(float)) != 0;
      }
      r.checked += static_cast<int64_t>(base.size());
      if (differ) {
        r.failed += differ;
        r.worst = std::max(r.worst, static_cast<double>(differ));
        ck.Fail("determinism: " + std::to_string(differ) + " of " + std::to_string(base.size()) +
                " values differ between the default thread count and " +
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
    std::snprintf(buffer, sizeof(buffer), "%.0f ulp", m.tolerance);
  }
  return buffer;
}

inline void PrintTable(const std::vector<TargetResults>& targets) {
  std::printf(
      "\nworst error per target (ulp: |got - ref| / (2^-24 * mag); rel: / |ref|; "
      "'!' marks a failure)\n");
  std::printf("%-24s %-9s", "output", "tolerance");
  for (const TargetResults& t : targets) std::printf(" %11s", t.name.c_str());
  std::printf("\n");
  for (int id = 0; id < kNumMetrics; ++id) {
    const Metric& m = kMetrics[id];
    std::printf("%-24s %-9s", m.name, FormatTolerance(m).c_str());
    for (const TargetResults& t : targets) {
      const Result& r = t.results[id];
      std::printf(" %10s%c", FormatError(m, r).c_str(), r.failed ? '!' : ' ');
    }
    std::printf("\n");
  }
  std::printf("%-34s", "dispatch + verdict");
  for (const TargetResults& t : targets) {
    std::printf(" %11s", !t.dispatched ? "NO-DISPATCH" : t.Pass() ? "pass" : "FAIL");
  }
  std::printf("\n");
}

inline void WriteJson(const std::string& path, const std::vector<TargetResults>& targets,
                      size_t cases, double seconds, bool pass, bool selected) {
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
  j.Key("targets").BeginArray();
  for (const TargetResults& t : targets) {
    j.BeginObject();
    j.Key("target").String(t.name);
    j.Key("dispatched").Bool(t.dispatched);
    if (!t.dispatched) j.Key("dispatch_message").String(t.dispatch_message);
    j.Key("pass").Bool(t.Pass());
    j.Key("nonfinite_kind_differs").Int(t.nonfinite_notes);
    j.Key("operations").BeginObject();
    for (int id = 0; id < kNumMetrics; ++id) {
      const Metric& m = kMetrics[id];
      const Result& r = t.results[id];
      j.Key(m.name).BeginObject();
      j.Key("what").String(m.what);
      j.Key("worst").Number(r.worst);
      j.Key("unit").String(m.unit == Unit::kUlp        ? "ulp"
                           : m.unit == Unit::kRelative ? "relative"
                                                       : "count");
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

}  // namespace check

struct CheckOptions {
  std::string json_path;
  std::vector<std::string> targets;  // empty: every supported target
  bool quick = false;                 // QuickSweep and smaller determinism cases
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

  std::vector<TargetResults> targets(names.size());
  std::vector<std::string> failures, notes;
  for (size_t t = 0; t < names.size(); ++t) targets[t].name = names[t];

  const std::vector<Case> sweep = options.quick ? QuickSweep() : Sweep();
  int64_t elements = 0;
  for (const Case& cs : sweep) elements += ref::Elements(cs.shape);
  std::printf(
      "cases: %zu shapes (both layouts, %.1f M elements), every operation, with and "
      "without ReLU\n",
      sweep.size(), elements * 1e-6);
  std::fflush(stdout);

  // Each target's dispatch is checked once up front; a target that cannot be selected
  // is reported and skipped.
  for (TargetResults& t : targets) {
    const bnorm_status st = bnorm_set_target(t.name.c_str());
    const std::string active = bnorm_active_target();
    t.dispatched = st == bnorm_success && active == t.name;
    if (!t.dispatched) {
      t.dispatch_message =
          st != bnorm_success ? std::string(bnorm_status_string(st)) + ": " + bnorm_last_error()
                              : "bnorm_set_target(\"" + t.name +
                                    "\") succeeded but bnorm_active_target() is \"" + active + "\"";
      failures.push_back(t.name + ": dispatch: " + t.dispatch_message);
    }
  }

  uint64_t seed = 1;
  size_t done = 0;
  for (const Case& cs : sweep) {
    const CaseData d = MakeCase(cs, seed++);
    for (TargetResults& t : targets) {
      if (!t.dispatched) continue;
      bnorm_set_target(t.name.c_str());
      Checker ck(&t, &failures, &notes);
      ck.SetCase(&d.cs);
      CheckCase(d, ck);
    }
    if (++done % 200 == 0) {
      std::printf("  %zu / %zu shapes\n", done, sweep.size());
      std::fflush(stdout);
    }
  }

  // Empty tensors, and bit-identical results whatever the thread count.
  std::vector<CaseData> det_cases;
  if (options.quick) {  // each still above the threading threshold (64 Ki values)
    det_cases.push_back(MakeCase({{2, 16, 56 * 56, bnorm_nchw}}, 1001));
    det_cases.push_back(MakeCase({{2, 16, 56 * 56, bnorm_nhwc}}, 1002));
    det_cases.push_back(MakeCase({{320, 256, 1, bnorm_nhwc}}, 1003));
  } else {
    det_cases.push_back(MakeCase({{8, 64, 56 * 56, bnorm_nchw}}, 1001));
    det_cases.push_back(MakeCase({{8, 64, 56 * 56, bnorm_nhwc}}, 1002));
    det_cases.push_back(MakeCase({{512, 256, 1, bnorm_nhwc}}, 1003));
  }
  for (TargetResults& t : targets) {
    if (!t.dispatched) continue;
    bnorm_set_target(t.name.c_str());
    Checker ck(&t, &failures);
    CheckEmpty(ck);
    CheckRefusals(ck);
    CheckDeterminism(det_cases, ck);
  }
  bnorm_set_target("");

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
  std::printf("\n%s: %zu targets, %zu shapes, %.1f s\n", pass ? "PASS" : "FAIL", targets.size(),
              sweep.size(), seconds.count());
  if (!options.json_path.empty()) {
    WriteJson(options.json_path, targets, sweep.size(), seconds.count(), pass, selected);
    std::printf("wrote %s\n", options.json_path.c_str());
  }
  return pass ? 0 : kExitFailure;
}

}  // namespace tools
}  // namespace bnorm

#endif  // BNORM_TOOLS_CHECK_H_
