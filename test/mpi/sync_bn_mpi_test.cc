// Synchronized batch norm with real processes: run under mpirun -np 1..4 (through
// test/mpi/run_mpi.sh, loopback and shared memory only). Every rank builds the same
// batch, takes its uneven slice (one rank with a single image or row, NHWC ranks with
// a tiny run of rows, with 4 ranks one without data), runs bnorm::mpi::SyncForwardTraining
// and SyncBackward, and checks against single-process bnorm on the whole batch (mean,
// variance, running statistics, y, dx, dgamma, dbeta within tolerance) and that the
// statistics, running statistics and gradients are bit-identical on every rank.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bnorm/bnorm_mpi.hpp"
#include "test/reference.h"

namespace {

namespace ref = bnorm::ref;

int g_rank = 0, g_size = 1;
long g_checks = 0, g_failures = 0;

// Records one check; prints the first failures of this rank.
bool Expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok && g_failures++ < 20) std::fprintf(stderr, "rank %d: FAILED: %s\n", g_rank, what.c_str());
  return ok;
}

// Tolerances (see test/test_util.h): bnorm and the synchronized steps are each within
// kMeanUlps / kVarRel / kOutUlps of the float64 reference, so they agree within twice that.
constexpr double kMeanUlps = 2 * 16, kVarRel = 2 * 2e-6, kOutUlps = 2 * 64;

// Checks got[i] against want[i] within k ulps of mag[i], for `n` values from index 0.
void Near(const char* what, const std::string& where, const float* got, const float* want,
          const ref::Vec& mag, size_t first, size_t n, double k) {
  long bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double tol = k * ref::kUlp * mag[first + i] + 1e-37;
    if (std::fabs(static_cast<double>(got[i]) - want[first + i]) <= tol) continue;
    if (bad++ < 3)
      Expect(false, where + ": " + what + "[" + std::to_string(first + i) + "] = " +
                        std::to_string(got[i]) + ", single-process " +
                        std::to_string(want[first + i]) + " +- " + std::to_string(tol));
  }
  Expect(bad == 0, where + ": " + what + ": " + std::to_string(bad) + " values differ");
}

// Returns the sizes of every rank's slice: `units` images (NCHW) or rows (NHWC) cut
// unevenly: rank 0 gets one, with 3+ ranks NHWC rank 1 gets 2 rows, with 4 ranks and
// `with_empty` rank 2 gets none, the others shares growing with the rank.
std::vector<int64_t> SplitSizes(int64_t units, bool nhwc, bool with_empty) {
  std::vector<int64_t> sizes(static_cast<size_t>(g_size), -1);
  if (g_size == 1) return {units};
  sizes[0] = 1;
  if (g_size > 2 && nhwc) sizes[1] = 2;
  if (g_size == 4 && with_empty) sizes[2] = 0;
  int64_t left = units, weights = 0;
  for (int r = 0; r < g_size; ++r) {
    if (sizes[r] >= 0) left -= sizes[r];
    else weights += r + 1;
  }
  int64_t last = -1;
  for (int r = 0; r < g_size; ++r) {
    if (sizes[r] >= 0) continue;
    sizes[r] = left * (r + 1) / weights;
    last = r;
  }
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  sizes[static_cast<size_t>(last)] += units - total;
  return sizes;
}

struct Case {
  bnorm::Shape shape;
  bool with_empty;
};

// Gathers `v` from every rank and checks that each rank holds rank 0's bytes.
void SameOnEveryRank(const char* what, const std::string& where, const std::vector<float>& v) {
  std::vector<float> all(v.size() * static_cast<size_t>(g_size));
  MPI_Allgather(v.data(), static_cast<int>(v.size()), MPI_FLOAT, all.data(),
                static_cast<int>(v.size()), MPI_FLOAT, MPI_COMM_WORLD);
  for (int r = 1; r < g_size; ++r) {
    Expect(std::memcmp(all.data(), all.data() + r * v.size(), v.size() * sizeof(float)) == 0,
           where + ": " + what + " of rank " + std::to_string(r) + " differs from rank 0's");
  }
}

