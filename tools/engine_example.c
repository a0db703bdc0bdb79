/* How an inference engine embeds bnorm: a network block (1x1 convolution, batch norm,
 * ReLU) run for inference in the two ways an engine does it,
 *   folded:  at load time bnorm_fold_f32 turns the BN parameters into per-channel
 *            scale and shift, which go into the convolution's weights and bias; every
 *            inference is then the convolution and a ReLU, with no BN left;
 *   affine:  every inference runs the convolution, then bnorm_affine_f32 with
 *            BNORM_FUSE_RELU in place on its output (and once more with BNORM_SERIAL, as
 *            an engine with its own thread pool would call it: the same bits);
 * and checks both against an unfused float64 reference, in NCHW and NHWC, on a small
 * block (runs on the calling thread) and a larger one (bnorm fans out over threads).
 * Plain C99 over the C ABI. Exit status 0 when everything agrees. */
#include <bnorm/bnorm.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One block: cout x cin convolution weights and bias, then BN with running statistics. */
typedef struct Block {
  int64_t cin, cout;
  float *w, *bias;                  /* w[o * cin + i] */
  float *gamma, *beta, *mean, *var; /* cout each */
  float eps;
} Block;

/* Returns a pseudo-random float in [lo, hi) (a fixed sequence: the example is repeatable). */
static float Uniform(unsigned* state, float lo, float hi) {
  *state = *state * 1664525u + 1013904223u;
  return lo + (hi - lo) * (float)(*state >> 8) / 16777216.0f;
}

