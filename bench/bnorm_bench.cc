// Google Benchmark suite of bnorm: every operation x layout x real network shape
// (workload::DefaultWorkloads: ResNet-50 stages, batch-1 inference, BatchNorm1d, large
// spatial), cold cache (rotating over >= 4x the LLC, at least 256 MiB) and hot; one row
// per compiled target for the main shapes; oneDNN rows on the same shapes, layouts and
// buffers when built with it (for NCHW also "onednn16c": oneDNN in its blocked nChw16c
// layout, where its JIT kernels run; on plain NCHW oneDNN 2.6 runs generic C++ code).
// Counters: bytes_per_second on the minimal traffic (workload::TrafficModel: inference
// and affine 2T, training 3T, backward 3T, moments 1T), "roofline" = that rate / this
// binary's non-temporal copy bandwidth (measured at start), "vs_copy" = / plain copy,
// and on bnorm rows "x_onednn" = bnorm rate / oneDNN rate of the same case (measured
// just before, so it is missing when a filter leaves the oneDNN row out).
// A summary table (bnorm vs oneDNN per case, then GB/s per target) ends the run, on
// stdout (stderr when --benchmark_format is not console).
// Extra flag: --bnorm_threads=K limits bnorm, oneDNN and the copy roofline to K threads.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/roofline.h"
#include "bench/workloads.h"
#include "bnorm/bnorm.h"

#ifndef BNORM_HAVE_DNNL
#define BNORM_HAVE_DNNL 0
#endif
#if BNORM_HAVE_DNNL
#include "bench/dnnl_peer.h"
#endif

