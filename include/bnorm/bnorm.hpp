// bnorm C++ API: a header-only layer over the C ABI in bnorm.h. Failures throw
// bnorm::Error carrying the status and the message; buffer sizes are checked against
// the shape before the C call.
#ifndef BNORM_BNORM_HPP_
#define BNORM_BNORM_HPP_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"

namespace bnorm {

enum class Layout { kNCHW = bnorm_nchw, kNHWC = bnorm_nhwc };

enum Flags : unsigned {
  kNone = 0,
  kFuseRelu = BNORM_FUSE_RELU,
  kRunningVarBiased = BNORM_RUNNING_VAR_BIASED,
  kSerial = BNORM_SERIAL,
};

// A failed call: the C status and the message naming the argument and constraint.
class Error : public std::runtime_error {
 public:
  Error(bnorm_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  bnorm_status status() const noexcept { return status_; }

 private:
  bnorm_status status_;
};

namespace detail {
inline void Check(bnorm_status status) {
  if (status != bnorm_success) throw Error(status, bnorm_last_error());
}
}  // namespace detail

// A contiguous run of T, as pointer + size (std::vector and arrays convert to it).
template <typename T>
class Span {
 public:
  Span() = default;
  Span(T* data, size_t size) : data_(data), size_(size) {}
  template <typename U>
  Span(std::vector<U>& v) : data_(v.data()), size_(v.size()) {}  // NOLINT
  template <typename U>
  Span(const std::vector<U>& v) : data_(v.data()), size_(v.size()) {}  // NOLINT
  template <size_t kN>
  Span(T (&a)[kN]) : data_(a), size_(kN) {}  // NOLINT
  T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// n images of c channels of `spatial` elements, in one of two layouts.
struct Shape {
  int64_t n = 0, c = 0, spatial = 1;
  Layout layout = Layout::kNCHW;

  int64_t count() const { return n * spatial; }        // values per channel
  int64_t elements() const { return n * c * spatial; }  // values in the tensor
  bnorm_shape c_shape() const {
    bnorm_shape s{n, c, spatial, bnorm_nchw};
    // Copy the value as an int: an out-of-range layout reaches the C API (which rejects
    // it) without an out-of-range enum conversion.
    const int value = static_cast<int>(layout);
    static_assert(sizeof(value) == sizeof(s.layout), "bnorm_layout is int-sized");
    std::memcpy(&s.layout, &value, sizeof(value));
    return s;
  }
};

namespace detail {
// Throws unless `s` holds exactly `expected` elements (or is empty and `optional`).
template <typename T>
T* Sized(Span<T> s, int64_t expected, const char* what, bool optional = false) {
  if (optional && s.data() == nullptr && s.size() == 0) return nullptr;
  if (expected < 0 || s.size() != static_cast<size_t>(expected)) {
    throw Error(bnorm_invalid_argument,
                std::string(what) + ": holds " + std::to_string(s.size()) +
                    " elements, the shape needs " + std::to_string(expected));
  }
  return s.data();
}
}  // namespace detail

namespace detail {
// T as a non-deduced context: the operations below take their tensors' element type T
// from an explicit template argument (default float), e.g. Moments<bnorm_bf16>(...).
template <typename T>
struct Identity {
  using type = T;
};
template <typename T>
using Same = typename Identity<T>::type;

// The C entry points of each tensor element type.
template <typename T>
struct Api;
#define BNORM_HPP_API(T, S)                                                             \
  template <>                                                                           \
  struct Api<T> {                                                                       \
    static constexpr auto moments = &bnorm_moments_##S;                                 \
    static constexpr auto forward_training = &bnorm_forward_training_##S;               \
    static constexpr auto forward_inference = &bnorm_forward_inference_##S;             \
    static constexpr auto affine = &bnorm_affine_##S;                                   \
    static constexpr auto backward = &bnorm_backward_##S;                               \
    static constexpr auto moments_slice = &bnorm_moments_slice_##S;                     \
    static constexpr auto forward_training_slice = &bnorm_forward_training_slice_##S;   \
    static constexpr auto forward_inference_slice = &bnorm_forward_inference_slice_##S; \
    static constexpr auto affine_slice = &bnorm_affine_slice_##S;                       \
    static constexpr auto backward_slice = &bnorm_backward_slice_##S;                   \
  };
BNORM_HPP_API(float, f32)
BNORM_HPP_API(bnorm_bf16, bf16)
BNORM_HPP_API(bnorm_f16, f16)
#undef BNORM_HPP_API
}  // namespace detail

inline std::string ActiveTarget() { return bnorm_active_target(); }
inline std::string CompiledTargets() { return bnorm_compiled_targets(); }
inline std::string SupportedTargets() { return bnorm_supported_targets(); }
// Returns the names in a space-separated target list such as SupportedTargets().
inline std::vector<std::string> TargetNames(const std::string& list) {
  std::vector<std::string> names;
  for (size_t i = 0; i < list.size();) {
    const size_t end = std::min(list.find(' ', i), list.size());
    if (end > i) names.push_back(list.substr(i, end - i));
    i = end + 1;
  }
  return names;
}
// Selects the target by name for the whole process ("" = best).
inline void SetTarget(const std::string& name) { detail::Check(bnorm_set_target(name.c_str())); }

// Per-channel batch mean and biased variance.
template <typename T = float>
inline void Moments(const Shape& s, Span<const detail::Same<T>> x, Span<float> mean,
                    Span<float> var) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::moments(&cs, detail::Sized(x, s.elements(), "x"),
                                        detail::Sized(mean, s.c, "mean"),
                                        detail::Sized(var, s.c, "var")));
}

// Training forward; empty spans stand for the optional (NULL) buffers.
template <typename T = float>
inline void ForwardTraining(const Shape& s, Span<const detail::Same<T>> x, Span<detail::Same<T>> y,
                            Span<const float> gamma, Span<const float> beta, float eps,
                            float momentum, Span<float> running_mean, Span<float> running_var,
                            Span<float> saved_mean, Span<float> saved_invstd,
                            unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::forward_training(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(y, s.elements(), "y"),
      detail::Sized(gamma, s.c, "gamma", true), detail::Sized(beta, s.c, "beta", true), eps,
      momentum, detail::Sized(running_mean, s.c, "running_mean", true),
      detail::Sized(running_var, s.c, "running_var", true),
      detail::Sized(saved_mean, s.c, "saved_mean", true),
      detail::Sized(saved_invstd, s.c, "saved_invstd", true), flags));
}

