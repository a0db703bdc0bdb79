/* bnorm: batch-normalization kernels for CPUs. The stable C ABI.
 * Every entry point validates all arguments before touching memory; on failure it
 * returns a status, leaves every output unchanged and records a one-line message
 * (bnorm_last_error). Nothing aborts and nothing throws across this interface. */
#ifndef BNORM_BNORM_H_
#define BNORM_BNORM_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BNORM_API
#else
#define BNORM_API __attribute__((visibility("default")))
#endif

/* The version of these headers; bnorm_version() gives the library's at run time. */
#define BNORM_VERSION_MAJOR 0
#define BNORM_VERSION_MINOR 1
#define BNORM_VERSION_PATCH 0
#define BNORM_VERSION_STRING "0.1.0"
#define BNORM_VERSION \
  (BNORM_VERSION_MAJOR * 10000 + BNORM_VERSION_MINOR * 100 + BNORM_VERSION_PATCH)

typedef enum bnorm_status {
  bnorm_success = 0,
  bnorm_invalid_argument = 1,
  bnorm_unsupported = 2,
  bnorm_out_of_memory = 3,
  bnorm_internal_error = 4
} bnorm_status;

typedef enum bnorm_layout { bnorm_nchw = 0, bnorm_nhwc = 1 } bnorm_layout;

/* Half-precision tensor elements, as their IEEE bits: bfloat16 (8 exponent bits, 7
 * mantissa bits: the upper half of a float32) and float16 (IEEE binary16: 5 exponent
 * bits, 10 mantissa bits). The _bf16 and _f16 entry points take x, y, dy and dx in
 * these types; everything per channel (gamma, beta, mean, var, running and saved
 * statistics, parameter gradients) stays float32. */
typedef struct bnorm_bf16 {
  uint16_t bits;
} bnorm_bf16;
typedef struct bnorm_f16 {
  uint16_t bits;
} bnorm_f16;

/* n images of c channels of `spatial` elements (the product of the spatial
 * dimensions; 1 for fully connected). NCHW: element (i, ch, s) lives at
 * (i*c + ch)*spatial + s; NHWC: at (i*spatial + s)*c + ch. */
typedef struct bnorm_shape {
  int64_t n, c, spatial;
  bnorm_layout layout;
} bnorm_shape;

#define BNORM_FUSE_RELU 1u          /* y = max(y, 0); backward masks dy where y <= 0 */
#define BNORM_RUNNING_VAR_BIASED 2u /* running_var tracks M2/count, not M2/(count-1) */
#define BNORM_SERIAL 4u             /* run on the calling thread only */

/* Returns the library's version, "MAJOR.MINOR.PATCH". */
BNORM_API const char* bnorm_version(void);

/* Returns a static, human-readable name of `s` ("invalid argument", ...). */
BNORM_API const char* bnorm_status_string(bnorm_status s);
/* Returns this thread's last failure message ("" if none). Not cleared by success. */
BNORM_API const char* bnorm_last_error(void);

/* Targets use Highway's names: "AVX3", "AVX2", "SSE4", "SSSE3", "SCALAR", "NEON",
 * "SVE", "SVE2", "SVE_256", "SVE2_128". Lists are space-separated, best first. */
BNORM_API const char* bnorm_active_target(void);     /* the code dispatch runs now */
BNORM_API const char* bnorm_compiled_targets(void);  /* built into this library */
BNORM_API const char* bnorm_supported_targets(void); /* compiled and runnable here */
/* Selects the target for every later call in the process (a global setting).
 * NULL or "" selects the best supported one. Case-insensitive. An unknown name
 * is bnorm_invalid_argument; a known one this build or CPU lacks is
 * bnorm_unsupported. The environment variable BNORM_TARGET is read once, at the
 * first call into bnorm, with the same meaning. */
BNORM_API bnorm_status bnorm_set_target(const char* name);

/* Per-channel batch mean and biased variance (M2/count) of x. */
BNORM_API bnorm_status bnorm_moments_f32(const bnorm_shape* s, const float* x, float* mean,
                                         float* var);