void RunCase(const Case& tc, unsigned flags, float momentum) {
  const bnorm::Shape& s = tc.shape;
  const bool nhwc = s.layout == bnorm::Layout::kNHWC;
  const bool relu = (flags & bnorm::kFuseRelu) != 0;
  const size_t c = static_cast<size_t>(s.c);
  const float eps = 1e-5f;
  const std::string where = std::string(nhwc ? "NHWC" : "NCHW") + " n=" +
                            std::to_string(s.n) + " c=" + std::to_string(s.c) + " spatial=" +
                            std::to_string(s.spatial) + " flags=" + std::to_string(flags) +
                            " np=" + std::to_string(g_size);
  // The same batch on every rank.
  std::mt19937 rng(static_cast<uint32_t>(s.n * 1000003 + s.c * 1009 + s.spatial * 7 + nhwc));
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(-1, 1);
  const size_t elements = static_cast<size_t>(s.elements());
  std::vector<float> x(elements), dy(elements), gamma(c), beta(c), rm0(c), rv0(c);
  const bnorm_shape cs = s.c_shape();
  for (size_t ch = 0; ch < c; ++ch) {
    const double sd = std::exp2(3 * uniform(rng)), mean = 3 * sd * uniform(rng);
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t sp = 0; sp < s.spatial; ++sp)
        x[ref::Offset(cs, i, static_cast<int64_t>(ch), sp)] =
            static_cast<float>(mean + sd * normal(rng));
    gamma[ch] = static_cast<float>(0.25 + 1.75 * std::fabs(uniform(rng)));
    beta[ch] = static_cast<float>(uniform(rng));
    rm0[ch] = static_cast<float>(uniform(rng));
    rv0[ch] = static_cast<float>(1.5 + uniform(rng));
  }
  for (float& v : dy) v = static_cast<float>(normal(rng));

  // Single-process bnorm on the whole batch.
  std::vector<float> y1(elements), mean1(c), invstd1(c), rm1 = rm0, rv1 = rv0, mean2(c), var1(c);
  std::vector<float> dx1(elements), dgamma1(c), dbeta1(c);
  bnorm::ForwardTraining(s, x, y1, gamma, beta, eps, momentum, rm1, rv1, mean1, invstd1, flags);
  bnorm::Backward(s, x, dy, mean1, invstd1, gamma, y1, dx1, dgamma1, dbeta1, flags);
  bnorm::Moments(s, x, mean2, var1);
  const ref::Training t = ref::ForwardTraining(cs, x.data(), gamma.data(), beta.data(), eps, relu);
  const ref::Gradients g = ref::Backward(cs, x.data(), dy.data(), mean1.data(), invstd1.data(),
                                         gamma.data(), y1.data(), relu);

  // This rank's slice.
  const std::vector<int64_t> sizes = SplitSizes(nhwc ? s.n * s.spatial : s.n, nhwc, tc.with_empty);
  int64_t start = 0;
  for (int r = 0; r < g_rank; ++r) start += sizes[r];
  const int64_t mine = sizes[static_cast<size_t>(g_rank)];
  bnorm::Shape local = s;
  size_t offset;
  if (nhwc) {
    local.n = mine > 0 ? 1 : 0;
    local.spatial = mine > 0 ? mine : 1;
    offset = static_cast<size_t>(start) * c;
  } else {
    local.n = mine;
    offset = static_cast<size_t>(start * s.c * s.spatial);
  }
  const size_t n_local = static_cast<size_t>(local.elements());
  const bnorm::Span<const float> x_local(x.data() + offset, n_local);
  const bnorm::Span<const float> dy_local(dy.data() + offset, n_local);
  std::vector<float> y(n_local), mean(c), invstd(c), rm = rm0, rv = rv0, dx(n_local), dgamma(c),
      dbeta(c);
  const int64_t count = bnorm::mpi::SyncForwardTraining(MPI_COMM_WORLD, local, x_local, y, gamma,
                                                        beta, eps, momentum, rm, rv, mean,
                                                        invstd, flags);
  bnorm::mpi::SyncBackward(MPI_COMM_WORLD, local, x_local, dy_local, mean, invstd, gamma, y, dx,
                           dgamma, dbeta, flags);

  Expect(count == s.count(), where + ": global count " + std::to_string(count));
  ref::Vec mean_mag(c), one(c), rv_mag(c);
  for (size_t ch = 0; ch < c; ++ch) {
    mean_mag[ch] = ref::MeanMag(t.stats.mean[ch], t.stats.var[ch]);
    one[ch] = std::fabs(invstd1[ch]);
    rv_mag[ch] = std::fabs(rv1[ch]);
  }
  Near("mean", where, mean.data(), mean1.data(), mean_mag, 0, c, kMeanUlps);
  Near("invstd", where, invstd.data(), invstd1.data(), one, 0, c, kVarRel / ref::kUlp);
  Near("running_var", where, rv.data(), rv1.data(), rv_mag, 0, c, kVarRel / ref::kUlp + 16);
  ref::Vec rm_mag(c);
  for (size_t ch = 0; ch < c; ++ch)
    rm_mag[ch] = (1 - momentum) * std::fabs(rm0[ch]) + momentum * mean_mag[ch];
  Near("running_mean", where, rm.data(), rm1.data(), rm_mag, 0, c, kMeanUlps + 16);
  if (momentum == 1.0f && (flags & bnorm::kRunningVarBiased)) {
    // running_var is then the biased batch variance itself.
    ref::Vec var_mag(c);
    for (size_t ch = 0; ch < c; ++ch) var_mag[ch] = t.stats.var[ch];
    Near("var", where, rv.data(), var1.data(), var_mag, 0, c, kVarRel / ref::kUlp + 4);
  }
  Near("y", where, y.data(), y1.data(), t.y.mag, offset, n_local, kOutUlps);
  Near("dx", where, dx.data(), dx1.data(), g.dx.mag, offset, n_local, kOutUlps);
  Near("dgamma", where, dgamma.data(), dgamma1.data(), g.dgamma.mag, 0, c, kOutUlps);
  Near("dbeta", where, dbeta.data(), dbeta1.data(), g.dbeta.mag, 0, c, kOutUlps);

  // Bit-identical everywhere.
  std::vector<float> shared;
  for (const std::vector<float>* v : {&mean, &invstd, &rm, &rv, &dgamma, &dbeta})
    shared.insert(shared.end(), v->begin(), v->end());
  SameOnEveryRank("statistics, running statistics, dgamma, dbeta", where, shared);

  // The MPI reduction of partial statistics agrees with the rank-order merge.
  std::vector<bnorm::PartialStats> partial(c);
  bnorm::PartialStatsOf(local, x_local, partial);
  {
    bnorm::mpi::PartialStatsReduction reduction;
    MPI_Allreduce(MPI_IN_PLACE, partial.data(), static_cast<int>(c), reduction.type(),
                  reduction.op(), MPI_COMM_WORLD);
  }
  std::vector<float> reduced_mean(c);
  ref::Vec reduced_mag(c);
  for (size_t ch = 0; ch < c; ++ch) {
    reduced_mean[ch] = static_cast<float>(partial[ch].mean);
    Expect(partial[ch].count == static_cast<double>(s.count()), where + ": reduced count");
  }
  Near("mean (MPI_Allreduce)", where, reduced_mean.data(), mean.data(), mean_mag, 0, c, kMeanUlps);
}

