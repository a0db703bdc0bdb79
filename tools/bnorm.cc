// The bnorm command-line tool: `bnorm info` (machine and targets), `bnorm check`
// (every target against the float64 reference), `bnorm bench` (GB/s vs. the roofline).
#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"

#include <oneapi/tbb/info.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "tools/bench.h"
#include "tools/check.h"
#include "tools/cli_util.h"

namespace bnorm {
namespace tools {
namespace {

constexpr char kUsage[] =
    R"(usage: bnorm <command> [options]

commands:
  info               the CPU, caches, compiled / supported / active targets,
                     default thread count, library version, oneDNN if built in
  check [options]    run every operation (moments, training forward with running
                     and saved statistics, inference, fold, affine, backward; with
                     and without fused ReLU) on every supported target against the
                     float64 reference of test/reference.h, over a sweep of shapes
                     (both layouts, odd sizes, |mean|/std = 1e4), plus empty tensors,
                     refusals and thread-count determinism, with tensors of float32,
                     bfloat16 and float16 (their inputs are values of the type; a
                     half output may be off by half an ulp of its type more);
                     prints the worst error per type, target and output; exits 1 on
                     any failure
      --json FILE      also write the results as JSON
      --target NAME    check only this target (repeatable; default: all supported)
      --type T         f32, bf16 or f16: check only this element type (repeatable;
                       default: all three)
      --quick          about a twentieth of the elements (same kinds of cases):
                       for emulators such as qemu
  bench [options]    time operations on real network shapes with a cold cache and
                     print, per row, the median time, GB/s on the minimal traffic
                     (moments 1T, inference/affine 2T, training 3T, backward 3T:
                     x and dy read once, dx written; T = bytes of one tensor) and
                     the percent of this machine's copy bandwidth, plain and with
                     non-temporal stores (both measured first, by this binary).
                     Built with oneDNN (libdnnl-dev found at configure time), it
                     also times oneDNN's batch normalization on the same buffers
                     (inference, training, backward) and prints "oneDNN GB/s" and
                     "x oneDNN" (bnorm GB/s / oneDNN GB/s)
      --shape SHAPE    NxCxS or n,c,spatial (or NxCxHxW); repeatable. Default:
                       ResNet-50 at batch 32 (64x112x112, 64x56x56, 256x56x56,
                       512x28x28, 1024x14x14, 2048x7x7), batch 1 (64x112x112,
                       256x56x56, 2048x7x7; inference and affine only),
                       BatchNorm1d 256x1024x1, 16384x1024x1 and 32x256x1024,
                       and a large-spatial 2x32x512x512
      --layout L       nchw | nhwc | both (default both)
      --op OP          inference | training | backward | affine | moments | all, or a
                       comma-separated list (default all)
      --threads K      use at most K threads (tbb::global_control)
      --target NAME    force a target (bnorm_set_target), e.g. AVX2; see `bnorm info`
      --reps R         timed repetitions per row (default 15; 3 with --quick)
      --hot            reuse one set of buffers (default: rotate over >= 256 MiB so
                       that every repetition starts with a cold cache)
      --quick          tiny shapes, few repetitions: a smoke test, not a measurement
      --no-onednn      do not time oneDNN (when it is built in)
      --json FILE      also write the rows as JSON
  help, --help, -h   this text

Options take their value as the next argument or after '=' (--op=training).
Environment: BNORM_TARGET=NAME selects the target for the whole process;
BNORM_CHECK_TARGETS="NAME ..." is the default of check's --target.
Exit status: 0 success, 1 a check failed or a call returned an error, 2 bad usage.
)";

// Walks argv after the command, handing out options and their values.
class Args {
 public:
  Args(int argc, char** argv, int first) : args_(argv + first, argv + argc) {}
  bool Done() const { return pos_ >= args_.size(); }
  // Returns the next option name ("--op"), splitting "--op=value".
  std::string NextOption() {
    std::string arg = args_[pos_++];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      pending_ = arg.substr(eq + 1);
      has_pending_ = true;
      arg.resize(eq);
    }
    return arg;
  }
  // Returns the value of `option`, or throws UsageError when it is missing.
  std::string Value(const std::string& option) {
    if (has_pending_) {
      has_pending_ = false;
      return pending_;
    }
    if (Done()) throw UsageError{option + " needs a value"};
    return args_[pos_++];
  }
  // Throws if `option` was given a value it does not take.
  void NoValue(const std::string& option) const {
    if (has_pending_) throw UsageError{option + " takes no value"};
  }

