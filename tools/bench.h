// `bnorm bench`: times every operation on real network shapes, cold cache, and reports
// GB/s on the minimal traffic (workload::TrafficModel) and the fraction of this
// machine's copy bandwidth; with oneDNN built in (BNORM_HAVE_DNNL), oneDNN's batch
// normalization on the same shapes and buffers beside it, and the ratio.
#ifndef BNORM_TOOLS_BENCH_H_
#define BNORM_TOOLS_BENCH_H_

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/roofline.h"
#include "bench/workloads.h"
#include "bnorm/bnorm.h"
#include "tools/cli_util.h"

#ifndef BNORM_HAVE_DNNL
#define BNORM_HAVE_DNNL 0
#endif
#if BNORM_HAVE_DNNL
#include "bench/dnnl_peer.h"
#endif

namespace bnorm {
namespace tools {

struct BenchOptions {
  std::vector<workload::Workload> shapes;  // empty: the default set
  std::vector<bnorm_layout> layouts{bnorm_nchw, bnorm_nhwc};
  std::vector<workload::Op> ops;  // empty: all
  int threads = 0;                // 0: TBB's default
  std::string target;             // empty: the library's choice
  int reps = 0;                   // 0: 15, or 3 with --quick
  bool quick = false;
  bool hot = false;
  bool onednn = true;  // time oneDNN beside bnorm when it is built in
  std::string json_path;
};

namespace bench {

struct Row {
  workload::Workload shape;
  bnorm_layout layout;
  workload::Op op;
};

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

inline const char* LayoutName(bnorm_layout layout) {
  return layout == bnorm_nchw ? "nchw" : "nhwc";
}

// Whether this build can time oneDNN beside bnorm.
constexpr bool kHaveDnnl = BNORM_HAVE_DNNL != 0;

// Returns "2.6.3 (OpenMP)" when oneDNN is built in, "" otherwise.
inline std::string DnnlVersion() {
#if BNORM_HAVE_DNNL
  return peer::DnnlVersion();
#else
  return "";
#endif
}

// Times `reps` calls of each of `runs`, each call on its own buffer sets (counted from
// *next_set on, so that a cold rotation goes on). The runs take turns in blocks of
// back-to-back calls (as a program calls one library), in the order A B .. B A, so that
// drift of the machine spreads evenly over them and the row ends with run 0 (bnorm).
// Before each block (but the middle one, which repeats the run just timed): a pause of
// workload::kPeerSettle after another run (the other library's idle threads stop
// spinning: on a machine with as many threads as CPUs a spinning pool takes a CPU from
// the timed call), and untimed calls for 20 ms
// (at least 2) that bring the block's own pool up to speed (after an idle pause
// oneTBB's second thread joined bnorm's calls only after a few ms of calls on a 2-CPU
// VM). Returns the times in microseconds per run; false as soon as a run returns false.
inline bool TimeInterleaved(const std::vector<std::function<bool(int64_t)>>& runs, int reps,
                            int64_t* next_set, std::vector<std::vector<double>>* us) {
  constexpr std::chrono::milliseconds kWarm{20};
  us->assign(runs.size(), {});
  const size_t k = runs.size();
  const int first_half = (reps + 1) / 2;
  for (size_t block = 0; block < 2 * k; ++block) {
    const size_t i = block < k ? block : 2 * k - 1 - block;
    if (block != k) {  // block k repeats the run just timed: its pool is up to speed
      if (block > 0) std::this_thread::sleep_for(workload::kPeerSettle);
      const auto warm_start = std::chrono::steady_clock::now();
      for (int warm = 0; warm < 2 || std::chrono::steady_clock::now() - warm_start < kWarm;
           ++warm) {
        if (!runs[i]((*next_set)++)) return false;
      }
    }
    for (int call = block < k ? 0 : first_half; call < (block < k ? first_half : reps); ++call) {
      const auto t0 = std::chrono::steady_clock::now();
      const bool ok = runs[i]((*next_set)++);
      const std::chrono::duration<double, std::micro> t = std::chrono::steady_clock::now() - t0;
      if (!ok) return false;
      (*us)[i].push_back(t.count());
    }
  }
  return true;
}

}  // namespace bench

// Runs `bnorm bench`; returns the process exit code.
inline int RunBench(const BenchOptions& options) {
  using bench::Row;
  using workload::Op;
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<tbb::global_control> thread_limit;
  if (options.threads > 0) {
    thread_limit = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, options.threads);
  }
  if (!options.target.empty()) {
    const bnorm_status st = bnorm_set_target(options.target.c_str());
    if (st != bnorm_success) {
      throw UsageError{"--target " + options.target + ": " + bnorm_status_string(st) + ": " +
                       bnorm_last_error() + " (supported: " + bnorm_supported_targets() + ")"};
    }
  }
  const int reps = options.reps > 0 ? options.reps : options.quick ? 3 : 15;
  const bool user_shapes = !options.shapes.empty();
  const std::vector<workload::Workload> shapes = user_shapes     ? options.shapes
                                                 : options.quick ? workload::QuickWorkloads()
                                                                 : workload::DefaultWorkloads();
  std::vector<Op> ops = options.ops;
  if (ops.empty()) ops.assign(std::begin(workload::kAllOps), std::end(workload::kAllOps));