// A rank with a bad argument makes every rank throw, nothing written, no deadlock.
void RunErrorCase() {
  const bnorm::Shape s{2, 3, 4, bnorm::Layout::kNCHW};
  std::vector<float> x(24, 1.0f), y(24, -5.0f), mean(3, -6.0f), invstd(3, -7.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5);
  const unsigned flags = g_rank == g_size - 1 ? 8u : 0u;  // an unknown flag bit on one rank
  bnorm_status status = bnorm_success;
  std::string message;
  try {
    bnorm::mpi::SyncForwardTraining(MPI_COMM_WORLD, s, x, y, {}, {}, 1e-5f, 0.1f, {}, {}, mean,
                                    invstd, flags);
  } catch (const bnorm::Error& e) {
    status = e.status();
    message = e.what();
  }
  Expect(status == bnorm_invalid_argument, "error case: status " + std::to_string(status));
  Expect(message.find(g_rank == g_size - 1 ? "flags" : "rank " + std::to_string(g_size - 1)) !=
             std::string::npos,
         "error case: message '" + message + "'");
  bool untouched = true;
  for (float v : y) untouched = untouched && v == -5.0f;
  for (float v : mean) untouched = untouched && v == -6.0f;
  Expect(untouched, "error case: outputs written");
}

// No channels: nothing to exchange but the headers; the count still adds up.
void RunNoChannels() {
  const bnorm::Shape s{g_rank + 1, 0, 4, bnorm::Layout::kNHWC};
  const int64_t count = bnorm::mpi::SyncForwardTraining(MPI_COMM_WORLD, s, {}, {}, {}, {}, 1e-5f,
                                                        0.1f, {}, {}, {}, {});
  bnorm::mpi::SyncBackward(MPI_COMM_WORLD, s, {}, {}, {}, {}, {}, {}, {}, {}, {});
  Expect(count == 4 * g_size * (g_size + 1) / 2, "no channels: count " + std::to_string(count));
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  using bnorm::Layout;
  const Case cases[] = {
      {{7, 5, 33, Layout::kNCHW}, false},
      {{9, 16, 3, Layout::kNCHW}, true},       // short planes: rows
      {{8, 3, 20000, Layout::kNCHW}, true},    // channels in chunks
      {{40, 1500, 1, Layout::kNCHW}, false},   // fully connected, wide rows
      {{3, 17, 31, Layout::kNHWC}, false},
      {{4, 1500, 2, Layout::kNHWC}, true},     // tiled rows
      {{2, 64, 700, Layout::kNHWC}, true},
  };
  try {
    for (const Case& tc : cases) {
      RunCase(tc, bnorm::kNone, 0.1f);
      RunCase(tc, bnorm::kFuseRelu | bnorm::kRunningVarBiased, 1.0f);
    }
    RunNoChannels();
    if (g_size > 1) RunErrorCase();
  } catch (const std::exception& e) {
    Expect(false, std::string("exception: ") + e.what());
  }
  long totals[2] = {g_checks, g_failures}, sums[2] = {0, 0};
  MPI_Allreduce(totals, sums, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) {
    std::printf("sync_bn_mpi_test: np=%d: %ld checks, %ld failed\n", g_size, sums[0], sums[1]);
  }
  MPI_Finalize();
  return sums[1] == 0 ? 0 : 1;
}