/* Training forward: batch statistics, y = (x - mean) * invstd * gamma + beta
 * (+ ReLU), running statistics updated when given (both or neither), saved mean
 * and invstd written when given. y may equal x. count = n*spatial must be >= 2. */
BNORM_API bnorm_status bnorm_forward_training_f32(const bnorm_shape* s, const float* x, float* y,
                                                  const float* gamma, const float* beta,
                                                  float eps, float momentum, float* running_mean,
                                                  float* running_var, float* saved_mean,
                                                  float* saved_invstd, unsigned flags);

/* Inference forward with given statistics: y = (x - mean) / sqrt(var + eps) * gamma + beta. */
BNORM_API bnorm_status bnorm_forward_inference_f32(const bnorm_shape* s, const float* x, float* y,
                                                   const float* gamma, const float* beta,
                                                   const float* mean, const float* var, float eps,
                                                   unsigned flags);

/* Folds BN parameters into scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
 * scale and shift may alias the inputs exactly (in place). */
BNORM_API bnorm_status bnorm_fold_f32(int64_t c, const float* gamma, const float* beta,
                                      const float* mean, const float* var, float eps,
                                      float* scale, float* shift);

/* y = x * scale[ch] + shift[ch] (+ ReLU). y may equal x. */
BNORM_API bnorm_status bnorm_affine_f32(const bnorm_shape* s, const float* x, float* y,
                                        const float* scale, const float* shift, unsigned flags);

/* Backward of training forward: dbeta = sum(dy), dgamma = sum(dy * xhat),
 * dx = gamma * invstd * (dy - dbeta/count - xhat * dgamma/count), with
 * xhat = (x - saved_mean) * saved_invstd. dx, dgamma, dbeta may each be NULL (skipped).
 * With BNORM_FUSE_RELU, dy is masked where y <= 0 (y is then required).
 * dx may equal dy (or x). */
BNORM_API bnorm_status bnorm_backward_f32(const bnorm_shape* s, const float* x, const float* dy,
                                          const float* saved_mean, const float* saved_invstd,
                                          const float* gamma, const float* y, float* dx,
                                          float* dgamma, float* dbeta, unsigned flags);

/* Channel slices, for engines that split one call over their own threads: each is
 * the operation above restricted to channels [c_begin, c_end) of the tensor `s`
 * describes (0 <= c_begin <= c_end <= s->c). Pointers are to the whole tensor and to
 * whole per-channel arrays; only the slice's values and per-channel entries are
 * read or written, and they come out bit-identical to the whole call on the same
 * target. Slices of one tensor may run concurrently (disjoint channels); add
 * BNORM_SERIAL to keep each on its calling thread. Empty slices do nothing. */
BNORM_API bnorm_status bnorm_moments_slice_f32(const bnorm_shape* s, int64_t c_begin,
                                               int64_t c_end, const float* x, float* mean,
                                               float* var, unsigned flags);
BNORM_API bnorm_status bnorm_forward_training_slice_f32(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const float* x, float* y,
    const float* gamma, const float* beta, float eps, float momentum, float* running_mean,
    float* running_var, float* saved_mean, float* saved_invstd, unsigned flags);
BNORM_API bnorm_status bnorm_forward_inference_slice_f32(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const float* x, float* y,
    const float* gamma, const float* beta, const float* mean, const float* var, float eps,
    unsigned flags);
BNORM_API bnorm_status bnorm_affine_slice_f32(const bnorm_shape* s, int64_t c_begin,
                                              int64_t c_end, const float* x, float* y,
                                              const float* scale, const float* shift,
                                              unsigned flags);
BNORM_API bnorm_status bnorm_backward_slice_f32(const bnorm_shape* s, int64_t c_begin,
                                                int64_t c_end, const float* x, const float* dy,
                                                const float* saved_mean,
                                                const float* saved_invstd, const float* gamma,
                                                const float* y, float* dx, float* dgamma,
                                                float* dbeta, unsigned flags);