namespace bnorm {
namespace {

using workload::Op;
using workload::Workload;

using workload::DType;

roofline::Bandwidth g_bandwidth;  // measured once in main, before any benchmark
bool g_peer_ran = false;          // the last benchmark timed oneDNN (workload::kPeerSettle)
size_t g_pool_floats[3] = {};     // per element type: the largest rotation it needs

// The pool of tensors of each element type.
workload::Pool& GlobalPool(DType type) {
  static workload::Pool pools[3] = {workload::Pool(DType::kF32), workload::Pool(DType::kBF16),
                                    workload::Pool(DType::kF16)};
  return pools[static_cast<int>(type)];
}

const char* LayoutName(bnorm_layout layout) { return layout == bnorm_nchw ? "nchw" : "nhwc"; }

// Returns whether `op` is meaningful on `w` in the default suite.
bool Applies(Op op, const Workload& w) {
  if (w.inference_only && op != Op::kInference && op != Op::kAffine) return false;
  return op != Op::kTraining || w.n * w.spatial >= 2;
}

// One case of the suite: an operation on a shape in a layout, in a cache regime, on
// tensors of one element type (the op is spelled "training.bf16" for half types).
struct Case {
  Op op;
  Workload shape;
  bnorm_layout layout;
  bool cold;
  DType type = DType::kF32;
  std::string OpLabel() const {
    return std::string(workload::OpName(op)) +
           (type == DType::kF32 ? "" : std::string(".") + workload::DTypeName(type));
  }
  std::string Key() const {
    return OpLabel() + "/" + LayoutName(layout) + "/" +
           workload::ShapeString(shape.n, shape.c, shape.spatial) + (cold ? "/cold" : "/hot");
  }
  // The same case on float32 tensors.
  std::string F32Key() const {
    Case f32 = *this;
    f32.type = DType::kF32;
    return f32.Key();
  }
};

// GB/s of the last finished run of every benchmark, by case key and implementation
// ("best", a target name, "onednn"): the x_onednn counter and the summary read them.
std::map<std::string, std::map<std::string, double>>& Results() {
  static std::map<std::string, std::map<std::string, double>> results;
  return results;
}
std::vector<Case>& Cases() {  // in registration order
  static std::vector<Case> cases;
  return cases;
}

// Sets bytes_per_second from `traffic_bytes` per iteration, and the dimensionless
// roofline (rate / non-temporal copy) and vs_copy (rate / plain copy) from the wall
// time of the timing loop, `seconds` (a kIsRate counter would print as "/s").
// Returns the rate in GB/s.
double SetCounters(benchmark::State& state, double traffic_bytes, double seconds) {
  const double bytes = traffic_bytes * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  const double gbs = seconds > 0 ? bytes / seconds * 1e-9 : 0;
  if (g_bandwidth.copy_nt_gbs > 0 && gbs > 0) {
    state.counters["roofline"] = gbs / g_bandwidth.copy_nt_gbs;
    state.counters["vs_copy"] = gbs / g_bandwidth.copy_gbs;
  }
  return gbs;
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times one bnorm operation. `target` empty: the library's best; otherwise it is
// selected for this benchmark and the default restored afterwards.
void BM_Bnorm(benchmark::State& state, const Case& c, const std::string& target) {
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
  workload::Pool& pool = GlobalPool(c.type);
  pool.Reserve(g_pool_floats[static_cast<int>(c.type)]);
  const bnorm_shape shape{c.shape.n, c.shape.c, c.shape.spatial, c.layout};
  workload::Runner runner(pool, c.op, shape, c.cold, roofline::ColdBytes());
  if (g_peer_ran) std::this_thread::sleep_for(workload::kPeerSettle);
  g_peer_ran = false;
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
    const double gbs = SetCounters(state, runner.TrafficBytes(), seconds);
    std::map<std::string, double>& results = Results()[c.Key()];
    results[target.empty() ? "best" : target] = gbs;
    const auto dnnl = results.find("onednn");
    if (dnnl != results.end() && dnnl->second > 0) state.counters["x_onednn"] = gbs / dnnl->second;
    // Half types: speed over the float32 path on the same case (elements per second;
    // the bytes per element halve).
    const auto f32 = Results().find(c.F32Key());
    if (c.type != DType::kF32 && f32 != Results().end() && f32->second.count("best") != 0) {
      const double element_ratio = static_cast<double>(workload::ElementBytes(DType::kF32)) /
                                   static_cast<double>(workload::ElementBytes(c.type));
      state.counters["x_f32"] = gbs / f32->second.at("best") * element_ratio;
    }
    state.SetLabel(std::string(bnorm_active_target()) + " " + c.shape.name);
  }
  if (!target.empty()) bnorm_set_target("");
}

#if BNORM_HAVE_DNNL
// Times oneDNN's batch normalization on the same shapes, buffers and traffic model:
// forward inference (global stats, scale, shift), forward training, backward (diffs of
// src, scale, shift). Threads: oneDNN's own runtime (OpenMP in Debian's build), set to
// bnorm's count in main.
// `blocked`: oneDNN's nChw16c layout in the same buffers instead of the case's layout.
void BM_Dnnl(benchmark::State& state, const Case& c, bool blocked) {
  try {
    workload::Pool& pool = GlobalPool(c.type);
    pool.Reserve(g_pool_floats[static_cast<int>(c.type)]);
    const bnorm_shape shape{c.shape.n, c.shape.c, c.shape.spatial, c.layout};
    workload::Runner runner(pool, c.op, shape, c.cold, roofline::ColdBytes());
    if (!runner.ok()) {
      state.SkipWithError("out of memory");
      return;
    }
    peer::DnnlRunner dnnl(runner, c.op, shape, blocked);
    dnnl.Run(0);
    int64_t set = 1;
    const auto start = std::chrono::steady_clock::now();
    for (auto _ : state) dnnl.Run(set++);
    g_peer_ran = true;
    Results()[c.Key()][blocked ? "onednn16c" : "onednn"] =
        SetCounters(state, runner.TrafficBytes(), Seconds(start));
    state.SetLabel((blocked ? "oneDNN nChw16c " : "oneDNN ") + c.shape.name);
  } catch (const dnnl::error& e) {
    state.SkipWithError((std::string("oneDNN: ") + e.what()).c_str());
  }
}
#endif  // BNORM_HAVE_DNNL

// Returns the compiled targets, best first.
std::vector<std::string> CompiledTargets() { return TargetNames(bnorm_compiled_targets()); }

// Registers the suite. Names: op/layout/NxCxS/implementation/cache, where the
// implementation is "best" (the library's choice), a target name, or "onednn". Per
// case, the oneDNN row comes first so that bnorm's rows can report x_onednn.
void RegisterAll() {
  const std::vector<std::string> targets = CompiledTargets();
  const size_t cold_bytes = roofline::ColdBytes();
  const auto add = [&](const Case& c, const std::string& impl, auto fn, auto arg) {
    const std::string key = c.Key();
    const size_t slash = key.rfind('/');
    const std::string name = key.substr(0, slash + 1) + impl + key.substr(slash);
    benchmark::RegisterBenchmark(name.c_str(), fn, c, arg)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  };
  for (const Op op : workload::kAllOps) {
    for (const Workload& w : workload::DefaultWorkloads()) {
      if (!Applies(op, w)) continue;
      for (const bnorm_layout layout : {bnorm_nchw, bnorm_nhwc}) {
        for (const bool cold : {true, false}) {
          // float32 on every shape; bfloat16 and float16 on the main shapes, after it.
          for (const DType type : {DType::kF32, DType::kBF16, DType::kF16}) {
            if (type != DType::kF32 && !workload::IsMainWorkload(w)) continue;
            size_t& pool = g_pool_floats[static_cast<int>(type)];
            pool = std::max(pool, workload::PoolFloats(op, workload::Elements(w), cold_bytes,
                                                       true, type));
            Cases().push_back({op, w, layout, cold, type});
            const Case& c = Cases().back();
#if BNORM_HAVE_DNNL
            // The oneDNN row first, so that bnorm's rows can report x_onednn. oneDNN
            // has f32 and bf16 batch normalization on CPUs, no f16.
            if (peer::DnnlHasOp(op) && type != DType::kF16) {
              add(c, "onednn", BM_Dnnl, false);
              // NCHW: also oneDNN in its own blocked layout, where its JIT kernels run.
              if (layout == bnorm_nchw && w.spatial > 1 &&
                  peer::DnnlBlockedFits({w.n, w.c, w.spatial, layout})) {
                add(c, "onednn16c", BM_Dnnl, true);
              }
            }
#endif
            add(c, "best", BM_Bnorm, std::string());
            // The main shapes get one row per compiled target, cold, float32 (unsupported
            // targets skip).
            if (!cold || type != DType::kF32 || !workload::IsMainWorkload(w)) continue;
            for (const std::string& target : targets) add(c, target, BM_Bnorm, target);
          }
        }
      }
    }
  }
}

// Prints, for every case that ran, bnorm's and oneDNN's GB/s and their ratio, then
// the per-target GB/s of the main shapes.
void PrintSummary(FILE* out) {
  const double nt = g_bandwidth.copy_nt_gbs;
  std::fprintf(out,
               "\nSummary: GB/s on the %s; %%nt = of the non-temporal copy roofline (%.1f "
               "GB/s); x oneDNN = bnorm / oneDNN in the same layout (> 1: bnorm faster); "
               "x nChw16c = bnorm NCHW / oneDNN in its blocked layout\n",
               workload::TrafficModel(), nt);
  std::fprintf(out, "%-14s %-6s %-15s %-5s %9s %5s %9s %5s %9s %10s  %s\n", "op", "layout", "NxCxS",
               "cache", "bnorm", "%nt", "oneDNN", "%nt", "x oneDNN", "x nChw16c", "shape");
  std::map<std::string, std::vector<double>> ratios;  // op/layout/cache -> ratios
  for (const Case& c : Cases()) {
    const auto found = Results().find(c.Key());
    if (found == Results().end() || found->second.count("best") == 0) continue;
    const std::map<std::string, double>& r = found->second;
    const double bnorm_gbs = r.at("best");
    const auto dnnl = r.find("onednn");
    char dnnl_text[64] = "        -       -";
    char ratio_text[32] = "-";
    if (dnnl != r.end() && dnnl->second > 0) {
      std::snprintf(dnnl_text, sizeof(dnnl_text), "%9.1f %4.0f%%", dnnl->second,
                    nt > 0 ? 100 * dnnl->second / nt : 0.0);
      std::snprintf(ratio_text, sizeof(ratio_text), "%.2fx", bnorm_gbs / dnnl->second);
      ratios[c.OpLabel() + " " + LayoutName(c.layout) + " " +
             (c.cold ? "cold" : "hot")]
          .push_back(bnorm_gbs / dnnl->second);
    }
    char blocked_text[32] = "-";
    const auto blocked = r.find("onednn16c");
    if (blocked != r.end() && blocked->second > 0) {
      std::snprintf(blocked_text, sizeof(blocked_text), "%.2fx", bnorm_gbs / blocked->second);
    }
    std::fprintf(out, "%-14s %-6s %-15s %-5s %9.1f %4.0f%% %s %9s %10s  %s\n",
                 c.OpLabel().c_str(), LayoutName(c.layout),
                 workload::ShapeString(c.shape.n, c.shape.c, c.shape.spatial).c_str(),
                 c.cold ? "cold" : "hot", bnorm_gbs, nt > 0 ? 100 * bnorm_gbs / nt : 0.0, dnnl_text,
                 ratio_text, blocked_text, c.shape.name.c_str());
  }
  if (!ratios.empty()) {
    std::fprintf(out, "\nbnorm / oneDNN, geometric mean over shapes:\n");
    for (const auto& entry : ratios) {
      double log_sum = 0;
      for (const double x : entry.second) log_sum += std::log(x);
      std::fprintf(out, "  %-22s %.2fx over %zu shapes\n", entry.first.c_str(),
                   std::exp(log_sum / entry.second.size()), entry.second.size());
    }
  }
  // Per-target table: main shapes, cold.
  const std::vector<std::string> targets = CompiledTargets();
  bool header = false;
  for (const Case& c : Cases()) {
    if (!c.cold || c.type != DType::kF32 || !workload::IsMainWorkload(c.shape)) continue;
    const auto found = Results().find(c.Key());
    if (found == Results().end()) continue;
    bool any = false;
    for (const std::string& t : targets) any |= found->second.count(t) != 0;
    if (!any) continue;
    if (!header) {
      std::fprintf(out, "\nGB/s per target (cold, main shapes; - = not supported here):\n");
      std::fprintf(out, "%-9s %-6s %-15s", "op", "layout", "NxCxS");
      for (const std::string& t : targets) std::fprintf(out, " %8s", t.c_str());
      std::fprintf(out, " %8s\n", "oneDNN");
      header = true;
    }
    std::fprintf(out, "%-9s %-6s %-15s", workload::OpName(c.op), LayoutName(c.layout),
                 workload::ShapeString(c.shape.n, c.shape.c, c.shape.spatial).c_str());
    for (const std::string& t : targets) {
      const auto gbs = found->second.find(t);
      if (gbs == found->second.end()) {
        std::fprintf(out, " %8s", "-");
      } else {
        std::fprintf(out, " %8.1f", gbs->second);
      }
    }
    const auto dnnl = found->second.find("onednn");
    if (dnnl == found->second.end()) {
      std::fprintf(out, " %8s\n", "-");
    } else {
      std::fprintf(out, " %8.1f\n", dnnl->second);
    }
  }
  // Half precision against float32: speed of the same case in elements per second.
  header = false;
  for (const Case& c : Cases()) {
    if (c.type == DType::kF32) continue;
    const auto half = Results().find(c.Key());
    const auto f32 = Results().find(c.F32Key());
    if (half == Results().end() || f32 == Results().end() || half->second.count("best") == 0 ||
        f32->second.count("best") == 0) {
      continue;
    }
    if (!header) {
      std::fprintf(out,
                   "\nHalf precision (main shapes): x f32 = elements/s over the float32 path "
                   "(goal >= 1.8 out of cache), x oneDNN = over oneDNN's bf16\n");
      std::fprintf(out, "%-14s %-6s %-15s %-5s %9s %7s %9s\n", "op", "layout", "NxCxS", "cache",
                   "GB/s", "x f32", "x oneDNN");
      header = true;
    }
    const double gbs = half->second.at("best");
    const double x_f32 = gbs / f32->second.at("best") * 2;
    const auto dnnl = half->second.find("onednn");
    char dnnl_text[32] = "-";
    if (dnnl != half->second.end() && dnnl->second > 0) {
      std::snprintf(dnnl_text, sizeof(dnnl_text), "%.2fx", gbs / dnnl->second);
    }
    std::fprintf(out, "%-14s %-6s %-15s %-5s %9.1f %6.2fx %9s\n", c.OpLabel().c_str(),
                 LayoutName(c.layout),
                 workload::ShapeString(c.shape.n, c.shape.c, c.shape.spatial).c_str(),
                 c.cold ? "cold" : "hot", gbs, x_f32, dnnl_text);
  }
  std::fflush(out);
}

}  // namespace
}  // namespace bnorm

