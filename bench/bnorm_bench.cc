// Google Benchmark suite of bnorm: operations x layouts x real network shapes, one row
// per target for the main shapes, cold and hot cache, oneDNN rows when available.
// Counters: bytes_per_second on the least DRAM traffic, and "roofline" = that rate /
// this binary's measured non-temporal copy bandwidth ("vs_copy": / plain copy).
// Extra flag: --bnorm_threads=K limits bnorm (and the copy roofline) to K threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/roofline.h"
#include "bench/workloads.h"
#include "bnorm/bnorm.h"

#ifndef BNORM_HAVE_DNNL
#define BNORM_HAVE_DNNL 0
#endif
#if BNORM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#endif

namespace bnorm {
namespace {

using workload::Op;
using workload::Workload;

roofline::Bandwidth g_bandwidth;  // measured once in main, before any benchmark
size_t g_pool_floats = 0;         // the largest rotation any registered benchmark needs

workload::Pool& GlobalPool() {
  static workload::Pool pool;
  return pool;
}

const char* LayoutName(bnorm_layout layout) { return layout == bnorm_nchw ? "nchw" : "nhwc"; }

// Returns whether `op` is meaningful on `w` in the default suite.
bool Applies(Op op, const Workload& w) {
  if (w.inference_only && op != Op::kInference && op != Op::kAffine) return false;
  return op != Op::kTraining || w.n * w.spatial >= 2;
}

// Sets bytes_per_second from `traffic_bytes` per iteration, and the dimensionless
// roofline (rate / non-temporal copy) and vs_copy (rate / plain copy) from the wall
// time of the timing loop, `seconds` (a kIsRate counter would print as "/s").
void SetCounters(benchmark::State& state, double traffic_bytes, double seconds) {
  const double bytes = traffic_bytes * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  if (g_bandwidth.copy_nt_gbs > 0 && seconds > 0) {
    const double gbs = bytes / seconds * 1e-9;
    state.counters["roofline"] = gbs / g_bandwidth.copy_nt_gbs;
    state.counters["vs_copy"] = gbs / g_bandwidth.copy_gbs;
  }
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times one bnorm operation. `target` empty: the library's best; otherwise it is
// selected for this benchmark and the default restored afterwards.
void BM_Bnorm(benchmark::State& state, Op op, const Workload& w, bnorm_layout layout,
              const std::string& target, bool cold) {
  if (!target.empty()) {
    if (bnorm_set_target(target.c_str()) != bnorm_success) {
      state.SkipWithError((target + " unsupported here: " + bnorm_last_error()).c_str());
      return;
    }
    if (target != bnorm_active_target()) {
      state.SkipWithError(
          ("selected " + target + " but dispatch runs " + bnorm_active_target()).c_str());
      bnorm_set_target("");
      return;
    }
  }
  GlobalPool().Reserve(g_pool_floats);
  const bnorm_shape shape{w.n, w.c, w.spatial, layout};
  workload::Runner runner(GlobalPool(), op, shape, cold, roofline::ColdBytes());
  bnorm_status st = runner.ok() ? runner.Run(0) : bnorm_out_of_memory;  // warm-up
  int64_t set = 1;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (st != bnorm_success) break;
    st = runner.Run(set++);
  }
  const double seconds = Seconds(start);
  if (st != bnorm_success) {
    state.SkipWithError((std::string(bnorm_status_string(st)) + ": " + bnorm_last_error()).c_str());
  } else {
    SetCounters(state, runner.TrafficBytes(), seconds);
    state.SetLabel(std::string(bnorm_active_target()) + " " + w.name);
  }
  if (!target.empty()) bnorm_set_target("");
}

#if BNORM_HAVE_DNNL
// Times oneDNN's batch normalization on the same shapes, buffers and traffic model:
// forward inference (global stats, scale, shift), forward training, backward (diffs of
// src, scale, shift). Threads are oneDNN's own runtime's (OpenMP in Debian's build).
void BM_Dnnl(benchmark::State& state, Op op, const Workload& w, bnorm_layout layout, bool cold) {
  using dnnl::memory;
  using dnnl::normalization_flags;
  using dnnl::prop_kind;
  try {
    GlobalPool().Reserve(g_pool_floats);
    const bnorm_shape shape{w.n, w.c, w.spatial, layout};
    workload::Runner runner(GlobalPool(), op, shape, cold, roofline::ColdBytes());
    if (!runner.ok()) {
      state.SkipWithError("out of memory");
      return;
    }
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const memory::desc md(
        {w.n, w.c, w.spatial, 1}, memory::data_type::f32,
        layout == bnorm_nchw ? memory::format_tag::nchw : memory::format_tag::nhwc);
    const memory::desc cd({w.c}, memory::data_type::f32, memory::format_tag::a);
    std::vector<float> mean(w.c, 0.0f), var(w.c, 1.0f), scale(w.c, 1.5f), shift(w.c, 0.25f),
        dscale(w.c), dshift(w.c);
    memory src(md, engine, runner.Buffer(0, 0)), dst(md, engine, runner.Buffer(0, 1)),
        diff_src(md, engine, runner.Buffer(0, 1));
    memory mean_m(cd, engine, mean.data()), var_m(cd, engine, var.data()),
        scale_m(cd, engine, scale.data()), shift_m(cd, engine, shift.data()),
        dscale_m(cd, engine, dscale.data()), dshift_m(cd, engine, dshift.data());
    const normalization_flags ss = normalization_flags::use_scale | normalization_flags::use_shift;
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
    if (op == Op::kInference) {
      const dnnl::batch_normalization_forward::primitive_desc pd(
          {prop_kind::forward_inference, md, 1e-5f, ss | normalization_flags::use_global_stats},
          engine);
      prim = dnnl::batch_normalization_forward(pd);
      args = {{DNNL_ARG_SRC, src},        {DNNL_ARG_DST, dst},       {DNNL_ARG_MEAN, mean_m},
              {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}};
    } else {
      const dnnl::batch_normalization_forward::primitive_desc fwd_pd(
          {prop_kind::forward_training, md, 1e-5f, ss}, engine);
      if (op == Op::kTraining) {
        prim = dnnl::batch_normalization_forward(fwd_pd);
        args = {{DNNL_ARG_SRC, src},        {DNNL_ARG_DST, dst},       {DNNL_ARG_MEAN, mean_m},
                {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}};
      } else {
        const dnnl::batch_normalization_backward::primitive_desc pd(
            {prop_kind::backward, md, md, 1e-5f, ss}, engine, fwd_pd);
        prim = dnnl::batch_normalization_backward(pd);
        // oneDNN 2.6 refuses to execute (invalid arguments) unless SHIFT is passed too.
        args = {{DNNL_ARG_SRC, src},
                {DNNL_ARG_DIFF_DST, dst},
                {DNNL_ARG_MEAN, mean_m},
                {DNNL_ARG_VARIANCE, var_m},
                {DNNL_ARG_SCALE, scale_m},
                {DNNL_ARG_SHIFT, shift_m},
                {DNNL_ARG_DIFF_SRC, diff_src},
                {DNNL_ARG_DIFF_SCALE, dscale_m},
                {DNNL_ARG_DIFF_SHIFT, dshift_m}};
      }
    }
    // Points the tensors at buffer set `set` (x; y or dy; dx) and runs once.
    auto run = [&](int64_t set) {
      src.set_data_handle(runner.Buffer(set, 0));
      dst.set_data_handle(runner.Buffer(set, 1));
      if (op == Op::kBackward) diff_src.set_data_handle(runner.Buffer(set, 2));
      prim.execute(stream, args);
      stream.wait();
    };
    run(0);
    int64_t set = 1;
    const auto start = std::chrono::steady_clock::now();
    for (auto _ : state) run(set++);
    SetCounters(state, runner.TrafficBytes(), Seconds(start));
    state.SetLabel("oneDNN " + w.name);
  } catch (const dnnl::error& e) {
    state.SkipWithError((std::string("oneDNN: ") + e.what()).c_str());
  }
}
#endif  // BNORM_HAVE_DNNL

// Registers the suite. Names: op/layout/NxCxS/target/cache.
void RegisterAll() {
  const std::vector<Workload> shapes = workload::DefaultWorkloads();
  // The main shapes get one row per compiled target (unsupported ones skip).
  auto is_main = [](const Workload& w) {
    return (w.c == 256 && w.spatial == 56 * 56 && w.n == 32) || w.spatial == 1;
  };
  std::vector<std::string> targets;
  {
    const std::string list = bnorm_compiled_targets();
    size_t pos = 0;
    while (pos < list.size()) {
      const size_t end = std::min(list.find(' ', pos), list.size());
      if (end > pos) targets.push_back(list.substr(pos, end - pos));
      pos = end + 1;
    }
  }
  const size_t cold_bytes = roofline::ColdBytes();
  for (const Op op : workload::kAllOps) {
    for (const Workload& w : shapes) {
      if (!Applies(op, w)) continue;
      for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
        const std::string base = std::string(workload::OpName(op)) + "/" + LayoutName(layout) +
                                 "/" + workload::ShapeString(w.n, w.c, w.spatial) + "/";
        g_pool_floats = std::max(g_pool_floats,
                                 workload::PoolFloats(op, workload::Elements(w), cold_bytes, true));
        std::vector<std::string> row_targets{""};
        if (is_main(w)) row_targets.insert(row_targets.end(), targets.begin(), targets.end());
        for (const std::string& target : row_targets) {
          for (const bool cold : {true, false}) {
            if (!cold && !target.empty()) continue;  // hot rows for the best target only
            const std::string name =
                base + (target.empty() ? "best" : target) + (cold ? "/cold" : "/hot");
            benchmark::RegisterBenchmark(name.c_str(), BM_Bnorm, op, w, layout, target, cold)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
#if BNORM_HAVE_DNNL
        if (op == Op::kInference || op == Op::kTraining || op == Op::kBackward) {
          for (const bool cold : {true, false}) {
            benchmark::RegisterBenchmark((base + "onednn" + (cold ? "/cold" : "/hot")).c_str(),
                                         BM_Dnnl, op, w, layout, cold)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
          }
        }
#endif
      }
    }
  }
}

}  // namespace
}  // namespace bnorm

int main(int argc, char** argv) {
  // Our one flag, --bnorm_threads=K (tbb::global_control), is taken out before Google
  // Benchmark parses the rest.
  std::unique_ptr<tbb::global_control> thread_limit;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const char* kFlag = "--bnorm_threads=";
    if (std::strncmp(argv[i], kFlag, std::strlen(kFlag)) == 0) {
      const int threads = std::atoi(argv[i] + std::strlen(kFlag));
      if (threads < 1) {
        std::fprintf(stderr, "bnorm_bench: %s: expected a thread count >= 1\n", argv[i]);
        return 2;
      }
      thread_limit = std::make_unique<tbb::global_control>(
          tbb::global_control::max_allowed_parallelism, threads);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bnorm::RegisterAll();
  namespace rl = bnorm::roofline;
  bnorm::g_bandwidth = rl::MeasureCopy();
  benchmark::AddCustomContext("bnorm_copy_GBps", std::to_string(bnorm::g_bandwidth.copy_gbs));
  benchmark::AddCustomContext("bnorm_copy_nt_GBps", std::to_string(bnorm::g_bandwidth.copy_nt_gbs));
  benchmark::AddCustomContext("bnorm_roofline",
                              "copy " + std::to_string(bnorm::g_bandwidth.array_bytes / rl::kMiB) +
                                  " MiB x2, " + std::to_string(bnorm::g_bandwidth.threads) +
                                  " threads, best of " + std::to_string(bnorm::g_bandwidth.runs) +
                                  "; roofline counter = bytes_per_second / "
                                  "non-temporal copy, vs_copy = / plain copy");
  benchmark::AddCustomContext("bnorm_traffic_model",
                              "least DRAM traffic out of cache: moments 1T, inference/affine 2T, "
                              "training 3T, backward 5T");
  benchmark::AddCustomContext("bnorm_cold_rotation_MiB",
                              std::to_string(rl::ColdBytes() / rl::kMiB));
  benchmark::AddCustomContext("bnorm_supported_targets", bnorm_supported_targets());
  benchmark::AddCustomContext("bnorm_threads", std::to_string(rl::Threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
