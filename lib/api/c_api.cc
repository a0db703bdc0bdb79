// The C entry points: validate every argument before touching memory, then run the
// operation. A failure returns a status, writes nothing and leaves a one-line message
// naming the argument, the constraint and the value.
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <new>

#include "bnorm/bnorm.h"
#include "lib/api/status.h"
#include "lib/ops/ops.h"

namespace bnorm {
namespace detail {
namespace {

thread_local char g_last_error[512] = "";

constexpr unsigned kKnownFlags = BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED | BNORM_SERIAL;

// One buffer an operation reads or writes, for the overlap rules.
struct Buffer {
  const void* data;
  int64_t bytes;
  const char* name;
  bool output;
  bool tensor;  // a whole tensor (x, y, dy, dx) rather than per-channel values
};

// Validates the arguments of one call, stopping at the first failure.
class Validator {
 public:
  // `element` names the tensors' element type, of `element_bytes` bytes.
  explicit Validator(const char* function, const char* element = "float",
                     int64_t element_bytes = sizeof(float))
      : function_(function), element_(element), element_bytes_(element_bytes) {}

  bool ok() const { return status_ == bnorm_success; }
  bnorm_status status() const { return status_; }
  int64_t elements() const { return elements_; }
  int64_t count() const { return count_; }
  int64_t c() const { return c_; }

  // Checks the shape: present, non-negative, known layout, byte size within int64.
  Validator& Shape(const bnorm_shape* s) {
    if (!ok()) return *this;
    if (s == nullptr) return Fail(bnorm_invalid_argument, "shape: must not be NULL");
    if (s->n < 0) return Fail(bnorm_invalid_argument, "shape->n: must be >= 0 (got %lld)", L(s->n));
    if (s->c < 0) return Fail(bnorm_invalid_argument, "shape->c: must be >= 0 (got %lld)", L(s->c));
    if (s->spatial < 0) {
      return Fail(bnorm_invalid_argument, "shape->spatial: must be >= 0 (got %lld)", L(s->spatial));
    }
    // Read the layout as an int: a C caller may store any value in the enum field.
    int layout;
    static_assert(sizeof(layout) == sizeof(s->layout), "bnorm_layout is int-sized");
    std::memcpy(&layout, &s->layout, sizeof(layout));
    if (layout != bnorm_nchw && layout != bnorm_nhwc) {
      return Fail(bnorm_invalid_argument,
                  "shape->layout: must be bnorm_nchw (0) or bnorm_nhwc (1) (got %d)", layout);
    }
    int64_t count = 0, elements = 0, bytes = 0, channel_bytes = 0;
    if (__builtin_mul_overflow(s->c, static_cast<int64_t>(sizeof(float)), &channel_bytes)) {
      return Fail(bnorm_invalid_argument,
                  "shape->c: c*sizeof(float) overflows int64 (got c=%lld)", L(s->c));
    }
    if (__builtin_mul_overflow(s->n, s->spatial, &count) ||
        __builtin_mul_overflow(count, s->c, &elements) ||
        __builtin_mul_overflow(elements, element_bytes_, &bytes)) {
      return Fail(bnorm_invalid_argument,
                  "shape: n*c*spatial*sizeof(%s) overflows int64 (n=%lld, c=%lld, spatial=%lld)",
                  element_, L(s->n), L(s->c), L(s->spatial));
    }
    count_ = count;
    elements_ = elements;
    c_ = s->c;
    active_ = elements > 0;
    return *this;
  }

  // Checks the channel count of fold.
  Validator& Channels(int64_t c) {
    if (!ok()) return *this;
    if (c < 0) return Fail(bnorm_invalid_argument, "c: must be >= 0 (got %lld)", L(c));
    if (c > INT64_MAX / static_cast<int64_t>(sizeof(float))) {
      return Fail(bnorm_invalid_argument, "c: c*sizeof(float) overflows int64 (got %lld)", L(c));
    }
    c_ = c;
    active_ = c > 0;
    return *this;
  }

  // Registers a tensor buffer; `required` ones must not be NULL unless the call has
  // nothing to do (an empty tensor: then no buffer is touched).
  Validator& Tensor(const void* p, const char* name, bool output, bool required = true) {
    return Add(p, elements_ * element_bytes_, name, output, true, required);
  }
  // Registers a per-channel buffer (float32 values).
  Validator& PerChannel(const void* p, const char* name, bool output, bool required = true) {
    return Add(p, c_ * static_cast<int64_t>(sizeof(float)), name, output, false, required);
  }