int main(int argc, char** argv) {
  // Our one flag, --bnorm_threads=K (tbb::global_control, and oneDNN's OpenMP threads),
  // is taken out before Google Benchmark parses the rest.
  std::unique_ptr<tbb::global_control> thread_limit;
  bool console = true;  // where the summary goes: stdout unless another format is asked
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const char* kFlag = "--bnorm_threads=";
    const char* kFormat = "--benchmark_format=";
    if (std::strncmp(argv[i], kFormat, std::strlen(kFormat)) == 0) {
      console = std::strcmp(argv[i] + std::strlen(kFormat), "console") == 0;
    }
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
  const int threads = rl::Threads();
#if BNORM_HAVE_DNNL
  const bool dnnl_threads = bnorm::peer::SetDnnlThreads(threads);
  benchmark::AddCustomContext("bnorm_onednn",
                              bnorm::peer::DnnlVersion() + ", " +
                                  (dnnl_threads ? std::to_string(threads) + " threads"
                                                : std::string("its default thread count")));
#else
  benchmark::AddCustomContext("bnorm_onednn",
                              "not built in (install libdnnl-dev, reconfigure with -Ddnnl=auto)");
#endif
  bnorm::g_bandwidth = rl::MeasureCopy();
  benchmark::AddCustomContext("bnorm_copy_GBps", std::to_string(bnorm::g_bandwidth.copy_gbs));
  benchmark::AddCustomContext("bnorm_copy_nt_GBps", std::to_string(bnorm::g_bandwidth.copy_nt_gbs));
  benchmark::AddCustomContext("bnorm_roofline",
                              "copy " + std::to_string(bnorm::g_bandwidth.array_bytes / rl::kMiB) +
                                  " MiB x2, " + std::to_string(bnorm::g_bandwidth.threads) +
                                  " threads, best of " + std::to_string(bnorm::g_bandwidth.runs) +
                                  "; roofline counter = bytes_per_second / "
                                  "non-temporal copy, vs_copy = / plain copy");
  benchmark::AddCustomContext("bnorm_traffic_model", bnorm::workload::TrafficModel());
  benchmark::AddCustomContext("bnorm_cold_rotation_MiB",
                              std::to_string(rl::ColdBytes() / rl::kMiB) + " (LLC " +
                                  std::to_string(rl::LastLevelCacheBytes() / rl::kMiB) + " MiB)");
  benchmark::AddCustomContext("bnorm_supported_targets", bnorm_supported_targets());
  benchmark::AddCustomContext("bnorm_threads", std::to_string(threads));
  benchmark::RunSpecifiedBenchmarks();
  bnorm::PrintSummary(console ? stdout : stderr);
  benchmark::Shutdown();
  return 0;
}
