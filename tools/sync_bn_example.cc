// Synchronized batch norm over MPI: a few SGD steps of a tiny model (batch norm with
// fused ReLU, then a linear layer to one output, squared loss) on synthetic float32
// data, once in one process on the whole batch (plain bnorm calls) and once with the
// batch split unevenly over the ranks of MPI_COMM_WORLD (bnorm::mpi::SyncForwardTraining
// / SyncBackward). Rank 0 prints the loss of every step for both; they agree to float32
// rounding, and the program fails if they do not.
//
//   mpirun -np 4 build/tools/sync_bn_example     # both curves (the 4-rank one and the
//                                                # single-process one, run on rank 0)
//   build/tools/sync_bn_example --single         # the single-process curve, no MPI
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "bnorm/bnorm_mpi.hpp"

namespace {

constexpr int64_t kBatch = 64, kFeatures = 8;
constexpr int kSteps = 8;
constexpr float kEps = 1e-5f, kMomentum = 0.1f, kLearningRate = 0.1f;

// One step's synthetic batch: features with their own scale and offset, a target that
// depends on them nonlinearly. The same on every rank (seeded by the step).
void MakeBatch(int step, std::vector<float>& x, std::vector<float>& target) {
  std::mt19937 rng(1234u + static_cast<unsigned>(step));
  std::normal_distribution<double> normal;
  x.resize(kBatch * kFeatures);
  target.resize(kBatch);
  for (int64_t i = 0; i < kBatch; ++i) {
    double t = 0;
    for (int64_t f = 0; f < kFeatures; ++f) {
      const double v = normal(rng);
      x[i * kFeatures + f] = static_cast<float>(10.0 * (f + 1) + (f + 1) * v);  // NCHW, spatial 1
      t += (f % 2 ? 0.5 : -0.25) * std::fmax(v, 0.0);
    }
    target[i] = static_cast<float>(t + 0.05 * normal(rng));
  }
}

// The parameters and the running statistics of the model.
struct Model {
  std::vector<float> gamma = std::vector<float>(kFeatures, 1.0f);
  std::vector<float> beta = std::vector<float>(kFeatures, 0.0f);
  std::vector<float> running_mean = std::vector<float>(kFeatures, 0.0f);
  std::vector<float> running_var = std::vector<float>(kFeatures, 1.0f);
  std::vector<float> w = std::vector<float>(kFeatures, 0.1f);
  float b = 0.0f;
};

// Sums `local` over the ranks, in rank order: the same bits on every rank.
void SumInRankOrder(MPI_Comm comm, std::vector<double>& local) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  std::vector<double> all(local.size() * static_cast<size_t>(size));
  MPI_Allgather(local.data(), static_cast<int>(local.size()), MPI_DOUBLE, all.data(),
                static_cast<int>(local.size()), MPI_DOUBLE, comm);
  for (size_t i = 0; i < local.size(); ++i) {
    double sum = 0;
    for (int r = 0; r < size; ++r) sum += all[r * local.size() + i];
    local[i] = sum;
  }
}