  Validator& BothOrNeither(const void* a, const void* b, const char* a_name, const char* b_name) {
    if (!ok() || (a == nullptr) == (b == nullptr)) return *this;
    return Fail(bnorm_invalid_argument, "%s, %s: give both or neither (%s is NULL)", a_name,
                b_name, a == nullptr ? a_name : b_name);
  }

  Validator& Eps(float eps) {
    if (!ok() || (std::isfinite(eps) && eps > 0)) return *this;
    return Fail(bnorm_invalid_argument, "eps: must be finite and > 0 (got %g)", eps);
  }

  Validator& Momentum(float momentum) {
    if (!ok() || (std::isfinite(momentum) && momentum >= 0 && momentum <= 1)) return *this;
    return Fail(bnorm_invalid_argument, "momentum: must be finite and in [0, 1] (got %g)",
                momentum);
  }

  Validator& Flags(unsigned flags) {
    if (!ok() || (flags & ~kKnownFlags) == 0) return *this;
    return Fail(bnorm_invalid_argument,
                "flags: unknown bits 0x%x (known: BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED | "
                "BNORM_SERIAL)",
                flags & ~kKnownFlags);
  }

  // Checks a channel slice [begin, end) against the shape; whole calls pass the shape's
  // own range. The buffers stay those of the whole tensor.
  Validator& Slice(int64_t begin, int64_t end) {
    if (!ok()) return *this;
    if (begin < 0 || begin > end || end > c_) {
      return Fail(bnorm_invalid_argument,
                  "c_begin, c_end: need 0 <= c_begin <= c_end <= shape->c (got %lld, %lld, c=%lld)",
                  L(begin), L(end), L(c_));
    }
    if (begin == end) active_ = false;  // nothing to do
    return *this;
  }

  bool active() const { return active_; }

  // Training needs two values per channel for the unbiased variance.
  Validator& TrainingCount() {
    if (!ok() || c_ == 0 || count_ >= 2) return *this;
    return Fail(bnorm_invalid_argument,
                "shape: training needs n*spatial >= 2 values per channel (got %lld)", L(count_));
  }

  // Checks that no output overlaps another buffer, except an output tensor that equals
  // an input tensor exactly (in place), or, with `exact_per_channel`, a per-channel
  // output that equals a per-channel input exactly.
  Validator& NoOverlap(bool exact_per_channel = false) {
    for (int i = 0; ok() && i < num_buffers_; ++i) {
      const Buffer& out = buffers_[i];
      if (!out.output) continue;
      for (int j = 0; ok() && j < num_buffers_; ++j) {
        const Buffer& other = buffers_[j];
        if (i == j || (other.output && j < i) || !Overlaps(out, other)) continue;
        const bool exact = out.data == other.data && out.bytes == other.bytes && !other.output &&
                           out.tensor == other.tensor && (out.tensor || exact_per_channel);
        if (exact) continue;
        Fail(bnorm_invalid_argument, "%s: overlaps %s (%s)", out.name, other.name,
             out.tensor && other.tensor && !other.output
                 ? "an output tensor must equal an input tensor exactly or not overlap it"
                 : "outputs must not overlap other buffers");
      }
    }
    return *this;
  }

  // Registers a per-channel buffer of `value_bytes` bytes per channel (float64 sums,
  // bnorm_partial_stats) for the overlap rules. `required`: must not be NULL (the
  // caller says when: these buffers are written even for tensors without values).
  Validator& PerChannelOf(const void* p, int64_t value_bytes, const char* name, bool output,
                          bool required) {
    if (!ok()) return *this;
    int64_t bytes = 0;
    if (__builtin_mul_overflow(c_, value_bytes, &bytes)) {
      return Fail(bnorm_invalid_argument, "%s: c*%lld bytes overflows int64 (got c=%lld)", name,
                  L(value_bytes), L(c_));
    }
    if (p == nullptr && required) {
      return Fail(bnorm_invalid_argument, "%s: must not be NULL (%lld values)", name, L(c_));
    }
    buffers_[num_buffers_++] = Buffer{p, bytes, name, output, false};
    return *this;
  }

  // Checks that every stats[ch].count is finite and >= min_count (stats may be NULL:
  // nothing to check). `why` says what the minimum is for.
  Validator& StatsCounts(const bnorm_partial_stats* stats, const char* name, double min_count,
                         const char* why) {
    for (int64_t ch = 0; ok() && stats != nullptr && ch < c_; ++ch) {
      const double count = stats[ch].count;
      if (std::isfinite(count) && count >= min_count) continue;
      Fail(bnorm_invalid_argument, "%s[%lld].count: must be finite and >= %g%s (got %g)", name,
           L(ch), min_count, why, count);
    }
    return *this;
  }

