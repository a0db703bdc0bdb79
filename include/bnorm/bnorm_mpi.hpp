// bnorm_mpi: synchronized batch norm over MPI, header-only, over the local steps of the
// C API (bnorm_partial_stats_f32 ... bnorm_backward_dx_f32). Each rank holds a slice of
// the batch; statistics and gradient sums are gathered from every rank and merged in
// rank order, so every rank gets bit-identical statistics, running statistics, dgamma
// and dbeta, whatever the order in which messages arrive. Needs MPI and C++14.
#ifndef BNORM_BNORM_MPI_HPP_
#define BNORM_BNORM_MPI_HPP_

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm {
namespace mpi {
namespace detail {

// What every rank tells the others before an exchange: whether its local step worked,
// its channel count and its count of values per channel (as doubles: one MPI type).
struct Header {
  double status, c, count;
};

inline void CheckMpi(int rc, const char* function, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(bnorm_internal_error,
              std::string(function) + ": " + call + " failed: " + std::string(text, len));
}

// Exchanges the headers of every rank (rank order) and throws on every rank, with the
// same message, if one rank's local step failed or the channel counts differ. Returns
// the sum of the counts in rank order. `local_error` is this rank's failure message.
inline double ExchangeHeaders(MPI_Comm comm, const char* function, Header local,
                              const std::string& local_error, std::vector<Header>& all) {
  int size = 0;
  CheckMpi(MPI_Comm_size(comm, &size), function, "MPI_Comm_size");
  all.resize(static_cast<size_t>(size));
  CheckMpi(MPI_Allgather(&local, 3, MPI_DOUBLE, all.data(), 3, MPI_DOUBLE, comm), function,
           "MPI_Allgather");
  double total = 0;
  for (int r = 0; r < size; ++r) {
    const Header& h = all[static_cast<size_t>(r)];
    if (h.status != bnorm_success) {
      if (local.status != bnorm_success) throw Error(static_cast<bnorm_status>(local.status),
                                                     local_error);
      throw Error(static_cast<bnorm_status>(h.status),
                  std::string(function) + ": rank " + std::to_string(r) +
                      " failed in its local step (" +
                      bnorm_status_string(static_cast<bnorm_status>(h.status)) + ")");
    }
    if (h.c != all[0].c) {
      throw Error(bnorm_invalid_argument,
                  std::string(function) + ": shape.c differs between ranks (rank 0: " +
                      std::to_string(static_cast<int64_t>(all[0].c)) + ", rank " +
                      std::to_string(r) + ": " + std::to_string(static_cast<int64_t>(h.c)) + ")");
    }
    total += h.count;
  }
  return total;
}

// Returns the header of a local step that ran `step` (which throws bnorm::Error).
template <class Step>
Header RunLocal(const char* function, const Shape& s, int64_t values_per_channel, Step step,
                std::string& error) {
  Header h{bnorm_success, static_cast<double>(s.c), static_cast<double>(s.count())};
  if (s.c < 0 || s.c > INT_MAX / values_per_channel) {
    h.status = bnorm_invalid_argument;
    h.c = 0;
    error = std::string(function) + ": shape.c: must be in [0, INT_MAX / " +
            std::to_string(values_per_channel) + "] for MPI counts (got " +
            std::to_string(s.c) + ")";
    return h;
  }
  try {
    step();
  } catch (const Error& e) {
    h.status = e.status();
    error = e.what();
  } catch (const std::exception& e) {
    h.status = bnorm_internal_error;
    error = std::string(function) + ": " + e.what();
  }
  return h;
}

// Per-thread buffers, grown as needed: no allocation per call once the largest layer ran.
template <typename T, int slot>
std::vector<T>& Buffer(size_t size) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return buffer;
}

}  // namespace detail

// Training forward of batch norm over the whole batch, the union of every rank's slice
// `x` (shape `s`: same c and layout on every rank; any n, 0 included; an NHWC slice may
// be any run of rows, {1, c, rows}). Writes y for the local slice; the global
// statistics to saved_mean / saved_invstd and the running statistics (each optional,
// as ForwardTraining) are bit-identical on every rank. A collective call: every rank
// of `comm` must make it. Errors: if the local step of one rank fails (its shape, x or
// flags), every rank throws bnorm::Error after the exchange and nothing is written
// anywhere; the other arguments are checked after the exchange, and a bad one throws
// on the ranks that pass it, before they write anything. Returns the global count of
// values per channel.
inline int64_t SyncForwardTraining(MPI_Comm comm, const Shape& s, Span<const float> x,
                                   Span<float> y, Span<const float> gamma,
                                   Span<const float> beta, float eps, float momentum,
                                   Span<float> running_mean, Span<float> running_var,
                                   Span<float> saved_mean, Span<float> saved_invstd,
                                   unsigned flags = kNone) {
  const char* fn = "bnorm::mpi::SyncForwardTraining";
  const size_t c = s.c > 0 ? static_cast<size_t>(s.c) : 0;
  std::vector<PartialStats>& local = detail::Buffer<PartialStats, 0>(c);
  std::string error;
  const detail::Header header = detail::RunLocal(fn, s, 3, [&] {
    PartialStatsOf(s, x, Span<PartialStats>(local.data(), c), flags);
  }, error);
  std::vector<detail::Header>& headers = detail::Buffer<detail::Header, 0>(0);
  const double total = detail::ExchangeHeaders(comm, fn, header, error, headers);
  const size_t ranks = headers.size();
  std::vector<PartialStats>& all = detail::Buffer<PartialStats, 1>(ranks * c + 1);
  const int per_rank = static_cast<int>(3 * c);
  if (c > 0) {  // the same c on every rank: checked by the header exchange
    detail::CheckMpi(MPI_Allgather(local.data(), per_rank, MPI_DOUBLE, all.data(), per_rank,
                                   MPI_DOUBLE, comm),
                     fn, "MPI_Allgather");
  }
  // Merge in rank order, starting from the empty set: the same bits on every rank.
  std::vector<PartialStats>& global = detail::Buffer<PartialStats, 2>(c);
  for (size_t ch = 0; ch < c; ++ch) global[ch] = PartialStats{0, 0, 0};
  for (size_t r = 0; r < ranks; ++r) {
    const Span<const PartialStats> part(all.data() + r * c, c);
    MergePartialStats(Span<const PartialStats>(global.data(), c), part,
                      Span<PartialStats>(global.data(), c));
  }
  std::vector<float>& stats = detail::Buffer<float, 3>(2 * c);
  const Span<float> mean = saved_mean.data() ? saved_mean : Span<float>(stats.data(), c);
  const Span<float> invstd = saved_invstd.data() ? saved_invstd : Span<float>(stats.data() + c, c);
  FinishStats(Span<const PartialStats>(global.data(), c), eps, momentum, running_mean,
              running_var, mean, invstd, flags);
  Normalize(s, x, y, Span<const float>(mean.data(), mean.size()),
            Span<const float>(invstd.data(), invstd.size()), gamma, beta, flags);
  return static_cast<int64_t>(total);
}

// Backward of SyncForwardTraining: dx for the local slice, dgamma and dbeta (each
// optional; bit-identical on every rank) of the whole batch. saved_mean / saved_invstd
// are the global statistics SyncForwardTraining wrote; y is needed with kFuseRelu.
// A collective call, with the error behaviour of SyncForwardTraining (the local step
// checks shape, x, dy, saved_mean, saved_invstd, y and flags).
inline void SyncBackward(MPI_Comm comm, const Shape& s, Span<const float> x,
                         Span<const float> dy, Span<const float> saved_mean,
                         Span<const float> saved_invstd, Span<const float> gamma,
                         Span<const float> y, Span<float> dx, Span<float> dgamma,
                         Span<float> dbeta, unsigned flags = kNone) {
  const char* fn = "bnorm::mpi::SyncBackward";
  const size_t c = s.c > 0 ? static_cast<size_t>(s.c) : 0;
  std::vector<double>& local = detail::Buffer<double, 0>(2 * c);  // sum_dy, sum_dy_xhat
  std::string error;
  const detail::Header header = detail::RunLocal(fn, s, 2, [&] {
    BackwardSums(s, x, dy, saved_mean, saved_invstd, y, Span<double>(local.data(), c),
                 Span<double>(local.data() + c, c), flags);
  }, error);
  std::vector<detail::Header>& headers = detail::Buffer<detail::Header, 0>(0);
  const double total = detail::ExchangeHeaders(comm, fn, header, error, headers);
  const size_t ranks = headers.size();
  std::vector<double>& all = detail::Buffer<double, 1>(2 * c * ranks + 1);
  const int per_rank = static_cast<int>(2 * c);
  if (c > 0) {
    detail::CheckMpi(MPI_Allgather(local.data(), per_rank, MPI_DOUBLE, all.data(), per_rank,
                                   MPI_DOUBLE, comm),
                     fn, "MPI_Allgather");
  }
  // Sums in rank order: the same bits on every rank.
  std::vector<double>& global = detail::Buffer<double, 2>(2 * c);
  for (size_t i = 0; i < 2 * c; ++i) {
    double sum = 0;
    for (size_t r = 0; r < ranks; ++r) sum += all[r * 2 * c + i];
    global[i] = sum;
  }
  BackwardDx(s, x, dy, saved_mean, saved_invstd, gamma, y,
             Span<const double>(global.data(), c), Span<const double>(global.data() + c, c),
             static_cast<int64_t>(total), dx, dgamma, dbeta, flags);
}

// An MPI datatype (3 MPI_DOUBLE) and a non-commutative reduction merging
// bnorm_partial_stats with Chan's formula, for MPI_Allreduce / MPI_Reduce on c
// channels: MPI_Allreduce(MPI_IN_PLACE, stats, c, r.type(), r.op(), comm). The result
// equals the rank-order merge up to rounding; how MPI brackets the merges (hence the
// last bits) is up to the implementation: SyncForwardTraining uses the gather instead.
// Create it after MPI_Init and destroy it before MPI_Finalize.
class PartialStatsReduction {
 public:
  PartialStatsReduction() {
    detail::CheckMpi(MPI_Type_contiguous(3, MPI_DOUBLE, &type_), "PartialStatsReduction",
                     "MPI_Type_contiguous");
    detail::CheckMpi(MPI_Type_commit(&type_), "PartialStatsReduction", "MPI_Type_commit");
    detail::CheckMpi(MPI_Op_create(&Merge, /*commute=*/0, &op_), "PartialStatsReduction",
                     "MPI_Op_create");
  }
  ~PartialStatsReduction() {
    MPI_Op_free(&op_);
    MPI_Type_free(&type_);
  }
  PartialStatsReduction(const PartialStatsReduction&) = delete;
  PartialStatsReduction& operator=(const PartialStatsReduction&) = delete;

  MPI_Datatype type() const { return type_; }
  MPI_Op op() const { return op_; }

 private:
  // inout = in (+) inout: MPI passes the lower ranks' values as `in`.
  static void Merge(void* in, void* inout, int* len, MPI_Datatype*) {
    bnorm_merge_partial_stats(*len, static_cast<const bnorm_partial_stats*>(in),
                              static_cast<bnorm_partial_stats*>(inout),
                              static_cast<bnorm_partial_stats*>(inout));
  }

  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  MPI_Op op_ = MPI_OP_NULL;
};

}  // namespace mpi
}  // namespace bnorm

#endif  // BNORM_BNORM_MPI_HPP_