// Inference forward with given statistics.
template <typename T = float>
inline void ForwardInference(const Shape& s, Span<const detail::Same<T>> x, Span<detail::Same<T>> y,
                             Span<const float> gamma, Span<const float> beta,
                             Span<const float> mean, Span<const float> var, float eps,
                             unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::forward_inference(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(y, s.elements(), "y"),
      detail::Sized(gamma, s.c, "gamma", true), detail::Sized(beta, s.c, "beta", true),
      detail::Sized(mean, s.c, "mean"), detail::Sized(var, s.c, "var"), eps, flags));
}

// Folds BN parameters into per-channel scale and shift.
inline void Fold(Span<const float> gamma, Span<const float> beta, Span<const float> mean,
                 Span<const float> var, float eps, Span<float> scale, Span<float> shift) {
  const int64_t c = static_cast<int64_t>(mean.size());
  detail::Check(bnorm_fold_f32(c, detail::Sized(gamma, c, "gamma", true),
                               detail::Sized(beta, c, "beta", true), mean.data(),
                               detail::Sized(var, c, "var"), eps, detail::Sized(scale, c, "scale"),
                               detail::Sized(shift, c, "shift")));
}

// y = x * scale + shift (+ ReLU).
template <typename T = float>
inline void Affine(const Shape& s, Span<const detail::Same<T>> x, Span<detail::Same<T>> y,
                   Span<const float> scale, Span<const float> shift, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::affine(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(y, s.elements(), "y"),
      detail::Sized(scale, s.c, "scale"), detail::Sized(shift, s.c, "shift"), flags));
}

// Backward; empty spans for gamma (ones), y (needed only with kFuseRelu), and for the
// gradients to skip.
template <typename T = float>
inline void Backward(const Shape& s, Span<const detail::Same<T>> x, Span<const detail::Same<T>> dy,
                     Span<const float> saved_mean, Span<const float> saved_invstd,
                     Span<const float> gamma, Span<const detail::Same<T>> y,
                     Span<detail::Same<T>> dx, Span<float> dgamma, Span<float> dbeta,
                     unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::backward(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(dy, s.elements(), "dy"),
      detail::Sized(saved_mean, s.c, "saved_mean"),
      detail::Sized(saved_invstd, s.c, "saved_invstd"), detail::Sized(gamma, s.c, "gamma", true),
      detail::Sized(y, s.elements(), "y", true), detail::Sized(dx, s.elements(), "dx", true),
      detail::Sized(dgamma, s.c, "dgamma", true), detail::Sized(dbeta, s.c, "dbeta", true), flags));
}