  // Checks the global count of values per channel of a synchronized backward: at least
  // 1 and at least the local count, when there are channels.
  Validator& GlobalCount(int64_t global_count) {
    if (!ok() || c_ == 0 || (global_count >= 1 && global_count >= count_)) return *this;
    return Fail(bnorm_invalid_argument,
                "global_count: must be >= 1 and >= the local n*spatial = %lld (got %lld)",
                L(count_), L(global_count));
  }

  // Records a failure with a message prefixed by the function name.
  Validator& Fail(bnorm_status status, const char* format, ...)
      __attribute__((format(printf, 3, 4))) {
    char message[400];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof(message), format, args);
    va_end(args);
    status_ = SetError(status, "%s: %s", function_, message);
    return *this;
  }

 private:
  static long long L(int64_t v) { return static_cast<long long>(v); }

  static bool Overlaps(const Buffer& a, const Buffer& b) {
    if (a.data == nullptr || b.data == nullptr || a.bytes == 0 || b.bytes == 0) return false;
    const uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
    return a0 < b0 + static_cast<uintptr_t>(b.bytes) && b0 < a0 + static_cast<uintptr_t>(a.bytes);
  }

  Validator& Add(const void* p, int64_t bytes, const char* name, bool output, bool tensor,
                 bool required) {
    if (!ok()) return *this;
    if (p == nullptr && required && active_) {
      return Fail(bnorm_invalid_argument, "%s: must not be NULL (%lld values)", name,
                  L(tensor ? elements_ : c_));
    }
    buffers_[num_buffers_++] = Buffer{p, bytes, name, output, tensor};
    return *this;
  }

  const char* function_;
  const char* element_;
  int64_t element_bytes_;
  bnorm_status status_ = bnorm_success;
  int64_t count_ = 0, elements_ = 0, c_ = 0;
  bool active_ = false;  // the call will touch buffers (not empty)
  Buffer buffers_[12];
  int num_buffers_ = 0;
};

// Runs an operation, turning an escaping exception into a status.
template <class Op>
bnorm_status Run(const char* function, Op op) {
  try {
    op();
    return bnorm_success;
  } catch (const std::bad_alloc&) {
    return SetError(bnorm_out_of_memory, "%s: out of memory for scratch buffers", function);
  } catch (...) {
    return SetError(bnorm_internal_error, "%s: internal error", function);
  }
}

}  // namespace

bnorm_status SetError(bnorm_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(g_last_error, sizeof(g_last_error), format, args);
  va_end(args);
  return status;
}

}  // namespace detail
}  // namespace bnorm

using bnorm::detail::Run;
using bnorm::detail::Validator;

extern "C" {

const char* bnorm_version(void) { return BNORM_PROJECT_VERSION; }

const char* bnorm_status_string(bnorm_status s) {
  switch (s) {
    case bnorm_success: return "success";
    case bnorm_invalid_argument: return "invalid argument";
    case bnorm_unsupported: return "unsupported";
    case bnorm_out_of_memory: return "out of memory";
    case bnorm_internal_error: return "internal error";
  }
  return "unknown status";
}

const char* bnorm_last_error(void) { return bnorm::detail::g_last_error; }

}  // extern "C"

// One implementation per operation, for the whole tensor and for channel slices:
// `whole` calls take the range [0, c) from the shape.
namespace {

using bnorm::detail::Channels;

// Returns the range of a whole call (0 when the shape is invalid: Validator fails first).
int64_t AllChannels(const bnorm_shape* s) { return s != nullptr && s->c > 0 ? s->c : 0; }

// The name of a tensor element type in messages.
template <typename T>
const char* ElementName();
template <>
const char* ElementName<float>() { return "float"; }
template <>
const char* ElementName<bnorm_bf16>() { return "bnorm_bf16"; }
template <>
const char* ElementName<bnorm_f16>() { return "bnorm_f16"; }

template <typename T>
bnorm_status Moments(const char* fn, const bnorm_shape* s, int64_t cb, int64_t ce,
                     const T* x, float* mean, float* var, unsigned flags) {
  Validator v(fn, ElementName<T>(), sizeof(T));
  v.Shape(s).Slice(cb, ce).Tensor(x, "x", false).PerChannel(mean, "mean", true)
      .PerChannel(var, "var", true).Flags(flags).NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] { bnorm::detail::MomentsOp(*s, Channels{cb, ce}, x, mean, var, flags); });
}