  std::vector<Row> rows;
  for (const workload::Workload& w : shapes) {
    for (const bnorm_layout layout : options.layouts) {
      for (const Op op : ops) {
        const bool inference = op == Op::kInference || op == Op::kAffine;
        if (w.inference_only && !inference && options.ops.empty()) continue;
        if (op == Op::kTraining && w.n * w.spatial < 2) {
          std::printf("skipping training on %s: it needs n * spatial >= 2\n",
                      workload::ShapeString(w.n, w.c, w.spatial).c_str());
          continue;
        }
        rows.push_back({w, layout, op});
      }
    }
  }

  const size_t cold_bytes = options.quick ? 8 * roofline::kMiB : roofline::ColdBytes();
  std::printf("bnorm bench: %s\n", CpuModel().c_str());
  std::printf(
      "target %s, threads %d, %s, median of %d reps\n", bnorm_active_target(), roofline::Threads(),
      options.hot ? "hot cache (same buffers every rep)"
                  : ("cold cache (rotating over " + std::to_string(cold_bytes / roofline::kMiB) +
                     " MiB of buffers; LLC " +
                     std::to_string(roofline::LastLevelCacheBytes() / roofline::kMiB) + " MiB)")
                        .c_str(),
      reps);
  const double load = LoadAverage();
  if (load >= 0.5) {
    std::printf(
        "warning: load average %.2f on %u cpus: other processes compete for cores and "
        "memory bandwidth; timings will be noisy\n",
        load, std::thread::hardware_concurrency());
  }
  std::fflush(stdout);
  const roofline::Bandwidth bw =
      options.quick ? roofline::MeasureCopy(16 * roofline::kMiB, 2) : roofline::MeasureCopy();
  std::printf(
      "roofline: copy %.1f GB/s, copy with non-temporal stores %.1f GB/s (%s, threads %d, "
      "2 x %zu MiB, best of %d%s)\n",
      bw.copy_gbs, bw.copy_nt_gbs, bw.isa, bw.threads, bw.array_bytes / roofline::kMiB, bw.runs,
      !bw.nt_available ? "; no streaming stores in this build: both are plain copies"
      : options.quick  ? "; --quick: too small to mean anything"
                       : "");
  std::printf("GB/s = bytes moved / median time, counting the %s\n", workload::TrafficModel());
  const bool with_dnnl = bench::kHaveDnnl && options.onednn;
  if (with_dnnl) {
#if BNORM_HAVE_DNNL
    const bool threads_set = peer::SetDnnlThreads(roofline::Threads());
    std::printf(
        "oneDNN %s beside bnorm on the same buffers and shapes (%s); x oneDNN = bnorm GB/s / "
        "oneDNN GB/s, > 1: bnorm faster; - = no oneDNN counterpart (affine, moments)\n",
        bench::DnnlVersion().c_str(),
        threads_set ? ("threads " + std::to_string(roofline::Threads())).c_str()
                    : "its default threads");
#endif
  } else if (!bench::kHaveDnnl) {
    std::printf(
        "oneDNN: not built in (install libdnnl-dev and reconfigure: `bash tools/run.sh bench` "
        "does both)\n");
  }
  std::printf("\n");
  if (with_dnnl) {
    std::printf("%-9s %-6s %-15s %8s %11s %11s %7s %6s %6s %11s %9s  %s\n", "op", "layout", "NxCxS",
                "MB", "median us", "best us", "GB/s", "%copy", "%nt", "oneDNN GB/s", "x oneDNN",
                "shape");
  } else {
    std::printf("%-9s %-6s %-15s %8s %11s %11s %7s %6s %6s  %s\n", "op", "layout", "NxCxS", "MB",
                "median us", "best us", "GB/s", "%copy", "%nt", "shape");
  }
  std::fflush(stdout);