 private:
  std::vector<std::string> args_;
  size_t pos_ = 0;
  std::string pending_;
  bool has_pending_ = false;
};

// Parses "NxCxS", "n,c,spatial" or "NxCxHxW" into a workload named after it.
workload::Workload ParseShape(const std::string& text) {
  std::vector<std::string> parts = Split(text, text.find(',') != std::string::npos ? ',' : 'x');
  if (parts.size() != 3 && parts.size() != 4) {
    throw UsageError{"--shape: expected NxCxS, n,c,spatial or NxCxHxW, got '" + text + "'"};
  }
  constexpr int64_t kMax = int64_t{1} << 40;
  workload::Workload w;
  w.n = ParseInt(parts[0], "--shape n", 1, kMax);
  w.c = ParseInt(parts[1], "--shape c", 1, kMax);
  w.spatial = ParseInt(parts[2], "--shape spatial", 1, kMax);
  if (parts.size() == 4) w.spatial *= ParseInt(parts[3], "--shape w", 1, kMax);
  if (w.n * w.c > kMax / w.spatial) throw UsageError{"--shape: '" + text + "' is too large"};
  w.name = "--shape " + text;
  return w;
}

// Returns the target names a user may pass, for error messages.
std::string KnownTargets() { return std::string("supported here: ") + bnorm_supported_targets(); }

int RunInfo() {
  std::printf("bnorm %d.%d.%d\n", BNORM_VERSION_MAJOR, BNORM_VERSION_MINOR, BNORM_VERSION_PATCH);
  std::printf("cpu:               %s (%u logical cpus)\n", CpuModel().c_str(),
              std::thread::hardware_concurrency());
  std::printf("caches:            %s\n", CacheSummary().c_str());
  std::printf("compiled targets:  %s\n", bnorm_compiled_targets());
  std::printf("supported targets: %s\n", bnorm_supported_targets());
  const char* env = std::getenv("BNORM_TARGET");
  std::printf("active target:     %s%s%s%s\n", bnorm_active_target(), env ? " (BNORM_TARGET=" : "",
              env ? env : "", env ? ")" : "");
  std::printf("default threads:   %d (tbb::info::default_concurrency; this arena: %d)\n",
              tbb::info::default_concurrency(), tbb::this_task_arena::max_concurrency());
  std::printf("oneTBB:            %s (runtime), %s (headers)\n", TBB_runtime_version(),
              TBB_VERSION_STRING);
  std::printf("oneDNN:            %s\n",
              bench::kHaveDnnl
                  ? (bench::DnnlVersion() + ", timed beside bnorm by `bnorm bench`").c_str()
                  : "not built in (`bnorm bench` shows no oneDNN columns)");
  return 0;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  const std::string command = argv[1];
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  Args args(argc, argv, 2);
  if (command == "info") {
    if (!args.Done()) throw UsageError{"info takes no options"};
    return RunInfo();
  }
  if (command == "check") {
    CheckOptions options;
    while (!args.Done()) {
      const std::string opt = args.NextOption();
      if (opt == "--json") {
        options.json_path = args.Value(opt);
      } else if (opt == "--target") {
        std::string name = args.Value(opt);
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        bool supported = false;
        for (const std::string& t : TargetNames(bnorm_supported_targets())) supported |= t == name;
        if (!supported)
          throw UsageError{"--target: '" + name + "' is not supported (" + KnownTargets() + ")"};
        options.targets.push_back(name);
      } else if (opt == "--type") {
        const std::string type = args.Value(opt);
        if (type != "f32" && type != "bf16" && type != "f16")
          throw UsageError{"--type: expected f32, bf16 or f16, got '" + type + "'"};
        options.types.push_back(type);
      } else if (opt == "--quick") {
        options.quick = true;
      } else if (opt == "--help" || opt == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else {
        throw UsageError{"check: unknown option '" + opt + "'"};
      }
    }
    return RunCheck(options);
  }
  if (command == "bench") {
    BenchOptions options;
    while (!args.Done()) {
      const std::string opt = args.NextOption();
      if (opt == "--shape") {
        options.shapes.push_back(ParseShape(args.Value(opt)));
      } else if (opt == "--layout") {
        const std::string v = args.Value(opt);
        if (v == "nchw") {
          options.layouts = {bnorm_nchw};
        } else if (v == "nhwc") {
          options.layouts = {bnorm_nhwc};
        } else if (v == "both") {
          options.layouts = {bnorm_nchw, bnorm_nhwc};
        } else {
          throw UsageError{"--layout: expected nchw, nhwc or both, got '" + v + "'"};
        }
      } else if (opt == "--op") {
        const std::vector<std::string> names = Split(args.Value(opt), ',');
        if (names.empty()) throw UsageError{"--op: empty list"};
        bool all = false;
        options.ops.clear();
        for (const std::string& name : names) {
          workload::Op op;
          if (name == "all") {
            all = true;
          } else if (workload::ParseOp(name, &op)) {
            options.ops.push_back(op);
          } else {
            throw UsageError{
                "--op: expected inference, training, backward, affine, moments "
                "or all, got '" +
                name + "'"};
          }
        }
        if (all) options.ops.clear();
      } else if (opt == "--threads") {
        options.threads = static_cast<int>(ParseInt(args.Value(opt), "--threads", 1, 4096));
      } else if (opt == "--target") {
        options.target = args.Value(opt);
        if (options.target.empty())
          throw UsageError{"--target: empty name (" + KnownTargets() + ")"};
      } else if (opt == "--reps") {
        options.reps = static_cast<int>(ParseInt(args.Value(opt), "--reps", 1, 1000000));
      } else if (opt == "--json") {
        options.json_path = args.Value(opt);
      } else if (opt == "--quick") {
        args.NoValue(opt);
        options.quick = true;
      } else if (opt == "--hot") {
        args.NoValue(opt);
        options.hot = true;
      } else if (opt == "--no-onednn") {
        args.NoValue(opt);
        options.onednn = false;
      } else if (opt == "--help" || opt == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else {
        throw UsageError{"bench: unknown option '" + opt + "'"};
      }
    }
    return RunBench(options);
  }
  throw UsageError{"unknown command '" + command + "'"};
}

}  // namespace
}  // namespace tools
}  // namespace bnorm

int main(int argc, char** argv) {
  try {
    return bnorm::tools::Main(argc, argv);
  } catch (const bnorm::tools::UsageError& e) {
    std::fprintf(stderr, "bnorm: %s\n(see bnorm --help)\n", e.message.c_str());
    return bnorm::tools::kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnorm: %s\n", e.what());
    return bnorm::tools::kExitFailure;
  }
}