/* Half-precision tensors: every operation above with x, y, dy and dx in bfloat16
 * (_bf16) or float16 (_f16), same arguments, semantics and error rules; per-channel
 * arrays stay float32. Values are widened to float32 on load, statistics and every
 * intermediate are float32 or float64 as for _f32 (statistics as accurate as the
 * float32 path on the same values), and each output is rounded once to the element
 * type, to nearest with ties to even: NaN stays NaN, a value beyond the largest finite
 * one becomes Inf. */
BNORM_API bnorm_status bnorm_moments_bf16(const bnorm_shape* s, const bnorm_bf16* x, float* mean,
                                          float* var);
BNORM_API bnorm_status bnorm_forward_training_bf16(const bnorm_shape* s, const bnorm_bf16* x,
                                                   bnorm_bf16* y, const float* gamma,
                                                   const float* beta, float eps, float momentum,
                                                   float* running_mean, float* running_var,
                                                   float* saved_mean, float* saved_invstd,
                                                   unsigned flags);
BNORM_API bnorm_status bnorm_forward_inference_bf16(const bnorm_shape* s, const bnorm_bf16* x,
                                                    bnorm_bf16* y, const float* gamma,
                                                    const float* beta, const float* mean,
                                                    const float* var, float eps, unsigned flags);
BNORM_API bnorm_status bnorm_affine_bf16(const bnorm_shape* s, const bnorm_bf16* x, bnorm_bf16* y,
                                         const float* scale, const float* shift, unsigned flags);
BNORM_API bnorm_status bnorm_backward_bf16(const bnorm_shape* s, const bnorm_bf16* x,
                                           const bnorm_bf16* dy, const float* saved_mean,
                                           const float* saved_invstd, const float* gamma,
                                           const bnorm_bf16* y, bnorm_bf16* dx, float* dgamma,
                                           float* dbeta, unsigned flags);
BNORM_API bnorm_status bnorm_moments_slice_bf16(const bnorm_shape* s, int64_t c_begin,
                                                int64_t c_end, const bnorm_bf16* x, float* mean,
                                                float* var, unsigned flags);
BNORM_API bnorm_status bnorm_forward_training_slice_bf16(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const bnorm_bf16* x, bnorm_bf16* y,
    const float* gamma, const float* beta, float eps, float momentum, float* running_mean,
    float* running_var, float* saved_mean, float* saved_invstd, unsigned flags);
BNORM_API bnorm_status bnorm_forward_inference_slice_bf16(const bnorm_shape* s, int64_t c_begin,
                                                          int64_t c_end, const bnorm_bf16* x,
                                                          bnorm_bf16* y, const float* gamma,
                                                          const float* beta, const float* mean,
                                                          const float* var, float eps,
                                                          unsigned flags);
BNORM_API bnorm_status bnorm_affine_slice_bf16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                               const bnorm_bf16* x, bnorm_bf16* y,
                                               const float* scale, const float* shift,
                                               unsigned flags);
BNORM_API bnorm_status bnorm_backward_slice_bf16(const bnorm_shape* s, int64_t c_begin,
                                                 int64_t c_end, const bnorm_bf16* x,
                                                 const bnorm_bf16* dy, const float* saved_mean,
                                                 const float* saved_invstd, const float* gamma,
                                                 const bnorm_bf16* y, bnorm_bf16* dx, float* dgamma,
                                                 float* dbeta, unsigned flags);
BNORM_API bnorm_status bnorm_moments_f16(const bnorm_shape* s, const bnorm_f16* x, float* mean,
                                         float* var);
BNORM_API bnorm_status bnorm_forward_training_f16(const bnorm_shape* s, const bnorm_f16* x,
                                                  bnorm_f16* y, const float* gamma,
                                                  const float* beta, float eps, float momentum,
                                                  float* running_mean, float* running_var,
                                                  float* saved_mean, float* saved_invstd,
                                                  unsigned flags);
BNORM_API bnorm_status bnorm_forward_inference_f16(const bnorm_shape* s, const bnorm_f16* x,
                                                   bnorm_f16* y, const float* gamma,
                                                   const float* beta, const float* mean,
                                                   const float* var, float eps, unsigned flags);
