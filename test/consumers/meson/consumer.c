/* An out-of-tree C99 program built with bnorm as a Meson subproject: the engine's
 * inference path, fold once then affine with ReLU, on a small NCHW tensor, checked against
 * the batch norm computed here in double. Exits 0 when every value agrees. */
#include <bnorm/bnorm.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { kN = 2, kC = 4, kS = 9, kE = kN * kC * kS };

int main(void) {
  const bnorm_shape shape = {kN, kC, kS, bnorm_nchw};
  const float gamma[kC] = {1.0f, 0.5f, -2.0f, 3.0f}, beta[kC] = {0.5f, -0.25f, 1.0f, 0.0f};
  const float mean[kC] = {0.1f, -1.0f, 2.0f, 0.0f}, var[kC] = {1.0f, 4.0f, 0.25f, 2.0f};
  const float eps = 1e-3f;
  float x[kE], y[kE], scale[kC], shift[kC];
  int bad = 0, i;
  for (i = 0; i < kE; ++i) x[i] = (float)((i * 3) % 17) * 0.25f - 2.0f;

  if (strcmp(bnorm_version(), BNORM_VERSION_STRING) != 0 ||
      strcmp(bnorm_version(), BNORM_DEP_VERSION) != 0) {
    fprintf(stderr, "library %s, headers %s, dependency %s\n", bnorm_version(),
            BNORM_VERSION_STRING, BNORM_DEP_VERSION);
    return 1;
  }
  if (bnorm_fold_f32(kC, gamma, beta, mean, var, eps, scale, shift) != bnorm_success ||
      bnorm_affine_f32(&shape, x, y, scale, shift, BNORM_FUSE_RELU) != bnorm_success) {
    fprintf(stderr, "%s\n", bnorm_last_error());
    return 1;
  }
  for (i = 0; i < kE; ++i) {
    const int ch = i / kS % kC;
    const double t = (x[i] - mean[ch]) / sqrt((double)var[ch] + eps) * gamma[ch] + beta[ch];
    const double want = t > 0 ? t : 0;
    bad += fabs(y[i] - want) > 1e-5 * (1 + fabs(want));
  }
  printf("bnorm %s (%s) as a Meson subproject: y[10] = %.6f, %d values off\n", bnorm_version(),
         bnorm_active_target(), y[10], bad);
  return bad != 0;
}
