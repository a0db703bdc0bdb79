// Operation drivers: they cut a validated tensor into work items (plan.h), run the
// kernels over them with bnorm::parallel, and merge partial results in a fixed order.
// Arguments were validated by lib/api; nothing here fails.
#ifndef BNORM_LIB_OPS_OPS_H_
#define BNORM_LIB_OPS_OPS_H_

#include <cstdint>

#include "bnorm/bnorm.h"
#include "lib/kernels/kernels.h"
#include "lib/ops/plan.h"
#include "lib/parallel/parallel.h"

namespace bnorm {
namespace detail {

// Tensors hold T: float, bnorm_bf16 or bnorm_f16 (instantiated for those three).

// Writes the float64 moments of every channel of x to moments[0, c).
template <typename T>
void ChannelMoments(const Plan& plan, const T* x, Moments* moments);

// Calls merge(ch) for each of the plan's channels, which merges that channel's
// per-chunk partials in chunk order: channels in parallel, in tasks of about
// kMergeGrain merges, where there are many (NHWC 32x1024x196: 50,000 float64 merges,
// about 0.2 ms on one core, against 0.7 ms for the whole call on 16), else on the
// calling thread. Each channel's order, hence its result, is the same either way.
constexpr int64_t kMergeGrain = 4096;
template <class Fn>
void MergeChannels(const Plan& p, const Fn& merge) {
  parallel::For(p.channels(), Plan::Max(1, kMergeGrain / p.chunks), p.serial,
                [&](int64_t i) { merge(p.cb + i); });
}

// ApplyAffine's patterns in the rows mode, in this thread's scratch: sub, mul and add
// (3 x PatternSize() floats at f), float64 copies of mul and add (2 x PatternSize() at
// w; see AffinePattern). An operation that writes outputs before ApplyAffine calls this
// first: running out of memory must leave the outputs untouched.
struct AffineScratch {
  float* f;
  double* w;
};
AffineScratch AffinePatternScratch(const Plan& plan);

// Writes y = (x - sub[ch]) * mul[ch] + add[ch] (+ ReLU); sub may be null (0).
template <typename T>
void ApplyAffine(const Plan& plan, const T* x, T* y, const float* sub, const float* mul,
                 const float* add, bool relu);

// Writes sum_dy[ch] = sum(dy') and sum_dy_xc[ch] = sum(dy' * (x - mean[ch])) for the
// plan's channels, dy' = dy masked where mask <= 0 (mask may be null).
template <typename T>
void GradientSums(const Plan& plan, const T* x, const T* dy, const T* mask, const float* mean,
                  double* sum_dy, double* sum_dy_xc);

// Writes dx = k[ch] * dy' + k[c + ch] * (x - mean[ch]) + k[2c + ch] for the plan's
// channels. The rows mode needs Scratch<float, 3>(4 * PatternSize()).
template <typename T>
void ApplyDx(const Plan& plan, const T* x, const T* dy, const T* mask, T* dx, const float* mean,
             const float* k);

// The operations, on channels [range.begin, range.end) of the tensor (all of them,
// or a slice: bit-identical to the whole call on those channels).
struct Channels {
  int64_t begin, end;
};

template <typename T>
void MomentsOp(const bnorm_shape& s, const Channels& range, const T* x, float* mean,
               float* var, unsigned flags);
template <typename T>
void ForwardTrainingOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
                       const float* gamma, const float* beta, float eps, float momentum,
                       float* running_mean, float* running_var, float* saved_mean,
                       float* saved_invstd, unsigned flags);
template <typename T>
void ForwardInferenceOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
                        const float* gamma, const float* beta, const float* mean,
                        const float* var, float eps, unsigned flags);
void FoldOp(int64_t c, const float* gamma, const float* beta, const float* mean,
            const float* var, float eps, float* scale, float* shift);
template <typename T>
void AffineOp(const bnorm_shape& s, const Channels& range, const T* x, T* y,
              const float* scale, const float* shift, unsigned flags);
template <typename T>
void BackwardOp(const bnorm_shape& s, const Channels& range, const T* x, const T* dy,
                const float* saved_mean, const float* saved_invstd, const float* gamma,
                const T* y, T* dx, float* dgamma, float* dbeta, unsigned flags);

// Returns whether outputs of `bytes` should bypass the cache (non-temporal stores):
// from 8 MiB, more than a core's share of a last-level cache, the output would only
// evict the input; measured 1.3-1.6x faster on 13-25 MB tensors (cold), while small
// outputs (batch-1 inference, read by the next layer) stay in cache.
inline bool StreamOutput(int64_t bytes) { return bytes >= (int64_t{8} << 20); }

// --- Synchronized batch norm: the local steps (lib/ops/distributed.cc) -----------
// Whole tensors only; shapes are validated and non-empty (count may be 0: see each).

// Writes the partial statistics (count, mean, M2) of every channel of x; a tensor with
// no values (count == 0) gives {0, 0, 0}. The sums follow ForwardTrainingOp's order.
void PartialStatsOp(const bnorm_shape& s, const float* x, bnorm_partial_stats* stats,
                    unsigned flags);
// Writes out[ch] = a[ch] merged with b[ch] (Chan); out may equal a or b.
void MergePartialStatsOp(int64_t c, const bnorm_partial_stats* a, const bnorm_partial_stats* b,
                         bnorm_partial_stats* out);
// Writes mean, invstd (each optional) and the running statistics (optional) from merged
// statistics with count >= 2, as ForwardTrainingOp does.
void FinishStatsOp(int64_t c, const bnorm_partial_stats* global, float eps, float momentum,
                   float* running_mean, float* running_var, float* mean, float* invstd,
                   unsigned flags);
// Writes y = (x - mean) * (gamma * invstd) + beta (+ ReLU); count > 0.
void NormalizeOp(const bnorm_shape& s, const float* x, float* y, const float* mean,
                 const float* invstd, const float* gamma, const float* beta, unsigned flags);
// Writes the local sums of dy' and dy' * xhat per channel, in BackwardOp's order; zeros
// when count == 0.
void BackwardSumsOp(const bnorm_shape& s, const float* x, const float* dy, const float* mean,
                    const float* invstd, const float* y, double* sum_dy, double* sum_dy_xhat,
                    unsigned flags);
// Writes dx (count > 0), dgamma and dbeta (each optional) from the global sums.
void BackwardDxOp(const bnorm_shape& s, const float* x, const float* dy, const float* mean,
                  const float* invstd, const float* gamma, const float* y, const double* sum_dy,
                  const double* sum_dy_xhat, int64_t global_count, float* dx, float* dgamma,
                  float* dbeta, unsigned flags);

}  // namespace detail
}  // namespace bnorm

#endif  // BNORM_LIB_OPS_OPS_H_