  // One pool for every row, sized for the largest rotation up front.
  workload::Pool pool;
  size_t pool_floats = 0;
  for (const Row& row : rows) {
    pool_floats = std::max(pool_floats, workload::PoolFloats(row.op, workload::Elements(row.shape),
                                                             cold_bytes, !options.hot));
  }
  if (pool.Reserve(pool_floats) == nullptr) {
    std::fprintf(stderr, "bnorm bench: cannot allocate %zu MiB of buffers\n",
                 pool_floats * sizeof(float) / roofline::kMiB);
    return kExitFailure;
  }

  bool failed = false;
  std::map<std::string, std::vector<double>> ratios;  // "op layout" -> bnorm / oneDNN
  Json json;
  json.BeginObject();
  json.Key("tool").String("bnorm bench");
  json.Key("cpu").String(CpuModel());
  json.Key("target").String(bnorm_active_target());
  json.Key("threads").Int(roofline::Threads());
  json.Key("cache").String(options.hot ? "hot" : "cold");
  json.Key("reps").Int(reps);
  json.Key("copy_gbs").Number(bw.copy_gbs);
  json.Key("copy_nt_gbs").Number(bw.copy_nt_gbs);
  json.Key("load_average").Number(load);
  json.Key("traffic_model").String(workload::TrafficModel());
  json.Key("onednn").String(with_dnnl ? bench::DnnlVersion() : "");
  json.Key("rows").BeginArray();
  for (const Row& row : rows) {
    const bnorm_shape shape{row.shape.n, row.shape.c, row.shape.spatial, row.layout};
    workload::Runner runner(pool, row.op, shape, !options.hot, cold_bytes);
    const std::string dims = workload::ShapeString(row.shape.n, row.shape.c, row.shape.spatial);
    // bnorm, and oneDNN on the same runner's buffers, interleaved.
    bnorm_status st = bnorm_success;
    std::vector<std::function<bool(int64_t)>> runs{[&](int64_t set) {
      st = runner.Run(set);
      return st == bnorm_success;
    }};
    double dnnl_median = 0, dnnl_gbs = 0;
    std::string dnnl_error;
#if BNORM_HAVE_DNNL
    std::unique_ptr<peer::DnnlRunner> dnnl;
    if (with_dnnl && peer::DnnlHasOp(row.op)) {
      try {
        dnnl = std::make_unique<peer::DnnlRunner>(runner, row.op, shape);
        runs.push_back([&](int64_t set) {
          if (dnnl_error.empty()) {
            try {
              dnnl->Run(set);
            } catch (const dnnl::error& e) {
              dnnl_error = e.what();
            }
          }
          return true;
        });
      } catch (const dnnl::error& e) {
        dnnl_error = e.what();
      }
    }
#endif
    int64_t next_set = 0;
    std::vector<std::vector<double>> times;
    bench::TimeInterleaved(runs, reps, &next_set, &times);
    if (st != bnorm_success) {
      failed = true;
      std::printf("%-9s %-6s %-15s  FAILED: %s: %s\n", workload::OpName(row.op),
                  bench::LayoutName(row.layout), dims.c_str(), bnorm_status_string(st),
                  bnorm_last_error());
      std::fflush(stdout);
      continue;
    }
    const std::vector<double>& us = times[0];
    const double median = bench::Median(us);
    const double best = *std::min_element(us.begin(), us.end());
    const double gbs = runner.TrafficBytes() / median * 1e-3;
    if (times.size() > 1 && dnnl_error.empty()) {
      dnnl_median = bench::Median(times[1]);
      dnnl_gbs = runner.TrafficBytes() / dnnl_median * 1e-3;
      ratios[std::string(workload::OpName(row.op)) + " " + bench::LayoutName(row.layout)].push_back(
          gbs / dnnl_gbs);
    }
    if (with_dnnl) {
      char dnnl_gbs_text[32] = "-", ratio_text[32] = "-";
      if (dnnl_gbs > 0) {
        std::snprintf(dnnl_gbs_text, sizeof(dnnl_gbs_text), "%.1f", dnnl_gbs);
        std::snprintf(ratio_text, sizeof(ratio_text), "%.2fx", gbs / dnnl_gbs);
      } else if (!dnnl_error.empty()) {
        std::snprintf(dnnl_gbs_text, sizeof(dnnl_gbs_text), "error");
      }
      std::printf("%-9s %-6s %-15s %8.2f %11.1f %11.1f %7.1f %5.0f%% %5.0f%% %11s %9s  %s\n",
                  workload::OpName(row.op), bench::LayoutName(row.layout), dims.c_str(),
                  runner.TensorBytes() * 1e-6, median, best, gbs,
                  bw.copy_gbs > 0 ? 100 * gbs / bw.copy_gbs : 0.0,
                  bw.copy_nt_gbs > 0 ? 100 * gbs / bw.copy_nt_gbs : 0.0, dnnl_gbs_text, ratio_text,
                  row.shape.name.c_str());
      if (!dnnl_error.empty()) std::printf("  oneDNN failed: %s\n", dnnl_error.c_str());
    } else {
      std::printf("%-9s %-6s %-15s %8.2f %11.1f %11.1f %7.1f %5.0f%% %5.0f%%  %s\n",
                  workload::OpName(row.op), bench::LayoutName(row.layout), dims.c_str(),
                  runner.TensorBytes() * 1e-6, median, best, gbs,
                  bw.copy_gbs > 0 ? 100 * gbs / bw.copy_gbs : 0.0,
                  bw.copy_nt_gbs > 0 ? 100 * gbs / bw.copy_nt_gbs : 0.0, row.shape.name.c_str());
    }
    std::fflush(stdout);
    json.BeginObject();
    json.Key("op").String(workload::OpName(row.op));
    json.Key("layout").String(bench::LayoutName(row.layout));
    json.Key("n").Int(row.shape.n);
    json.Key("c").Int(row.shape.c);
    json.Key("spatial").Int(row.shape.spatial);
    json.Key("name").String(row.shape.name);
    json.Key("tensor_bytes").Int(static_cast<int64_t>(runner.TensorBytes()));
    json.Key("traffic_bytes").Number(runner.TrafficBytes());
    json.Key("median_us").Number(median);
    json.Key("best_us").Number(best);
    json.Key("gbs").Number(gbs);
    json.Key("fraction_of_copy").Number(bw.copy_gbs > 0 ? gbs / bw.copy_gbs : 0.0);
    json.Key("fraction_of_nt_copy").Number(bw.copy_nt_gbs > 0 ? gbs / bw.copy_nt_gbs : 0.0);
    if (dnnl_gbs > 0) {
      json.Key("onednn_median_us").Number(dnnl_median);
      json.Key("onednn_gbs").Number(dnnl_gbs);
      json.Key("x_onednn").Number(gbs / dnnl_gbs);
    } else if (!dnnl_error.empty()) {
      json.Key("onednn_error").String(dnnl_error);
    }
    json.EndObject();
  }
  json.EndArray();
  // The roofline again: if the machine's bandwidth moved during the run (other load),
  // the percentages above are not to be trusted.
  const roofline::Bandwidth end_bw = options.quick
                                         ? roofline::MeasureCopy(16 * roofline::kMiB, 2)
                                         : roofline::MeasureCopy(roofline::CopyArrayBytes(), 3);
  const double drift = bw.copy_nt_gbs > 0 ? end_bw.copy_nt_gbs / bw.copy_nt_gbs - 1 : 0;
  std::printf("\nroofline at the end: copy %.1f GB/s, non-temporal %.1f GB/s (%+.0f%%)%s\n",
              end_bw.copy_gbs, end_bw.copy_nt_gbs, 100 * drift,
              std::abs(drift) > 0.15 ? ": bandwidth changed during the run, rerun on a quiet "
                                       "machine"
                                     : "");
  if (!ratios.empty()) {
    std::printf("bnorm / oneDNN, geometric mean over the shapes above:");
    for (const auto& entry : ratios) {
      double log_sum = 0;
      for (const double x : entry.second) log_sum += std::log(x);
      std::printf(" %s %.2fx;", entry.first.c_str(), std::exp(log_sum / entry.second.size()));
    }
    std::printf("\n");
  }
  json.Key("copy_gbs_at_end").Number(end_bw.copy_gbs);
  json.Key("copy_nt_gbs_at_end").Number(end_bw.copy_nt_gbs);
  json.EndObject();
  const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
  std::printf("%zu rows in %.1f s%s\n", rows.size(), seconds.count(),
              failed ? "; some rows FAILED" : "");
  if (!options.json_path.empty()) {
    if (!json.WriteFile(options.json_path)) {
      std::fprintf(stderr, "bnorm bench: cannot write %s\n", options.json_path.c_str());
      return kExitFailure;
    }
    std::printf("wrote %s\n", options.json_path.c_str());
  }
  return failed ? kExitFailure : 0;
}

}  // namespace tools
}  // namespace bnorm

#endif  // BNORM_TOOLS_BENCH_H_