template <typename T>
bnorm_status ForwardTraining(const char* fn, const bnorm_shape* s, int64_t cb, int64_t ce,
                             const T* x, T* y, const float* gamma, const float* beta,
                             float eps, float momentum, float* running_mean, float* running_var,
                             float* saved_mean, float* saved_invstd, unsigned flags) {
  Validator v(fn, ElementName<T>(), sizeof(T));
  v.Shape(s)
      .Slice(cb, ce)
      .Tensor(x, "x", false)
      .Tensor(y, "y", true)
      .PerChannel(gamma, "gamma", false, false)
      .PerChannel(beta, "beta", false, false)
      .BothOrNeither(running_mean, running_var, "running_mean", "running_var")
      .PerChannel(running_mean, "running_mean", true, false)
      .PerChannel(running_var, "running_var", true, false)
      .PerChannel(saved_mean, "saved_mean", true, false)
      .PerChannel(saved_invstd, "saved_invstd", true, false)
      .Eps(eps)
      .Momentum(momentum)
      .Flags(flags)
      .TrainingCount()
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::ForwardTrainingOp(*s, Channels{cb, ce}, x, y, gamma, beta, eps, momentum,
                                     running_mean, running_var, saved_mean, saved_invstd, flags);
  });
}

template <typename T>
bnorm_status ForwardInference(const char* fn, const bnorm_shape* s, int64_t cb, int64_t ce,
                              const T* x, T* y, const float* gamma, const float* beta,
                              const float* mean, const float* var, float eps, unsigned flags) {
  Validator v(fn, ElementName<T>(), sizeof(T));
  v.Shape(s)
      .Slice(cb, ce)
      .Tensor(x, "x", false)
      .Tensor(y, "y", true)
      .PerChannel(gamma, "gamma", false, false)
      .PerChannel(beta, "beta", false, false)
      .PerChannel(mean, "mean", false)
      .PerChannel(var, "var", false)
      .Eps(eps)
      .Flags(flags)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::ForwardInferenceOp(*s, Channels{cb, ce}, x, y, gamma, beta, mean, var, eps,
                                      flags);
  });
}

template <typename T>
bnorm_status Affine(const char* fn, const bnorm_shape* s, int64_t cb, int64_t ce, const T* x,
                    T* y, const float* scale, const float* shift, unsigned flags) {
  Validator v(fn, ElementName<T>(), sizeof(T));
  v.Shape(s)
      .Slice(cb, ce)
      .Tensor(x, "x", false)
      .Tensor(y, "y", true)
      .PerChannel(scale, "scale", false)
      .PerChannel(shift, "shift", false)
      .Flags(flags)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::AffineOp(*s, Channels{cb, ce}, x, y, scale, shift, flags);
  });
}

template <typename T>
bnorm_status Backward(const char* fn, const bnorm_shape* s, int64_t cb, int64_t ce,
                      const T* x, const T* dy, const float* saved_mean,
                      const float* saved_invstd, const float* gamma, const T* y, T* dx,
                      float* dgamma, float* dbeta, unsigned flags) {
  Validator v(fn, ElementName<T>(), sizeof(T));
  v.Flags(flags)
      .Shape(s)
      .Slice(cb, ce)
      .Tensor(x, "x", false)
      .Tensor(dy, "dy", false)
      .PerChannel(saved_mean, "saved_mean", false)
      .PerChannel(saved_invstd, "saved_invstd", false)
      .PerChannel(gamma, "gamma", false, false)
      .Tensor(y, "y", false, (flags & BNORM_FUSE_RELU) != 0)
      .Tensor(dx, "dx", true, false)
      .PerChannel(dgamma, "dgamma", true, false)
      .PerChannel(dbeta, "dbeta", true, false)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::BackwardOp(*s, Channels{cb, ce}, x, dy, saved_mean, saved_invstd, gamma, y,
                              dx, dgamma, dbeta, flags);
  });
}

}  // namespace

