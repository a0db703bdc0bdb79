/* An out-of-tree C99 program built against the installed bnorm through pkg-config
 * (run_consumers.py): a training forward pass on a small NCHW tensor, checked against
 * the same batch norm computed here in double. Exits 0 when every value agrees. */
#include <bnorm/bnorm.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { kN = 2, kC = 3, kS = 5, kE = kN * kC * kS };

static int Near(double got, double want, double tol) { return fabs(got - want) <= tol; }

int main(void) {
  const bnorm_shape shape = {kN, kC, kS, bnorm_nchw};
  const float gamma[kC] = {1.5f, -0.5f, 2.0f}, beta[kC] = {0.25f, 1.0f, -3.0f};
  float x[kE], y[kE], running_mean[kC] = {0}, running_var[kC] = {1, 1, 1};
  float saved_mean[kC], saved_invstd[kC];
  const float eps = 1e-5f, momentum = 0.1f;
  int bad = 0, i, ch, k;
  for (i = 0; i < kE; ++i) x[i] = (float)((i * 7) % 11) * 0.5f - 1.0f + (float)(i / kS % kC);

  if (strcmp(bnorm_version(), BNORM_VERSION_STRING) != 0) {
    fprintf(stderr, "library %s, headers %s\n", bnorm_version(), BNORM_VERSION_STRING);
    return 1;
  }
  if (bnorm_forward_training_f32(&shape, x, y, gamma, beta, eps, momentum, running_mean,
                                 running_var, saved_mean, saved_invstd, 0) != bnorm_success) {
    fprintf(stderr, "forward training: %s\n", bnorm_last_error());
    return 1;
  }
  for (ch = 0; ch < kC; ++ch) {
    double sum = 0, m2 = 0, mean, var, invstd;
    for (i = 0; i < kN; ++i)
      for (k = 0; k < kS; ++k) sum += x[(i * kC + ch) * kS + k];
    mean = sum / (kN * kS);
    for (i = 0; i < kN; ++i)
      for (k = 0; k < kS; ++k) m2 += pow(x[(i * kC + ch) * kS + k] - mean, 2);
    var = m2 / (kN * kS);
    invstd = 1 / sqrt(var + eps);
    bad += !Near(saved_mean[ch], mean, 1e-6 * (1 + fabs(mean)));
    bad += !Near(saved_invstd[ch], invstd, 1e-6 * invstd);
    bad += !Near(running_mean[ch], momentum * mean, 1e-6);
    bad += !Near(running_var[ch], 1 - momentum + momentum * m2 / (kN * kS - 1), 1e-6);
    for (i = 0; i < kN; ++i)
      for (k = 0; k < kS; ++k) {
        const int at = (i * kC + ch) * kS + k;
        const double want = (x[at] - mean) * invstd * gamma[ch] + beta[ch];
        bad += !Near(y[at], want, 1e-5 * (1 + fabs(want)));
      }
  }
  printf("bnorm %s (%s) through pkg-config: y[7] = %.6f, %d values off\n", bnorm_version(),
         bnorm_active_target(), y[7], bad);
  return bad != 0;
}
