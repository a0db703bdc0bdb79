// Denormal inputs must not slow a target down by more than 2x (the issue "Hostile
// input"; the library neither sets nor relies on flush-to-zero, so a CPU that takes a
// slow path on denormals would show it here). Every operation, on every compiled
// target, times the same call on ordinary data and on denormal data:
//   normal:   x ~ N(mean, std) with std in [1/8, 8], as the test suite's data
//   denormal: x = random odd multiples of 2^-149 below 2^-126 (every value denormal);
//             affine with scale 1 and shift 0, so that its outputs are denormal too
// One size that fits L2 in both layouts (compute-bound, where a slow path would show, not hidden
// behind DRAM), on the calling thread (BNORM_SERIAL). The run ends with a table of
// time(denormal) / time(normal) per operation and target (the thread's CPU time, so
// that other load on the machine cancels out; the median over the benchmark's
// iterations), flagged above 2.
//   build/bench/denormal_bench [--large] [--benchmark_min_time=0.2] [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"

namespace bnorm {
namespace {

const char* const kOps[] = {"moments", "training", "inference", "affine", "backward"};

// 4 x 64 x 256 floats: 256 KiB per tensor, x and y together within a 1 MiB L2; NCHW
// (channel planes) and NHWC (rows of channels), whose kernels differ. With --large,
// 32 x 64 x 16384 floats (128 MiB per tensor): out of cache, where the library runs
// in practice and memory time hides part of the float64 lanes' cost.
const bnorm_shape kShapes[] = {{4, 64, 256, bnorm_nchw}, {4, 64, 256, bnorm_nhwc}};
const bnorm_shape kLargeShapes[] = {{32, 64, 16384, bnorm_nchw}, {32, 64, 16384, bnorm_nhwc}};
const bnorm_shape* g_shapes = kShapes;
const char* const kLayoutNames[] = {"nchw", "nhwc"};

struct Data {
  std::vector<float> x, dy, y, gamma, beta, mean, var, invstd, out_c1, out_c2, dx;
};

Data MakeData(const bnorm_shape& shape, bool denormal) {
  const int64_t c = shape.c, e = shape.n * shape.c * shape.spatial;
  std::mt19937 rng(denormal ? 2 : 1);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unit(0, 1);
  Data d;
  d.x.resize(e);
  d.dy.resize(e);
  d.y.resize(e);
  d.dx.resize(e);
  const float tiny = std::numeric_limits<float>::denorm_min();
  for (int64_t i = 0; i < e; ++i) {
    if (denormal) {
      const double units = 2.0 * (rng() % (1u << 22)) + 1;  // odd, below 2^23
      d.x[i] = static_cast<float>((rng() & 1 ? -units : units) * tiny);
      d.dy[i] = static_cast<float>((rng() & 1 ? -1.0 : 1.0) * (2.0 * (rng() % 1000) + 1) * tiny);
    } else {
      const double sd = std::exp2(unit(rng) * 6 - 3);
      d.x[i] = static_cast<float>(sd * (normal(rng) + 1));
      d.dy[i] = static_cast<float>(normal(rng));
    }
    d.y[i] = d.x[i];  // ReLU mask for backward: about half <= 0
  }
  d.gamma.assign(c, 1.0f);
  d.beta.assign(c, 0.0f);
  d.mean.assign(c, 0.0f);
  d.var.assign(c, 1.0f);
  d.invstd.assign(c, 1.0f);
  d.out_c1.resize(c);
  d.out_c2.resize(c);
  return d;
}

bnorm_status Run(const std::string& op, const bnorm_shape* s, Data& d, unsigned flags) {
  if (op == "moments") return bnorm_moments_f32(s, d.x.data(), d.out_c1.data(), d.out_c2.data());
  if (op == "training")
    return bnorm_forward_training_f32(s, d.x.data(), d.dx.data(), d.gamma.data(), d.beta.data(),
                                      1e-5f, 0.1f, nullptr, nullptr, d.out_c1.data(),
                                      d.out_c2.data(), flags);
  if (op == "inference")
    return bnorm_forward_inference_f32(s, d.x.data(), d.dx.data(), d.gamma.data(), d.beta.data(),
                                       d.mean.data(), d.var.data(), 1e-5f, flags);
  if (op == "affine")
    return bnorm_affine_f32(s, d.x.data(), d.dx.data(), d.gamma.data(), d.beta.data(), flags);
  return bnorm_backward_f32(s, d.x.data(), d.dy.data(), d.mean.data(), d.invstd.data(),
                            d.gamma.data(), d.y.data(), d.dx.data(), d.out_c1.data(),
                            d.out_c2.data(), flags | BNORM_FUSE_RELU);
}

// Returns this thread's CPU time in seconds: the calls run on it (BNORM_SERIAL), and
// other load on the machine does not count.
double ThreadSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// CPU seconds per call on normal and on denormal data, and their ratio (medians over
// the iterations), by "op layout/target".
struct Times {
  double normal, denormal, ratio;
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
std::map<std::string, Times>& Results() {
  static std::map<std::string, Times> results;
  return results;
}

// Times the operation on both data sets in alternation, so that both see the same
// conditions on a shared machine (timed one after the other, a cell's ratio moved by
// up to 0.4 between runs on a 2-vCPU VM): each iteration makes one untimed call on
// normal data (which brings its tensors back into cache), g_calls timed ones (8), then
// the same on denormal data (--large: one timed call, the tensors do not fit a cache).
int g_calls = 8;
void BM_Denormal(benchmark::State& state, std::string op, int layout, std::string target) {
  const bnorm_shape& shape = g_shapes[layout];
  const std::string row = op + " " + kLayoutNames[layout];
  if (bnorm_set_target(target.c_str()) != bnorm_success || target != bnorm_active_target()) {
    state.SkipWithError((target + " is not supported here").c_str());
    bnorm_set_target(nullptr);
    return;
  }
  Data normal = MakeData(shape, false), denormal = MakeData(shape, true);
  if (Run(op, &shape, normal, BNORM_SERIAL) != bnorm_success ||
      Run(op, &shape, denormal, BNORM_SERIAL) != bnorm_success) {
    state.SkipWithError(bnorm_last_error());
    bnorm_set_target(nullptr);
    return;
  }
  auto timed = [&](Data& data) {
    Run(op, &shape, data, BNORM_SERIAL);
    const double start = ThreadSeconds();
    for (int i = 0; i < g_calls; ++i) {
      Run(op, &shape, data, BNORM_SERIAL);
      benchmark::ClobberMemory();
    }
    return ThreadSeconds() - start;
  };
  std::vector<double> normal_s, denormal_s, ratios;
  for (auto _ : state) {
    normal_s.push_back(timed(normal) / g_calls);
    denormal_s.push_back(timed(denormal) / g_calls);
    ratios.push_back(denormal_s.back() / normal_s.back());
  }
  // Medians over the iterations: an iteration that another process disturbed (its
  // cache, the core's frequency) moves a mean, not a median.
  const Times t{Median(normal_s), Median(denormal_s), Median(ratios)};
  Results()[row + "/" + target] = t;
  state.counters["normal_us"] = 1e6 * t.normal;
  state.counters["denormal_us"] = 1e6 * t.denormal;
  state.counters["ratio"] = t.ratio;
  bnorm_set_target(nullptr);
}

}  // namespace
}  // namespace bnorm

int main(int argc, char** argv) {
  using bnorm::Results;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--large") {
      bnorm::g_shapes = bnorm::kLargeShapes;
      bnorm::g_calls = 1;
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      break;
    }
  }
  const std::vector<std::string> targets = bnorm::TargetNames(bnorm_supported_targets());
  for (const char* op : bnorm::kOps)
    for (int layout = 0; layout < 2; ++layout)
      for (const std::string& t : targets)
        benchmark::RegisterBenchmark(
            (std::string("denormal/") + op + "/" + bnorm::kLayoutNames[layout] + "/" + t).c_str(),
            bnorm::BM_Denormal, std::string(op), layout, t)
            ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  // time(denormal) / time(normal) per operation and target.
  std::printf(
      "\ntime(denormal data) / time(normal data), %lld x %lld x %lld, one thread "
      "(> 2 is flagged !):\n%-15s",
      static_cast<long long>(bnorm::g_shapes[0].n), static_cast<long long>(bnorm::g_shapes[0].c),
      static_cast<long long>(bnorm::g_shapes[0].spatial), "");
  for (const std::string& t : targets) std::printf(" %9s", t.c_str());
  std::printf("\n");
  double worst = 0;
  for (const char* op : bnorm::kOps)
    for (const char* layout : bnorm::kLayoutNames) {
    const std::string row = std::string(op) + " " + layout;
    std::printf("%-15s", row.c_str());
    for (const std::string& t : targets) {
      const auto found = Results().find(row + "/" + t);
      if (found == Results().end()) {
        std::printf(" %9s", "-");
        continue;
      }
      const double ratio = found->second.ratio;
      worst = ratio > worst ? ratio : worst;
      std::printf(" %8.2f%s", ratio, ratio > 2 ? "!" : " ");
    }
    std::printf("\n");
  }
  std::printf("worst ratio: %.2f (limit 2)\n", worst);
  return 0;
}