// Channel slices [begin, end) of a tensor: the operations above on those channels
// only, bit-identical to the whole call (see bnorm_*_slice_f32). Spans are the whole
// tensor and whole per-channel arrays.
struct Channels {
  int64_t begin = 0, end = 0;
};

template <typename T = float>
inline void Moments(const Shape& s, Channels ch, Span<const detail::Same<T>> x, Span<float> mean,
                    Span<float> var, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::moments_slice(
      &cs, ch.begin, ch.end, detail::Sized(x, s.elements(), "x"), detail::Sized(mean, s.c, "mean"),
      detail::Sized(var, s.c, "var"), flags));
}

template <typename T = float>
inline void ForwardTraining(const Shape& s, Channels ch, Span<const detail::Same<T>> x,
                            Span<detail::Same<T>> y, Span<const float> gamma,
                            Span<const float> beta, float eps, float momentum,
                            Span<float> running_mean, Span<float> running_var,
                            Span<float> saved_mean, Span<float> saved_invstd,
                            unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::forward_training_slice(
      &cs, ch.begin, ch.end, detail::Sized(x, s.elements(), "x"),
      detail::Sized(y, s.elements(), "y"), detail::Sized(gamma, s.c, "gamma", true),
      detail::Sized(beta, s.c, "beta", true), eps, momentum,
      detail::Sized(running_mean, s.c, "running_mean", true),
      detail::Sized(running_var, s.c, "running_var", true),
      detail::Sized(saved_mean, s.c, "saved_mean", true),
      detail::Sized(saved_invstd, s.c, "saved_invstd", true), flags));
}

template <typename T = float>
inline void ForwardInference(const Shape& s, Channels ch, Span<const detail::Same<T>> x,
                             Span<detail::Same<T>> y, Span<const float> gamma,
                             Span<const float> beta, Span<const float> mean, Span<const float> var,
                             float eps, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::forward_inference_slice(
      &cs, ch.begin, ch.end, detail::Sized(x, s.elements(), "x"),
      detail::Sized(y, s.elements(), "y"), detail::Sized(gamma, s.c, "gamma", true),
      detail::Sized(beta, s.c, "beta", true), detail::Sized(mean, s.c, "mean"),
      detail::Sized(var, s.c, "var"), eps, flags));
}

template <typename T = float>
inline void Affine(const Shape& s, Channels ch, Span<const detail::Same<T>> x,
                   Span<detail::Same<T>> y, Span<const float> scale, Span<const float> shift,
                   unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::affine_slice(
      &cs, ch.begin, ch.end, detail::Sized(x, s.elements(), "x"),
      detail::Sized(y, s.elements(), "y"), detail::Sized(scale, s.c, "scale"),
      detail::Sized(shift, s.c, "shift"), flags));
}

template <typename T = float>
inline void Backward(const Shape& s, Channels ch, Span<const detail::Same<T>> x,
                     Span<const detail::Same<T>> dy, Span<const float> saved_mean,
                     Span<const float> saved_invstd, Span<const float> gamma,
                     Span<const detail::Same<T>> y, Span<detail::Same<T>> dx, Span<float> dgamma,
                     Span<float> dbeta, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(detail::Api<T>::backward_slice(
      &cs, ch.begin, ch.end, detail::Sized(x, s.elements(), "x"),
      detail::Sized(dy, s.elements(), "dy"), detail::Sized(saved_mean, s.c, "saved_mean"),
      detail::Sized(saved_invstd, s.c, "saved_invstd"), detail::Sized(gamma, s.c, "gamma", true),
      detail::Sized(y, s.elements(), "y", true), detail::Sized(dx, s.elements(), "dx", true),
      detail::Sized(dgamma, s.c, "dgamma", true), detail::Sized(dbeta, s.c, "dbeta", true), flags));
}

// --- Synchronized batch norm: the local steps of bnorm.h's bnorm_partial_stats_f32 ...
// bnorm_backward_dx_f32. include/bnorm/bnorm_mpi.hpp runs them over MPI.

