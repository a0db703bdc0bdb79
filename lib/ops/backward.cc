// Backward driver: per-channel sums of dy and dy * (x - mean) (partials per work item,
// merged in item order), then dgamma, dbeta and dx. A channel that fits one NCHW work
// item gets its sums and its dx back to back, while it is in cache.
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

void BackwardOp(const bnorm_shape& s, const float* x, const float* dy, const float* saved_mean,
                const float* saved_invstd, const float* gamma, const float* y, float* dx,
                float* dgamma, float* dbeta, unsigned flags) {
  if (!dx && !dgamma && !dbeta) return;
  const Plan p = MakePlan(s, (flags & BNORM_SERIAL) != 0);
  const float* mask = (flags & BNORM_FUSE_RELU) ? y : nullptr;
  const bool stream = StreamOutput(p.count * p.c * int64_t{sizeof(float)});
  const BackwardFinish finish{saved_mean, saved_invstd, gamma, static_cast<double>(p.count),
                              dgamma, dbeta};

  if (!p.nhwc) {
    auto plane = [&](const float* t, int64_t ch) {
      return t ? p.PlaneOf(t, ch) : Plane<const float>{nullptr, p.spatial, 0};
    };
    auto dx_pass = [&](int64_t ch, int64_t k0, int64_t k1, float k_dy, float k_xc, float k_0) {
      BackwardDxPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), p.PlaneOf(dx, ch), k0, k1,
                      saved_mean[ch], k_dy, k_xc, k_0, stream);
    };
    if (p.chunks == 1) {
      parallel::For(p.c, p.grain, p.serial, [&](int64_t ch) {
        double sum_dy, sum_dy_xc;
        BackwardSumsPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), 0, p.count,
                          saved_mean[ch], &sum_dy, &sum_dy_xc);
        float k_dy, k_xc, k_0;
        finish(ch, sum_dy, sum_dy_xc, &k_dy, &k_xc, &k_0);
        if (dx) dx_pass(ch, 0, p.count, k_dy, k_xc, k_0);
      });
      return;
    }
    double* sums = Scratch<double, 0>(static_cast<size_t>(2 * p.items()));
    parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
      const int64_t ch = p.Channel(item);
      BackwardSumsPlane(plane(x, ch), plane(dy, ch), plane(mask, ch), p.K0(item), p.K1(item),
                        saved_mean[ch], &sums[2 * item], &sums[2 * item + 1]);
    });
    float* k = Scratch<float, 2>(static_cast<size_t>(3 * p.c));
    for (int64_t ch = 0; ch < p.c; ++ch) {
      double sum_dy = 0, sum_dy_xc = 0;
      for (int64_t item = ch * p.chunks; item < (ch + 1) * p.chunks; ++item) {
        sum_dy += sums[2 * item];
        sum_dy_xc += sums[2 * item + 1];
      }
      finish(ch, sum_dy, sum_dy_xc, &k[3 * ch], &k[3 * ch + 1], &k[3 * ch + 2]);
    }
    if (!dx) return;
    parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
      const int64_t ch = p.Channel(item);
      dx_pass(ch, p.K0(item), p.K1(item), k[3 * ch], k[3 * ch + 1], k[3 * ch + 2]);
    });
    return;
  }

  // NHWC: sums[chunk][ch] for dy and dy * (x - mean), merged over chunks in order.
  double* sum_dy = Scratch<double, 0>(static_cast<size_t>(2 * p.chunks * p.c));
  double* sum_dy_xc = sum_dy + p.chunks * p.c;
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    const int64_t at = p.Chunk(item) * p.c + p.C0(item);
    BackwardSumsRows(x, dy, mask, p.c, p.R0(item), p.R1(item), p.C0(item), p.C1(item),
                     saved_mean, sum_dy + at, sum_dy_xc + at);
  });
  float* k_dy = Scratch<float, 2>(static_cast<size_t>(3 * p.c));
  float* k_xc = k_dy + p.c;
  float* k_0 = k_xc + p.c;
  for (int64_t ch = 0; ch < p.c; ++ch) {
    double total_dy = 0, total_dy_xc = 0;
    for (int64_t chunk = 0; chunk < p.chunks; ++chunk) {
      total_dy += sum_dy[chunk * p.c + ch];
      total_dy_xc += sum_dy_xc[chunk * p.c + ch];
    }
    finish(ch, total_dy, total_dy_xc, &k_dy[ch], &k_xc[ch], &k_0[ch]);
  }
  if (!dx) return;
  parallel::For(p.items(), p.grain, p.serial, [&](int64_t item) {
    BackwardDxRows(x, dy, mask, dx, p.c, p.R0(item), p.R1(item), p.C0(item), p.C1(item),
                   saved_mean, k_dy, k_xc, k_0, stream);
  });
}

}  // namespace detail
}  // namespace bnorm