BNORM_API bnorm_status bnorm_affine_f16(const bnorm_shape* s, const bnorm_f16* x, bnorm_f16* y,
                                        const float* scale, const float* shift, unsigned flags);
BNORM_API bnorm_status bnorm_backward_f16(const bnorm_shape* s, const bnorm_f16* x,
                                          const bnorm_f16* dy, const float* saved_mean,
                                          const float* saved_invstd, const float* gamma,
                                          const bnorm_f16* y, bnorm_f16* dx, float* dgamma,
                                          float* dbeta, unsigned flags);
BNORM_API bnorm_status bnorm_moments_slice_f16(const bnorm_shape* s, int64_t c_begin, int64_t c_end,
                                               const bnorm_f16* x, float* mean, float* var,
                                               unsigned flags);
BNORM_API bnorm_status bnorm_forward_training_slice_f16(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const bnorm_f16* x, bnorm_f16* y,
    const float* gamma, const float* beta, float eps, float momentum, float* running_mean,
    float* running_var, float* saved_mean, float* saved_invstd, unsigned flags);
BNORM_API bnorm_status bnorm_forward_inference_slice_f16(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const bnorm_f16* x, bnorm_f16* y,
    const float* gamma, const float* beta, const float* mean, const float* var, float eps,
    unsigned flags);
BNORM_API bnorm_status bnorm_affine_slice_f16(const bnorm_shape* s, int64_t c_begin,
                                              int64_t c_end, const bnorm_f16* x, bnorm_f16* y,
                                              const float* scale, const float* shift,
                                              unsigned flags);
BNORM_API bnorm_status bnorm_backward_slice_f16(
    const bnorm_shape* s, int64_t c_begin, int64_t c_end, const bnorm_f16* x, const bnorm_f16* dy,
    const float* saved_mean, const float* saved_invstd, const float* gamma, const bnorm_f16* y,
    bnorm_f16* dx, float* dgamma, float* dbeta, unsigned flags);

/* Synchronized batch norm (data-parallel training over several processes, e.g. MPI):
 * the steps of bnorm_forward_training_f32 and bnorm_backward_f32 with the exchange
 * between processes left to the caller. Each process holds a slice of the batch (any
 * number of images, or for NHWC any run of rows: a tensor {1, c, rows}); statistics
 * are exact merges of every slice's, not averages of averages.
 *
 *   forward:  bnorm_partial_stats_f32 (local) -> exchange, merge with
 *             bnorm_merge_partial_stats in a fixed order -> bnorm_finish_stats_f32
 *             (mean, invstd, running stats) -> bnorm_normalize_f32 (local)
 *   backward: bnorm_backward_sums_f32 (local) -> exchange, add in a fixed order ->
 *             bnorm_backward_dx_f32 (local dx; dgamma, dbeta)
 *
 * On one process with the whole batch, the sequence gives what the whole-batch calls
 * give: the mean, running_mean and (from the same saved statistics) dx, dgamma and dbeta
 * bit for bit; invstd and running_var within one float32 rounding (the variance is
 * M2/count), y within the rounding of its coefficient gamma * invstd. Split over processes, every result stays within the library's
 * tolerances of the float64 reference. include/bnorm/bnorm_mpi.hpp does the exchange
 * over MPI. flags: those of bnorm_forward_training_f32; a step ignores the bits it does
 * not use, so one value can be passed to every step. */

/* Partial statistics of one channel over a set of values: their count, mean and
 * M2 = sum((v - mean)^2), in float64 (exact merges; M2 of float32 data cannot
 * overflow). An empty set is {0, 0, 0}, the identity of the merge. The struct is three
 * contiguous doubles: for MPI, c of them are 3*c MPI_DOUBLE. */
typedef struct bnorm_partial_stats {
  double count, mean, m2;
} bnorm_partial_stats;

/* Writes the partial statistics of every channel of x to stats[0, c). Unlike the
 * other calls, a tensor with no values (n*spatial == 0, c > 0) writes {0, 0, 0} to
 * every channel: a process without data takes part in the merge. Uses BNORM_SERIAL. */
