// Backward drivers: per-channel sums of dy and dy * (x - mean) (partials per work item,
// merged in item order; GradientSums), then dgamma, dbeta and dx (ApplyDx). A channel
// that fits one NCHW work item gets its sums and its dx back to back, while it is in
// cache. The synchronized backward (distributed.cc) uses the same two drivers.
#include "lib/ops/ops.h"
#include "lib/parallel/parallel.h"

namespace bnorm {
namespace detail {
namespace {

// Per-channel results of the reduction and the dx coefficients derived from them.
struct BackwardFinish {
  const float *saved_mean, *saved_invstd, *gamma;
  double count;
  float *dgamma, *dbeta;

  // Writes dgamma/dbeta of ch and the coefficients dx = k_dy*dy + k_xc*(x-mean) + k_0.
  void operator()(int64_t ch, double sum_dy, double sum_dy_xc, float* k_dy, float* k_xc,
                  float* k_0) const {
    const double invstd = saved_invstd[ch];
    const double dg = sum_dy_xc * invstd;  // sum(dy * xhat)
    if (dgamma) dgamma[ch] = static_cast<float>(dg);
    if (dbeta) dbeta[ch] = static_cast<float>(sum_dy);
    const double k = (gamma ? gamma[ch] : 1.0) * invstd;
    *k_dy = static_cast<float>(k);
    *k_xc = static_cast<float>(-k * invstd * dg / count);
    *k_0 = static_cast<float>(-k * sum_dy / count);
  }
};

}  // namespace

template <typename T>
void GradientSums(const Plan& p, const T* x, const T* dy, const T* mask, const float* mean,
                  double* sum_dy, double* sum_dy_xc) {
  if (!p.rows_mode) {
    auto plane = [&](const T* t, int64_t ch) {
      return t ? p.PlaneOf(t, ch) : Plane<const T>{nullptr, p.spatial, 0};
    };
    if (p.fused()) {  // one call over each whole channel
      parallel::For(p.channels(), p.fused_grain(), p.serial, [&](int64_t i) {
        const int64_t ch = p.cb + i;
        BackwardSumsPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), 0, p.count, mean[ch],
                          &sum_dy[ch], &sum_dy_xc[ch]);
      });
      return;
    }
    double* sums = Scratch<double, 0>(static_cast<size_t>(2 * p.items()));
    parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
      const int64_t ch = p.Channel(item);
      BackwardSumsPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), p.K0(item), p.K1(item),
                        mean[ch], &sums[2 * item], &sums[2 * item + 1]);
    });
    MergeChannels(p, [&](int64_t ch) {
      double total_dy = 0, total_dy_xc = 0;
      const int64_t first = (ch - p.cb) * p.chunks;
      for (int64_t item = first; item < first + p.chunks; ++item) {
        total_dy += sums[2 * item];
        total_dy_xc += sums[2 * item + 1];
      }
      sum_dy[ch] = total_dy;
      sum_dy_xc[ch] = total_dy_xc;
    });
    return;
  }
  // Rows: per-position sums of each region, added into chunk_dy[chunk * c + ch] in
  // position order, then over chunks in order.
  float* pattern = Scratch<float, 3>(static_cast<size_t>(p.PatternSize()));  // mean
  FillPattern(p, mean, 0.0f, pattern);
  double* chunk_dy = Scratch<double, 0>(static_cast<size_t>(2 * p.chunks * p.c));
  double* chunk_dy_xc = chunk_dy + p.chunks * p.c;
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    const int64_t at = p.Chunk(item) * p.c;
    for (int64_t ch = p.FirstChannel(item); ch < p.LastChannel(item); ++ch) {
      chunk_dy[at + ch] = chunk_dy_xc[at + ch] = 0;
    }
    double pos_dy[kMaxRun], pos_dy_xc[kMaxRun];
    p.ForEachRegion(item, [&](int64_t offset, int64_t len, int64_t stride, int64_t runs,
                              int64_t block_runs, int64_t col) {
      auto region = [&](const T* t) {
        return Region<const T>{t ? t + offset : nullptr, len, stride, runs, block_runs};
      };
      BackwardSumsRegion(region(x), region(dy), region(mask), pattern + col, pos_dy, pos_dy_xc);
      p.ForEachPosition(col, len, [&](int64_t pos, int64_t ch) {
        chunk_dy[at + ch] += pos_dy[pos];
        chunk_dy_xc[at + ch] += pos_dy_xc[pos];
      });
    });
  });
  MergeChannels(p, [&](int64_t ch) {
    double total_dy = 0, total_dy_xc = 0;
    for (int64_t chunk = 0; chunk < p.chunks; ++chunk) {
      total_dy += chunk_dy[chunk * p.c + ch];
      total_dy_xc += chunk_dy_xc[chunk * p.c + ch];
    }
    sum_dy[ch] = total_dy;
    sum_dy_xc[ch] = total_dy_xc;
  });
}