extern "C" {

bnorm_status bnorm_moments_f32(const bnorm_shape* s, const float* x, float* mean, float* var) {
  return Moments("bnorm_moments_f32", s, 0, AllChannels(s), x, mean, var, 0);
}

bnorm_status bnorm_moments_slice_f32(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                     const float* x, float* mean, float* var, unsigned flags) {
  return Moments("bnorm_moments_slice_f32", s, c_begin, c_end, x, mean, var, flags);
}

bnorm_status bnorm_forward_training_f32(const bnorm_shape* s, const float* x, float* y,
                                        const float* gamma, const float* beta, float eps,
                                        float momentum, float* running_mean, float* running_var,
                                        float* saved_mean, float* saved_invstd, unsigned flags) {
  return ForwardTraining("bnorm_forward_training_f32", s, 0, AllChannels(s), x, y, gamma, beta,
                         eps, momentum, running_mean, running_var, saved_mean, saved_invstd,
                         flags);
}

bnorm_status bnorm_forward_training_slice_f32(const bnorm_shape* s, int64_t c_begin,
                                              int64_t c_end, const float* x, float* y,
                                              const float* gamma, const float* beta, float eps,
                                              float momentum, float* running_mean,
                                              float* running_var, float* saved_mean,
                                              float* saved_invstd, unsigned flags) {
  return ForwardTraining("bnorm_forward_training_slice_f32", s, c_begin, c_end, x, y, gamma,
                         beta, eps, momentum, running_mean, running_var, saved_mean,
                         saved_invstd, flags);
}

bnorm_status bnorm_forward_inference_f32(const bnorm_shape* s, const float* x, float* y,
                                         const float* gamma, const float* beta,
                                         const float* mean, const float* var, float eps,
                                         unsigned flags) {
  return ForwardInference("bnorm_forward_inference_f32", s, 0, AllChannels(s), x, y, gamma,
                          beta, mean, var, eps, flags);
}

bnorm_status bnorm_forward_inference_slice_f32(const bnorm_shape* s, int64_t c_begin,
                                               int64_t c_end, const float* x, float* y,
                                               const float* gamma, const float* beta,
                                               const float* mean, const float* var, float eps,
                                               unsigned flags) {
  return ForwardInference("bnorm_forward_inference_slice_f32", s, c_begin, c_end, x, y, gamma,
                          beta, mean, var, eps, flags);
}

bnorm_status bnorm_fold_f32(int64_t c, const float* gamma, const float* beta, const float* mean,
                            const float* var, float eps, float* scale, float* shift) {
  const char* fn = "bnorm_fold_f32";
  Validator v(fn);
  v.Channels(c)
      .PerChannel(gamma, "gamma", false, false)
      .PerChannel(beta, "beta", false, false)
      .PerChannel(mean, "mean", false)
      .PerChannel(var, "var", false)
      .PerChannel(scale, "scale", true)
      .PerChannel(shift, "shift", true)
      .Eps(eps)
      .NoOverlap(/*exact_per_channel=*/true);
  if (!v.ok()) return v.status();
  if (c == 0) return bnorm_success;
  return Run(fn, [&] { bnorm::detail::FoldOp(c, gamma, beta, mean, var, eps, scale, shift); });
}

bnorm_status bnorm_affine_f32(const bnorm_shape* s, const float* x, float* y, const float* scale,
                              const float* shift, unsigned flags) {
  return Affine("bnorm_affine_f32", s, 0, AllChannels(s), x, y, scale, shift, flags);
}

bnorm_status bnorm_affine_slice_f32(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                    const float* x, float* y, const float* scale,
                                    const float* shift, unsigned flags) {
  return Affine("bnorm_affine_slice_f32", s, c_begin, c_end, x, y, scale, shift, flags);
}

bnorm_status bnorm_backward_f32(const bnorm_shape* s, const float* x, const float* dy,
                                const float* saved_mean, const float* saved_invstd,
                                const float* gamma, const float* y, float* dx, float* dgamma,
                                float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_f32", s, 0, AllChannels(s), x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

bnorm_status bnorm_backward_slice_f32(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                      const float* x, const float* dy, const float* saved_mean,
                                      const float* saved_invstd, const float* gamma, const float* y,
                                      float* dx, float* dgamma, float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_slice_f32", s, c_begin, c_end, x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

// Half-precision tensors: the same operations, widened to float32 in the kernels.

bnorm_status bnorm_moments_bf16(const bnorm_shape* s, const bnorm_bf16* x, float* mean,
                                float* var) {
  return Moments("bnorm_moments_bf16", s, 0, AllChannels(s), x, mean, var, 0);
}

bnorm_status bnorm_moments_slice_bf16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                      const bnorm_bf16* x, float* mean, float* var,
                                      unsigned flags) {
  return Moments("bnorm_moments_slice_bf16", s, c_begin, c_end, x, mean, var, flags);
}

bnorm_status bnorm_forward_training_bf16(const bnorm_shape* s, const bnorm_bf16* x, bnorm_bf16* y,
                                         const float* gamma, const float* beta, float eps,
                                         float momentum, float* running_mean, float* running_var,
                                         float* saved_mean, float* saved_invstd, unsigned flags) {
  return ForwardTraining("bnorm_forward_training_bf16", s, 0, AllChannels(s), x, y, gamma, beta,
                         eps, momentum, running_mean, running_var, saved_mean, saved_invstd, flags);
}

bnorm_status bnorm_forward_training_slice_bf16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                               const bnorm_bf16* x, bnorm_bf16* y,
                                               const float* gamma, const float* beta, float eps,
                                               float momentum, float* running_mean,
                                               float* running_var, float* saved_mean,
                                               float* saved_invstd, unsigned flags) {
  return ForwardTraining("bnorm_forward_training_slice_bf16", s, c_begin, c_end, x, y, gamma, beta,
                         eps, momentum, running_mean, running_var, saved_mean, saved_invstd, flags);
}

bnorm_status bnorm_forward_inference_bf16(const bnorm_shape* s, const bnorm_bf16* x, bnorm_bf16* y,
                                          const float* gamma, const float* beta, const float* mean,
                                          const float* var, float eps, unsigned flags) {
  return ForwardInference("bnorm_forward_inference_bf16", s, 0, AllChannels(s), x, y, gamma, beta,
                          mean, var, eps, flags);
}

bnorm_status bnorm_forward_inference_slice_bf16(const bnorm_shape* s, int64_t c_begin,
                                                int64_t c_end, const bnorm_bf16* x, bnorm_bf16* y,
                                                const float* gamma, const float* beta,
                                                const float* mean, const float* var, float eps,
                                                unsigned flags) {
  return ForwardInference("bnorm_forward_inference_slice_bf16", s, c_begin, c_end, x, y, gamma,
                          beta, mean, var, eps, flags);
}

bnorm_status bnorm_affine_bf16(const bnorm_shape* s, const bnorm_bf16* x, bnorm_bf16* y,
                               const float* scale, const float* shift, unsigned flags) {
  return Affine("bnorm_affine_bf16", s, 0, AllChannels(s), x, y, scale, shift, flags);
}

bnorm_status bnorm_affine_slice_bf16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                     const bnorm_bf16* x, bnorm_bf16* y, const float* scale,
                                     const float* shift, unsigned flags) {
  return Affine("bnorm_affine_slice_bf16", s, c_begin, c_end, x, y, scale, shift, flags);
}