// Count, mean and M2 of one channel's values, in float64 (bnorm_partial_stats).
using PartialStats = bnorm_partial_stats;

// Writes the partial statistics of every channel of the local slice x (count 0 for a
// slice without values).
inline void PartialStatsOf(const Shape& s, Span<const float> x, Span<PartialStats> stats,
                           unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(bnorm_partial_stats_f32(&cs, detail::Sized(x, s.elements(), "x"),
                                        detail::Sized(stats, s.c, "stats"), flags));
}

// out = a (+) b per channel (Chan's formula); out may be a or b.
inline void MergePartialStats(Span<const PartialStats> a, Span<const PartialStats> b,
                              Span<PartialStats> out) {
  const int64_t c = static_cast<int64_t>(a.size());
  detail::Check(bnorm_merge_partial_stats(c, a.data(), detail::Sized(b, c, "b"),
                                          detail::Sized(out, c, "out")));
}

// Global mean and invstd (each optional) and the running statistics (optional) from
// merged statistics.
inline void FinishStats(Span<const PartialStats> global, float eps, float momentum,
                        Span<float> running_mean, Span<float> running_var, Span<float> mean,
                        Span<float> invstd, unsigned flags = kNone) {
  const int64_t c = static_cast<int64_t>(global.size());
  detail::Check(bnorm_finish_stats_f32(
      c, global.data(), eps, momentum, detail::Sized(running_mean, c, "running_mean", true),
      detail::Sized(running_var, c, "running_var", true), detail::Sized(mean, c, "mean", true),
      detail::Sized(invstd, c, "invstd", true), flags));
}

// y = (x - mean) * invstd * gamma + beta (+ ReLU) with given (global) statistics.
inline void Normalize(const Shape& s, Span<const float> x, Span<float> y, Span<const float> mean,
                      Span<const float> invstd, Span<const float> gamma, Span<const float> beta,
                      unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(bnorm_normalize_f32(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(y, s.elements(), "y"),
      detail::Sized(mean, s.c, "mean"), detail::Sized(invstd, s.c, "invstd"),
      detail::Sized(gamma, s.c, "gamma", true), detail::Sized(beta, s.c, "beta", true), flags));
}

// Local backward sums of dy and dy * xhat (float64); y only with kFuseRelu.
inline void BackwardSums(const Shape& s, Span<const float> x, Span<const float> dy,
                         Span<const float> mean, Span<const float> invstd, Span<const float> y,
                         Span<double> sum_dy, Span<double> sum_dy_xhat, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(bnorm_backward_sums_f32(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(dy, s.elements(), "dy"),
      detail::Sized(mean, s.c, "mean"), detail::Sized(invstd, s.c, "invstd"),
      detail::Sized(y, s.elements(), "y", true), detail::Sized(sum_dy, s.c, "sum_dy"),
      detail::Sized(sum_dy_xhat, s.c, "sum_dy_xhat"), flags));
}

// dx of the local slice, dgamma and dbeta (each optional) from the global sums and count.
inline void BackwardDx(const Shape& s, Span<const float> x, Span<const float> dy,
                       Span<const float> mean, Span<const float> invstd, Span<const float> gamma,
                       Span<const float> y, Span<const double> sum_dy,
                       Span<const double> sum_dy_xhat, int64_t global_count, Span<float> dx,
                       Span<float> dgamma, Span<float> dbeta, unsigned flags = kNone) {
  const bnorm_shape cs = s.c_shape();
  detail::Check(bnorm_backward_dx_f32(
      &cs, detail::Sized(x, s.elements(), "x"), detail::Sized(dy, s.elements(), "dy"),
      detail::Sized(mean, s.c, "mean"), detail::Sized(invstd, s.c, "invstd"),
      detail::Sized(gamma, s.c, "gamma", true), detail::Sized(y, s.elements(), "y", true),
      detail::Sized(sum_dy, s.c, "sum_dy"), detail::Sized(sum_dy_xhat, s.c, "sum_dy_xhat"),
      global_count, detail::Sized(dx, s.elements(), "dx", true),
      detail::Sized(dgamma, s.c, "dgamma", true), detail::Sized(dbeta, s.c, "dbeta", true),
      flags));
}

inline std::string Version() { return bnorm_version(); }

}  // namespace bnorm

#endif  // BNORM_BNORM_HPP_