template <typename T>
void ApplyDx(const Plan& p, const T* x, const T* dy, const T* mask, T* dx, const float* mean,
             const float* k) {
  const bool stream = StreamOutput(p.count * p.c * int64_t{sizeof(T)});
  if (!p.rows_mode) {
    if (p.fused()) {  // channel by channel, as the fused backward
      auto plane = [&](const T* t, int64_t ch) {
        return t ? p.PlaneOf(t, ch) : Plane<const T>{nullptr, p.spatial, 0};
      };
      parallel::For(p.channels(), p.fused_grain(), p.serial, [&](int64_t i) {
        const int64_t ch = p.cb + i;
        BackwardDxPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), p.PlaneOf(dx, ch), 0,
                        p.count, mean[ch], k[ch], k[p.c + ch], k[2 * p.c + ch], stream);
      });
      return;
    }
    // In memory order, as ApplyAffine.
    parallel::For(p.Slices(), 1, p.serial, [&](int64_t slice) {
      BackwardDxSlice(x, dy, mask, dx, p.spatial, p.c, p.V0(slice), p.V1(slice), mean, k,
                      k + p.c, k + 2 * p.c, stream);
    });
    return;
  }
  // Rows: runs with per-position coefficients.
  const size_t size = static_cast<size_t>(p.PatternSize());
  float* pattern = Scratch<float, 3>(4 * size);  // mean, k_dy, k_xc, k_0
  FillPattern(p, mean, 0.0f, pattern);
  for (int i = 0; i < 3; ++i) FillPattern(p, k + i * p.c, 0.0f, pattern + (i + 1) * size);
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    p.ForEachRun(item, [&](int64_t offset, int64_t len, int64_t period, int64_t at) {
      BackwardDxRun(x + offset, dy + offset, mask ? mask + offset : nullptr, dx + offset, len,
                    pattern + at, pattern + size + at, pattern + 2 * size + at,
                    pattern + 3 * size + at, period, stream);
    });
  });
}

template <typename T>
void BackwardOp(const bnorm_shape& s, const Channels& range, const T* x, const T* dy,
                const float* saved_mean, const float* saved_invstd, const float* gamma,
                const T* y, T* dx, float* dgamma, float* dbeta, unsigned flags) {
  if (!dx && !dgamma && !dbeta) return;
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0, range.begin, range.end);
  const T* mask = (flags & BNORM_FUSE_RELU) ? y : nullptr;
  const BackwardFinish finish{saved_mean, saved_invstd, gamma, static_cast<double>(p.count),
                              dgamma, dbeta};
  if (p.fused() && dx) {  // dx right after the sums, while the channel is in cache
    const bool stream = StreamOutput(p.count * p.c * int64_t{sizeof(T)});
    auto plane = [&](const T* t, int64_t ch) {
      return t ? p.PlaneOf(t, ch) : Plane<const T>{nullptr, p.spatial, 0};
    };
    parallel::For(p.channels(), p.fused_grain(), p.serial, [&](int64_t i) {
      const int64_t ch = p.cb + i;
      double sum_dy, sum_dy_xc;
      BackwardSumsPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), 0, p.count,
                        saved_mean[ch], &sum_dy, &sum_dy_xc);
      float k_dy, k_xc, k_0;
      finish(ch, sum_dy, sum_dy_xc, &k_dy, &k_xc, &k_0);
      BackwardDxPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), p.PlaneOf(dx, ch), 0,
                      p.count, saved_mean[ch], k_dy, k_xc, k_0, stream);
    });
    return;
  }
  // Every scratch buffer exists before the first output is written: running out of
  // memory must leave the outputs untouched.
  double* sums = Scratch<double, 1>(static_cast<size_t>(2 * p.c));  // sum_dy, sum_dy_xc
  float* k = Scratch<float, 2>(static_cast<size_t>(3 * p.c));      // k_dy, k_xc, k_0
  if (p.rows_mode) Scratch<float, 3>(4 * static_cast<size_t>(p.PatternSize()));
  GradientSums(p, x, dy, mask, saved_mean, sums, sums + p.c);
  for (int64_t ch = p.cb; ch < p.ce; ++ch) {
    finish(ch, sums[ch], sums[p.c + ch], &k[ch], &k[p.c + ch], &k[2 * p.c + ch]);
  }
  if (dx) ApplyDx(p, x, dy, mask, dx, saved_mean, k);
}

#define BNORM_BACKWARD_OPS(T, S)                                                           \
  template void GradientSums(const Plan&, const T*, const T*, const T*, const float*,      \
                             double*, double*);                                           \
  template void ApplyDx(const Plan&, const T*, const T*, const T*, T*, const float*,       \
                        const float*);                                                     \
  template void BackwardOp(const bnorm_shape&, const Channels&, const T*, const T*,       \
                           const float*, const float*, const float*, const T*, T*, float*, \
                           float*, unsigned);
BNORM_FOR_TYPES(BNORM_BACKWARD_OPS)
#undef BNORM_BACKWARD_OPS

}  // namespace detail
}  // namespace bnorm