// Runs one SGD step on images [first, first + rows) of the batch and returns the loss of
// the whole batch. With comm == MPI_COMM_NULL it is the single-process model (plain
// bnorm calls, whole batch); otherwise every rank of comm holds its own slice.
double Step(MPI_Comm comm, Model& m, const std::vector<float>& batch_x,
            const std::vector<float>& batch_t, int64_t first, int64_t rows) {
  const bnorm::Shape shape{rows, kFeatures, 1, bnorm::Layout::kNCHW};
  const bnorm::Span<const float> x(batch_x.data() + first * kFeatures,
                                   static_cast<size_t>(rows * kFeatures));
  const float* t = batch_t.data() + first;
  const unsigned flags = bnorm::kFuseRelu;
  std::vector<float> h(static_cast<size_t>(rows * kFeatures)), mean(kFeatures),
      invstd(kFeatures);
  if (comm == MPI_COMM_NULL) {
    bnorm::ForwardTraining(shape, x, h, m.gamma, m.beta, kEps, kMomentum, m.running_mean,
                           m.running_var, mean, invstd, flags);
  } else {
    bnorm::mpi::SyncForwardTraining(comm, shape, x, h, m.gamma, m.beta, kEps, kMomentum,
                                    m.running_mean, m.running_var, mean, invstd, flags);
  }
  // Linear layer and loss = sum((p - t)^2) / (2 * batch); local sums first.
  std::vector<float> p(static_cast<size_t>(rows));
  std::vector<double> sums(2 + kFeatures, 0.0);  // loss, db, dw[f]
  for (int64_t i = 0; i < rows; ++i) {
    float v = m.b;
    for (int64_t f = 0; f < kFeatures; ++f) v += m.w[f] * h[i * kFeatures + f];
    p[i] = v;
    const double e = static_cast<double>(v) - t[i];
    sums[0] += e * e;
  }
  std::vector<float> dp(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    dp[i] = static_cast<float>((static_cast<double>(p[i]) - t[i]) / kBatch);
    sums[1] += dp[i];
    for (int64_t f = 0; f < kFeatures; ++f) sums[2 + f] += dp[i] * h[i * kFeatures + f];
  }
  if (comm != MPI_COMM_NULL) SumInRankOrder(comm, sums);
  // Gradient into the batch norm output, then batch norm's backward (no dx needed: the
  // input is data).
  std::vector<float> dh(static_cast<size_t>(rows * kFeatures)), dgamma(kFeatures),
      dbeta(kFeatures);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t f = 0; f < kFeatures; ++f) dh[i * kFeatures + f] = dp[i] * m.w[f];
  if (comm == MPI_COMM_NULL) {
    bnorm::Backward(shape, x, dh, mean, invstd, m.gamma, h, {}, dgamma, dbeta, flags);
  } else {
    bnorm::mpi::SyncBackward(comm, shape, x, dh, mean, invstd, m.gamma, h, {}, dgamma, dbeta,
                             flags);
  }
  // SGD.
  m.b -= kLearningRate * static_cast<float>(sums[1]);
  for (int64_t f = 0; f < kFeatures; ++f) {
    m.w[f] -= kLearningRate * static_cast<float>(sums[2 + f]);
    m.gamma[f] -= kLearningRate * dgamma[f];
    m.beta[f] -= kLearningRate * dbeta[f];
  }
  return sums[0] / (2.0 * kBatch);
}

std::vector<double> Train(MPI_Comm comm, int64_t first, int64_t rows) {
  Model m;
  std::vector<double> losses;
  std::vector<float> x, t;
  for (int step = 0; step < kSteps; ++step) {
    MakeBatch(step, x, t);
    losses.push_back(Step(comm, m, x, t, first, rows));
  }
  return losses;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--single") == 0) {
    const std::vector<double> single = Train(MPI_COMM_NULL, 0, kBatch);
    std::printf("step  loss (1 process, batch %lld)\n", static_cast<long long>(kBatch));
    for (int s = 0; s < kSteps; ++s) std::printf("%4d  %.7g\n", s, single[s]);
    return 0;
  }
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Uneven slices: rank r holds about (r + 1) / (1 + 2 + ... + size) of the batch.
  std::vector<int64_t> rows(static_cast<size_t>(size));
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    rows[r] = kBatch * 2 * (r + 1) / (size * (size + 1));
    total += rows[r];
  }
  rows[size - 1] += kBatch - total;
  int64_t first = 0;
  for (int r = 0; r < rank; ++r) first += rows[r];
  const std::vector<double> synced = Train(MPI_COMM_WORLD, first, rows[rank]);
  int status = 0;
  if (rank == 0) {
    const std::vector<double> single = Train(MPI_COMM_NULL, 0, kBatch);
    std::printf("batch %lld split over %d ranks as", static_cast<long long>(kBatch), size);
    for (int r = 0; r < size; ++r) std::printf(" %lld", static_cast<long long>(rows[r]));
    std::printf("\nstep  loss (1 process)  loss (%d ranks)  relative difference\n", size);
    double worst = 0;
    for (int s = 0; s < kSteps; ++s) {
      const double diff = std::fabs(synced[s] - single[s]) / std::fabs(single[s]);
      worst = std::fmax(worst, diff);
      std::printf("%4d  %16.7g  %14.7g  %.1e\n", s, single[s], synced[s], diff);
    }
    // Float32 rounding: the two runs round the statistics and sums differently, by a
    // few ulps (6e-8) per step; 1e-6 is about 16 ulps.
    status = worst <= 1e-6 ? 0 : 1;
    std::printf("%s: largest relative difference %.1e (limit 1e-6)\n", status ? "FAIL" : "OK",
                worst);
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return status;
}