bnorm_status bnorm_backward_bf16(const bnorm_shape* s, const bnorm_bf16* x, const bnorm_bf16* dy,
                                 const float* saved_mean, const float* saved_invstd,
                                 const float* gamma, const bnorm_bf16* y, bnorm_bf16* dx,
                                 float* dgamma, float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_bf16", s, 0, AllChannels(s), x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

bnorm_status bnorm_backward_slice_bf16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                       const bnorm_bf16* x, const bnorm_bf16* dy,
                                       const float* saved_mean, const float* saved_invstd,
                                       const float* gamma, const bnorm_bf16* y, bnorm_bf16* dx,
                                       float* dgamma, float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_slice_bf16", s, c_begin, c_end, x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

bnorm_status bnorm_moments_f16(const bnorm_shape* s, const bnorm_f16* x, float* mean, float* var) {
  return Moments("bnorm_moments_f16", s, 0, AllChannels(s), x, mean, var, 0);
}

bnorm_status bnorm_moments_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                     const bnorm_f16* x, float* mean, float* var, unsigned flags) {
  return Moments("bnorm_moments_slice_f16", s, c_begin, c_end, x, mean, var, flags);
}

bnorm_status bnorm_forward_training_f16(const bnorm_shape* s, const bnorm_f16* x, bnorm_f16* y,
                                        const float* gamma, const float* beta, float eps,
                                        float momentum, float* running_mean, float* running_var,
                                        float* saved_mean, float* saved_invstd, unsigned flags) {
  return ForwardTraining("bnorm_forward_training_f16", s, 0, AllChannels(s), x, y, gamma, beta, eps,
                         momentum, running_mean, running_var, saved_mean, saved_invstd, flags);
}