static float* Alloc(int64_t count) {
  float* p = (float*)malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* Offset of (image i, channel ch, position s) of an n x c x hw tensor in `layout`. */
static int64_t At(bnorm_layout layout, int64_t c, int64_t hw, int64_t i, int64_t ch, int64_t s) {
  return layout == bnorm_nchw ? (i * c + ch) * hw + s : (i * hw + s) * c + ch;
}

/* y = conv1x1(x) + bias: x is n x cin x hw, y is n x cout x hw, both in `layout`.
 * Written plainly, as a stand-in for an engine's convolution. */
static void Conv1x1(bnorm_layout layout, int64_t n, int64_t hw, const Block* b, const float* w,
                    const float* bias, const float* x, float* y) {
  int64_t i, o, s, k;
  for (i = 0; i < n; ++i)
    for (s = 0; s < hw; ++s)
      for (o = 0; o < b->cout; ++o) {
        float acc = bias[o];
        for (k = 0; k < b->cin; ++k) acc += w[o * b->cin + k] * x[At(layout, b->cin, hw, i, k, s)];
        y[At(layout, b->cout, hw, i, o, s)] = acc;
      }
}

static void Relu(float* y, int64_t count) {
  int64_t i;
  for (i = 0; i < count; ++i) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

/* Runs one block of n images of hw positions in `layout` both ways and compares them
 * with the float64 reference. Returns the number of wrong values (or -1 on an error). */
static int64_t RunBlock(bnorm_layout layout, int64_t n, int64_t cin, int64_t cout, int64_t hw) {
  const char* name = layout == bnorm_nchw ? "NCHW" : "NHWC";
  const int64_t in_count = n * cin * hw, out_count = n * cout * hw;
  const bnorm_shape out_shape = {n, cout, hw, layout};
  unsigned seed = 12345u + (unsigned)(cin * 31 + cout);
  Block b;
  float *x, *scale, *shift, *w_folded, *bias_folded, *y_folded, *y_affine, *y_serial;
  double worst_folded = 0, worst_affine = 0;
  int64_t i, o, s, k, bad = 0;

  /* The model, as loaded from a file. */
  b.cin = cin;
  b.cout = cout;
  b.eps = 1e-5f;
  b.w = Alloc(cout * cin);
  b.bias = Alloc(cout);
  b.gamma = Alloc(cout);
  b.beta = Alloc(cout);
  b.mean = Alloc(cout);
  b.var = Alloc(cout);
  for (i = 0; i < cout * cin; ++i) b.w[i] = Uniform(&seed, -1.0f, 1.0f) / (float)sqrt((double)cin);
  for (o = 0; o < cout; ++o) {
    b.bias[o] = Uniform(&seed, -0.5f, 0.5f);
    b.gamma[o] = Uniform(&seed, 0.25f, 2.0f) * (o % 3 == 0 ? -1.0f : 1.0f);
    b.beta[o] = Uniform(&seed, -1.0f, 1.0f);
    b.mean[o] = Uniform(&seed, -0.5f, 0.5f);
    b.var[o] = Uniform(&seed, 0.05f, 3.0f);
  }
  x = Alloc(in_count);
  for (i = 0; i < in_count; ++i) x[i] = Uniform(&seed, -2.0f, 2.0f);

  /* Load time: fold BN into per-channel scale and shift, then into the convolution. */
  scale = Alloc(cout);
  shift = Alloc(cout);
  w_folded = Alloc(cout * cin);
  bias_folded = Alloc(cout);
  if (bnorm_fold_f32(cout, b.gamma, b.beta, b.mean, b.var, b.eps, scale, shift) != bnorm_success) {
    fprintf(stderr, "bnorm_fold_f32: %s\n", bnorm_last_error());
    return -1;
  }
  for (o = 0; o < cout; ++o) {
    for (k = 0; k < cin; ++k) w_folded[o * cin + k] = b.w[o * cin + k] * scale[o];
    bias_folded[o] = b.bias[o] * scale[o] + shift[o];
  }

  /* Inference, folded: the convolution with the folded weights, then ReLU. */
  y_folded = Alloc(out_count);
  Conv1x1(layout, n, hw, &b, w_folded, bias_folded, x, y_folded);
  Relu(y_folded, out_count);

  /* Inference, affine: the convolution, then BN + ReLU in one bnorm call, in place. */
  y_affine = Alloc(out_count);
  y_serial = Alloc(out_count);
  Conv1x1(layout, n, hw, &b, b.w, b.bias, x, y_affine);
  memcpy(y_serial, y_affine, (size_t)out_count * sizeof(float));
  if (bnorm_affine_f32(&out_shape, y_affine, y_affine, scale, shift, BNORM_FUSE_RELU) !=
          bnorm_success ||
      bnorm_affine_f32(&out_shape, y_serial, y_serial, scale, shift,
                       BNORM_FUSE_RELU | BNORM_SERIAL) != bnorm_success) {
    fprintf(stderr, "bnorm_affine_f32: %s\n", bnorm_last_error());
    return -1;
  }
  if (memcmp(y_affine, y_serial, (size_t)out_count * sizeof(float)) != 0) {
    fprintf(stderr, "%s: BNORM_SERIAL changed the result\n", name);
    ++bad;
  }

  /* The float64 reference, unfused: convolution, BN with the original parameters, ReLU.
   * Tolerance: the float32 paths round each of the cin products and sums (and the
   * folded weights, scale, shift and affine), so the error is bounded by about
   * (cin + 8) roundings of mag = |scale| * (sum |w x| + |bias|) + |beta| + |mean * scale|;
   * cin + 16 float32 ulps of mag is accepted. A wrong channel's scale or shift, or a
   * missing ReLU, is off by O(mag). */
  for (i = 0; i < n; ++i)
    for (s = 0; s < hw; ++s)
      for (o = 0; o < cout; ++o) {
        const double sc = b.gamma[o] / sqrt((double)b.var[o] + b.eps);
        double conv = b.bias[o], mag_conv = fabs(b.bias[o]), want, mag, tol, err;
        const int64_t at = At(layout, cout, hw, i, o, s);
        for (k = 0; k < cin; ++k) {
          const double term = (double)b.w[o * cin + k] * x[At(layout, cin, hw, i, k, s)];
          conv += term;
          mag_conv += fabs(term);
        }
        want = (conv - b.mean[o]) * sc + b.beta[o];
        want = want > 0 ? want : 0;
        mag = fabs(sc) * mag_conv + fabs(b.beta[o]) + fabs(b.mean[o] * sc);
        tol = (double)(cin + 16) * mag / 16777216.0;
        err = fabs(y_folded[at] - want);
        if (err > tol) ++bad;
        if (err / tol > worst_folded) worst_folded = err / tol;
        err = fabs(y_affine[at] - want);
        if (err > tol) ++bad;
        if (err / tol > worst_affine) worst_affine = err / tol;
      }
  printf(
      "%s n=%lld cin=%lld cout=%lld hw=%lld: folded worst %.3f of tolerance, affine+ReLU "
      "worst %.3f of tolerance, %lld wrong\n",
      name, (long long)n, (long long)cin, (long long)cout, (long long)hw, worst_folded,
      worst_affine, (long long)bad);

  free(b.w);
  free(b.bias);
  free(b.gamma);
  free(b.beta);
  free(b.mean);
  free(b.var);
  free(x);
  free(scale);
  free(shift);
  free(w_folded);
  free(bias_folded);
  free(y_folded);
  free(y_affine);
  free(y_serial);
  return bad;
}

int main(void) {
  static const bnorm_layout layouts[] = {bnorm_nchw, bnorm_nhwc};
  int64_t bad = 0;
  int l;
  printf("bnorm %s, target %s\n", bnorm_version(), bnorm_active_target());
  for (l = 0; l < 2; ++l) {
    const int64_t small = RunBlock(layouts[l], 2, 24, 16, 7 * 7);   /* 1568 outputs */
    const int64_t large = RunBlock(layouts[l], 4, 32, 64, 28 * 28); /* 200704 outputs */
    if (small < 0 || large < 0) return 1;
    bad += small + large;
  }
  printf("%s\n",
         bad == 0 ? "folded and affine inference agree with the float64 reference" : "MISMATCH");
  return bad != 0;
}