BNORM_API bnorm_status bnorm_partial_stats_f32(const bnorm_shape* s, const float* x,
                                               bnorm_partial_stats* stats, unsigned flags);

/* Merges, channel by channel, the statistics of two disjoint sets with Chan's formula:
 * out[ch] = a[ch] (+) b[ch], exact in float64 arithmetic for any split. The result
 * depends on the order (a first) only by rounding; merge in a fixed order (rank order)
 * for bit-identical results everywhere. out may equal a or b exactly (in place, as an
 * MPI user reduction: bnorm_merge_partial_stats(len, in, inout, inout) with a
 * non-commutative MPI_Op). Counts must be finite and >= 0; a non-finite mean (NaN or
 * Inf data) gives a NaN M2. */
BNORM_API bnorm_status bnorm_merge_partial_stats(int64_t c, const bnorm_partial_stats* a,
                                                 const bnorm_partial_stats* b,
                                                 bnorm_partial_stats* out);

/* Turns merged (global) statistics into what training needs, as
 * bnorm_forward_training_f32 does: mean[ch] = global mean, invstd[ch] =
 * 1/sqrt(M2/count + eps) (saved_mean / saved_invstd of the whole batch), and, when
 * given (both or neither), running = (1 - momentum) * running + momentum * batch with
 * the unbiased variance M2/(count - 1) (biased M2/count with BNORM_RUNNING_VAR_BIASED).
 * mean and invstd may each be NULL. Every global[ch].count must be finite and >= 2.
 * Uses BNORM_RUNNING_VAR_BIASED. */
BNORM_API bnorm_status bnorm_finish_stats_f32(int64_t c, const bnorm_partial_stats* global,
                                              float eps, float momentum, float* running_mean,
                                              float* running_var, float* mean, float* invstd,
                                              unsigned flags);

/* y = (x - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch] (+ ReLU) on the local slice,
 * with the global mean and invstd. gamma, beta may be NULL (1, 0). y may equal x.
 * Uses BNORM_FUSE_RELU, BNORM_SERIAL. */
BNORM_API bnorm_status bnorm_normalize_f32(const bnorm_shape* s, const float* x, float* y,
                                           const float* mean, const float* invstd,
                                           const float* gamma, const float* beta,
                                           unsigned flags);

/* Backward, local step: writes the local sums sum_dy[ch] = sum(dy') and
 * sum_dy_xhat[ch] = sum(dy' * (x - mean[ch]) * invstd[ch]) in float64, dy' = dy masked
 * where y <= 0 with BNORM_FUSE_RELU (y then required). mean and invstd are the global
 * ones. Add the sums of every process (in a fixed order) for the global sums. As
 * bnorm_partial_stats_f32, a tensor with no values writes zeros.
 * Uses BNORM_FUSE_RELU, BNORM_SERIAL. */
BNORM_API bnorm_status bnorm_backward_sums_f32(const bnorm_shape* s, const float* x,
                                               const float* dy, const float* mean,
                                               const float* invstd, const float* y,
                                               double* sum_dy, double* sum_dy_xhat,
                                               unsigned flags);

/* Backward, final step, from the global sums and the global count of values per
 * channel (the sum of every process's n*spatial, >= the local one):
 * dx = gamma * invstd * (dy' - sum_dy/count - xhat * sum_dy_xhat/count) on the local
 * slice, dgamma = sum_dy_xhat, dbeta = sum_dy (the same on every process). dx, dgamma,
 * dbeta may each be NULL (skipped); gamma NULL means 1. dx may equal dy or x.
 * Uses BNORM_FUSE_RELU (y then required), BNORM_SERIAL. */
BNORM_API bnorm_status bnorm_backward_dx_f32(const bnorm_shape* s, const float* x,
                                             const float* dy, const float* mean,
                                             const float* invstd, const float* gamma,
                                             const float* y, const double* sum_dy,
                                             const double* sum_dy_xhat, int64_t global_count,
                                             float* dx, float* dgamma, float* dbeta,
                                             unsigned flags);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BNORM_BNORM_H_ */