bnorm_status bnorm_forward_training_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                              const bnorm_f16* x, bnorm_f16* y, const float* gamma,
                                              const float* beta, float eps, float momentum,
                                              float* running_mean, float* running_var,
                                              float* saved_mean, float* saved_invstd,
                                              unsigned flags) {
  return ForwardTraining("bnorm_forward_training_slice_f16", s, c_begin, c_end, x, y, gamma, beta,
                         eps, momentum, running_mean, running_var, saved_mean, saved_invstd, flags);
}

bnorm_status bnorm_forward_inference_f16(const bnorm_shape* s, const bnorm_f16* x, bnorm_f16* y,
                                         const float* gamma, const float* beta, const float* mean,
                                         const float* var, float eps, unsigned flags) {
  return ForwardInference("bnorm_forward_inference_f16", s, 0, AllChannels(s), x, y, gamma, beta,
                          mean, var, eps, flags);
}

bnorm_status bnorm_forward_inference_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                               const bnorm_f16* x, bnorm_f16* y, const float* gamma,
                                               const float* beta, const float* mean,
                                               const float* var, float eps, unsigned flags) {
  return ForwardInference("bnorm_forward_inference_slice_f16", s, c_begin, c_end, x, y, gamma, beta,
                          mean, var, eps, flags);
}

bnorm_status bnorm_affine_f16(const bnorm_shape* s, const bnorm_f16* x, bnorm_f16* y,
                              const float* scale, const float* shift, unsigned flags) {
  return Affine("bnorm_affine_f16", s, 0, AllChannels(s), x, y, scale, shift, flags);
}

bnorm_status bnorm_affine_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                    const bnorm_f16* x, bnorm_f16* y, const float* scale,
                                    const float* shift, unsigned flags) {
  return Affine("bnorm_affine_slice_f16", s, c_begin, c_end, x, y, scale, shift, flags);
}

bnorm_status bnorm_backward_f16(const bnorm_shape* s, const bnorm_f16* x, const bnorm_f16* dy,
                                const float* saved_mean, const float* saved_invstd,
                                const float* gamma, const bnorm_f16* y, bnorm_f16* dx,
                                float* dgamma, float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_f16", s, 0, AllChannels(s), x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

bnorm_status bnorm_backward_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                      const bnorm_f16* x, const bnorm_f16* dy,
                                      const float* saved_mean, const float* saved_invstd,
                                      const float* gamma, const bnorm_f16* y, bnorm_f16* dx,
                                      float* dgamma, float* dbeta, unsigned flags) {
  return Backward("bnorm_backward_slice_f16", s, c_begin, c_end, x, dy, saved_mean, saved_invstd,
                  gamma, y, dx, dgamma, dbeta, flags);
}

}  // extern "C"

// Synchronized batch norm: the local steps of training and backward (lib/ops/distributed.cc).
// Per-channel outputs of the reductions are written even when the local tensor has no
// values (a process without data still takes part in the merge).
extern "C" {

bnorm_status bnorm_partial_stats_f32(const bnorm_shape* s, const float* x,
                                     bnorm_partial_stats* stats, unsigned flags) {
  const char* fn = "bnorm_partial_stats_f32";
  Validator v(fn);
  v.Flags(flags).Shape(s).Tensor(x, "x", false);
  v.PerChannelOf(stats, sizeof(bnorm_partial_stats), "stats", true, v.c() > 0).NoOverlap();
  if (!v.ok()) return v.status();
  if (v.c() == 0) return bnorm_success;
  return Run(fn, [&] { bnorm::detail::PartialStatsOp(*s, x, stats, flags); });
}

bnorm_status bnorm_merge_partial_stats(int64_t c, const bnorm_partial_stats* a,
                                       const bnorm_partial_stats* b, bnorm_partial_stats* out) {
  const char* fn = "bnorm_merge_partial_stats";
  Validator v(fn);
  const int64_t size = sizeof(bnorm_partial_stats);
  v.Channels(c)
      .PerChannelOf(a, size, "a", false, c > 0)
      .PerChannelOf(b, size, "b", false, c > 0)
      .PerChannelOf(out, size, "out", true, c > 0)
      .NoOverlap(/*exact_per_channel=*/true)
      .StatsCounts(a, "a", 0, "")
      .StatsCounts(b, "b", 0, "");
  if (!v.ok()) return v.status();
  if (c == 0) return bnorm_success;
  return Run(fn, [&] { bnorm::detail::MergePartialStatsOp(c, a, b, out); });
}

bnorm_status bnorm_finish_stats_f32(int64_t c, const bnorm_partial_stats* global, float eps,
                                    float momentum, float* running_mean, float* running_var,
                                    float* mean, float* invstd, unsigned flags) {
  const char* fn = "bnorm_finish_stats_f32";
  Validator v(fn);
  v.Channels(c)
      .PerChannelOf(global, sizeof(bnorm_partial_stats), "global", false, c > 0)
      .BothOrNeither(running_mean, running_var, "running_mean", "running_var")
      .PerChannel(running_mean, "running_mean", true, false)
      .PerChannel(running_var, "running_var", true, false)
      .PerChannel(mean, "mean", true, false)
      .PerChannel(invstd, "invstd", true, false)
      .Eps(eps)
      .Momentum(momentum)
      .Flags(flags)
      .NoOverlap()
      .StatsCounts(global, "global", 2, " (training needs 2 values per channel)");
  if (!v.ok()) return v.status();
  if (c == 0) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::FinishStatsOp(c, global, eps, momentum, running_mean, running_var, mean,
                                 invstd, flags);
  });
}

