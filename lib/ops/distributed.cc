// Synchronized batch norm: the local steps of training forward and backward, with the
// exchange between processes left to the caller (bnorm_mpi.hpp does it over MPI). The
// reductions run in the order of ForwardTrainingOp and BackwardOp, so that one process
// with the whole batch gets their statistics and sums bit for bit.
#include <cmath>
#include <limits>

#include "lib/ops/ops.h"
#include "lib/parallel/parallel.h"

namespace bnorm {
namespace detail {
namespace {

// Returns the merge of the statistics of two disjoint sets (Chan et al., M2 form):
// delta = mean_b - mean_a, mean = mean_a + delta * n_b / n,
// M2 = M2_a + M2_b + delta^2 * n_a * n_b / n.
bnorm_partial_stats MergeStats(const bnorm_partial_stats& a, const bnorm_partial_stats& b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  const double count = a.count + b.count;
  const double wa = a.count / count, wb = b.count / count;
  if (!std::isfinite(a.mean) || !std::isfinite(b.mean)) {
    // Inf or NaN data: the mean is what IEEE gives for the sum, M2 is NaN (as Merge).
    return {count, wa * a.mean + wb * b.mean, std::numeric_limits<double>::quiet_NaN()};
  }
  const double delta = b.mean - a.mean;
  return {count, a.mean + delta * wb, a.m2 + b.m2 + delta * delta * (a.count * wb)};
}

bnorm_partial_stats ToPartial(const Moments& m) { return {m.count, m.mean, m.var * m.count}; }

}  // namespace

void PartialStatsOp(const bnorm_shape& s, const float* x, bnorm_partial_stats* stats,
                    unsigned flags) {
  if (s.n * s.spatial == 0) {
    for (int64_t ch = 0; ch < s.c; ++ch) stats[ch] = bnorm_partial_stats{0, 0, 0};
    return;
  }
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, 0, s.c);
  if (p.fused()) {  // as ForwardTrainingOp: one StatsPlane over each whole channel
    parallel::For(p.channels(), p.fused_grain(), p.serial, [&](int64_t ch) {
      stats[ch] = ToPartial(StatsPlane(p.PlaneOf(x, ch), 0, p.count));
    });
    return;
  }
  Moments* moments = Scratch<Moments, 1>(static_cast<size_t>(p.c));
  ChannelMoments(p, x, moments);
  for (int64_t ch = 0; ch < p.c; ++ch) stats[ch] = ToPartial(moments[ch]);
}

void MergePartialStatsOp(int64_t c, const bnorm_partial_stats* a, const bnorm_partial_stats* b,
                         bnorm_partial_stats* out) {
  for (int64_t ch = 0; ch < c; ++ch) out[ch] = MergeStats(a[ch], b[ch]);  // reads, then writes
}

void FinishStatsOp(int64_t c, const bnorm_partial_stats* global, float eps, float momentum,
                   float* running_mean, float* running_var, float* mean, float* invstd,
                   unsigned flags) {
  const bool biased = (flags & BNORM_RUNNING_VAR_BIASED) != 0;
  const double e = eps, m = momentum;
  for (int64_t ch = 0; ch < c; ++ch) {
    const bnorm_partial_stats g = global[ch];
    const double var = g.m2 / g.count;  // biased, for the normalization
    const double inv = 1.0 / std::sqrt(var + e);
    if (mean) mean[ch] = static_cast<float>(g.mean);
    if (invstd) invstd[ch] = static_cast<float>(inv);
    if (running_mean) {
      const double unbias = biased ? 1.0 : g.count / (g.count - 1);
      running_mean[ch] = static_cast<float>((1 - m) * running_mean[ch] + m * g.mean);
      running_var[ch] = static_cast<float>((1 - m) * running_var[ch] + m * var * unbias);
    }
  }
}

void NormalizeOp(const bnorm_shape& s, const float* x, float* y, const float* mean,
                 const float* invstd, const float* gamma, const float* beta, unsigned flags) {
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, 0, s.c);
  float* mul = Scratch<float, 2>(static_cast<size_t>(2 * p.c));
  float* add = mul + p.c;
  if (p.rows_mode) AffinePatternScratch(p);  // before y is written
  for (int64_t ch = 0; ch < p.c; ++ch) {
    mul[ch] = static_cast<float>((gamma ? gamma[ch] : 1.0) * static_cast<double>(invstd[ch]));
    add[ch] = beta ? beta[ch] : 0.0f;
  }
  ApplyAffine(p, x, y, mean, mul, add, (flags & BNORM_FUSE_RELU) != 0);
}

void BackwardSumsOp(const bnorm_shape& s, const float* x, const float* dy, const float* mean,
                    const float* invstd, const float* y, double* sum_dy, double* sum_dy_xhat,
                    unsigned flags) {
  if (s.n * s.spatial == 0) {
    for (int64_t ch = 0; ch < s.c; ++ch) sum_dy[ch] = sum_dy_xhat[ch] = 0;
    return;
  }
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, 0, s.c);
  const float* mask = (flags & BNORM_FUSE_RELU) ? y : nullptr;
  // As BackwardOp: the same sums in the same order; then
  // sum(dy' * xhat) = invstd * sum(dy' * (x - mean)), as BackwardOp's dgamma.
  GradientSums(p, x, dy, mask, mean, sum_dy, sum_dy_xhat);
  for (int64_t ch = 0; ch < s.c; ++ch) sum_dy_xhat[ch] *= static_cast<double>(invstd[ch]);
}

void BackwardDxOp(const bnorm_shape& s, const float* x, const float* dy, const float* mean,
                  const float* invstd, const float* gamma, const float* y, const double* sum_dy,
                  const double* sum_dy_xhat, int64_t global_count, float* dx, float* dgamma,
                  float* dbeta, unsigned flags) {
  const int64_t c = s.c;
  if (dx && s.n * s.spatial == 0) dx = nullptr;  // no local values: gradients only
  // Every scratch buffer exists before the first output is written.
  float* k = Scratch<float, 2>(static_cast<size_t>(3 * c));  // k_dy, k_xc, k_0
  Plan p{};
  if (dx) {
    p = MakePlan(s, (flags & BNORM_SERIAL) != 0, 0, c);
    if (p.rows_mode) Scratch<float, 3>(4 * static_cast<size_t>(p.PatternSize()));
  }
  const double count = static_cast<double>(global_count);
  for (int64_t ch = 0; ch < c; ++ch) {
    // As BackwardOp's finish, with the global sums and count.
    const double dg = sum_dy_xhat[ch], db = sum_dy[ch];
    if (dgamma) dgamma[ch] = static_cast<float>(dg);
    if (dbeta) dbeta[ch] = static_cast<float>(db);
    if (!dx) continue;
    const double inv = invstd[ch];
    const double kk = (gamma ? gamma[ch] : 1.0) * inv;
    k[ch] = static_cast<float>(kk);
    k[c + ch] = static_cast<float>(-kk * inv * dg / count);
    k[2 * c + ch] = static_cast<float>(-kk * db / count);
  }
  if (!dx) return;
  ApplyDx(p, x, dy, (flags & BNORM_FUSE_RELU) ? y : nullptr, dx, mean, k);
}

}  // namespace detail
}  // namespace bnorm