bnorm_status bnorm_normalize_f32(const bnorm_shape* s, const float* x, float* y,
                                 const float* mean, const float* invstd, const float* gamma,
                                 const float* beta, unsigned flags) {
  const char* fn = "bnorm_normalize_f32";
  Validator v(fn);
  v.Flags(flags)
      .Shape(s)
      .Tensor(x, "x", false)
      .Tensor(y, "y", true)
      .PerChannel(mean, "mean", false)
      .PerChannel(invstd, "invstd", false)
      .PerChannel(gamma, "gamma", false, false)
      .PerChannel(beta, "beta", false, false)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (!v.active()) return bnorm_success;
  return Run(fn, [&] { bnorm::detail::NormalizeOp(*s, x, y, mean, invstd, gamma, beta, flags); });
}

bnorm_status bnorm_backward_sums_f32(const bnorm_shape* s, const float* x, const float* dy,
                                     const float* mean, const float* invstd, const float* y,
                                     double* sum_dy, double* sum_dy_xhat, unsigned flags) {
  const char* fn = "bnorm_backward_sums_f32";
  Validator v(fn);
  v.Flags(flags)
      .Shape(s)
      .Tensor(x, "x", false)
      .Tensor(dy, "dy", false)
      .PerChannel(mean, "mean", false)
      .PerChannel(invstd, "invstd", false)
      .Tensor(y, "y", false, (flags & BNORM_FUSE_RELU) != 0);
  v.PerChannelOf(sum_dy, sizeof(double), "sum_dy", true, v.c() > 0)
      .PerChannelOf(sum_dy_xhat, sizeof(double), "sum_dy_xhat", true, v.c() > 0)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (v.c() == 0) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::BackwardSumsOp(*s, x, dy, mean, invstd, y, sum_dy, sum_dy_xhat, flags);
  });
}

bnorm_status bnorm_backward_dx_f32(const bnorm_shape* s, const float* x, const float* dy,
                                   const float* mean, const float* invstd, const float* gamma,
                                   const float* y, const double* sum_dy,
                                   const double* sum_dy_xhat, int64_t global_count, float* dx,
                                   float* dgamma, float* dbeta, unsigned flags) {
  const char* fn = "bnorm_backward_dx_f32";
  Validator v(fn);
  v.Flags(flags)
      .Shape(s)
      .Tensor(x, "x", false)
      .Tensor(dy, "dy", false)
      .PerChannel(mean, "mean", false)
      .PerChannel(invstd, "invstd", false)
      .PerChannel(gamma, "gamma", false, false)
      .Tensor(y, "y", false, (flags & BNORM_FUSE_RELU) != 0);
  v.PerChannelOf(sum_dy, sizeof(double), "sum_dy", false, v.c() > 0)
      .PerChannelOf(sum_dy_xhat, sizeof(double), "sum_dy_xhat", false, v.c() > 0)
      .Tensor(dx, "dx", true, false)
      .PerChannel(dgamma, "dgamma", true, false)
      .PerChannel(dbeta, "dbeta", true, false)
      .GlobalCount(global_count)
      .NoOverlap();
  if (!v.ok()) return v.status();
  if (v.c() == 0 || (!dx && !dgamma && !dbeta)) return bnorm_success;
  return Run(fn, [&] {
    bnorm::detail::BackwardDxOp(*s, x, dy, mean, invstd, gamma, y, sum_dy, sum_dy_xhat,
                                global_count, dx, dgamma, dbeta, flags);
  });
}

}  // extern "C"
