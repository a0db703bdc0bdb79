// oneDNN as the peer of bnorm in benchmarks (bnorm_bench and `bnorm bench`): its batch
// normalization on the same shapes, layouts and buffers as a workload::Runner.
// Include only when oneDNN is available (BNORM_HAVE_DNNL); link with dependency('dnnl').
#ifndef BNORM_BENCH_DNNL_PEER_H_
#define BNORM_BENCH_DNNL_PEER_H_

#include <dlfcn.h>

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench/workloads.h"
#include "bnorm/bnorm.h"

namespace bnorm {
namespace peer {

// Whether oneDNN has a counterpart of `op`: forward inference with global statistics,
// forward training, backward (diffs of src, scale and shift). bnorm's affine (an
// engine's folded call) and moments have none.
inline bool DnnlHasOp(workload::Op op) {
  return op == workload::Op::kInference || op == workload::Op::kTraining ||
         op == workload::Op::kBackward;
}

// Returns "2.6.3 (OpenMP)": the library's version and CPU threading runtime.
inline std::string DnnlVersion() {
  const dnnl_version_t* v = dnnl_version();
  const char* runtime = v->cpu_runtime == DNNL_RUNTIME_OMP   ? "OpenMP"
                        : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB"
                        : v->cpu_runtime == DNNL_RUNTIME_SEQ ? "sequential"
                                                             : "threadpool";
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + " (" + runtime + ")";
}

// Makes oneDNN's CPU runtime use `threads` threads, as bnorm does. Debian builds
// oneDNN with OpenMP: omp_set_num_threads is looked up in the OpenMP runtime libdnnl
// loaded, so that nothing links against it directly. A TBB build follows the caller's
// tbb::global_control already. Returns false when the count could not be set.
inline bool SetDnnlThreads(int threads) {
  const dnnl_version_t* v = dnnl_version();
  if (v->cpu_runtime == DNNL_RUNTIME_TBB) return true;
  if (v->cpu_runtime != DNNL_RUNTIME_OMP) return threads == 1;
  using SetThreads = void (*)(int);
  const auto set_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set_threads == nullptr) return false;
  set_threads(threads);
  return true;
}

// Whether oneDNN's blocked layout nChw16c (its own choice for NCHW networks) can
// stand in the buffers of `shape`: channels a multiple of 16, so no padding.
inline bool DnnlBlockedFits(const bnorm_shape& shape) { return shape.c % 16 == 0; }

// Runs oneDNN's batch normalization for `op` on the buffer sets of `runner` (x; y or
// dy; dx), with scale and shift, in the runner's element type (f32 or bf16; oneDNN 2.6
// has no f16 batch normalization on CPUs) and layout, or with `blocked`
// oneDNN's nChw16c layout in the same buffers (DnnlBlockedFits). On plain NCHW
// oneDNN 2.6 runs a generic C++ kernel (ncsp_bnorm); its JIT kernels take NHWC and
// nChw16c. Per-channel values match the runner's (mean 0, variance 4/3, scale 1.5,
// shift 0.25). Throws dnnl::error.
class DnnlRunner {
 public:
  DnnlRunner(const workload::Runner& runner, workload::Op op, const bnorm_shape& shape,
             bool blocked = false)
      : runner_(runner), op_(op), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    using dnnl::memory;
    using dnnl::normalization_flags;
    using dnnl::prop_kind;
    if (runner.type() == workload::DType::kF16) {
      throw dnnl::error(dnnl_unimplemented, "no f16 batch normalization in oneDNN on CPUs");
    }
    const memory::data_type type = runner.type() == workload::DType::kBF16
                                       ? memory::data_type::bf16
                                       : memory::data_type::f32;
    const memory::desc md({shape.n, shape.c, shape.spatial, 1}, type,
                          blocked                      ? memory::format_tag::nChw16c
                          : shape.layout == bnorm_nchw ? memory::format_tag::nchw
                                                       : memory::format_tag::nhwc);
    if (blocked && !DnnlBlockedFits(shape)) {
      throw dnnl::error(dnnl_invalid_arguments, "nChw16c needs channels a multiple of 16");
    }
    const memory::desc cd({shape.c}, memory::data_type::f32, memory::format_tag::a);
    const size_t c = static_cast<size_t>(shape.c);
    mean_.assign(c, 0.0f);
    var_.assign(c, 4.0f / 3.0f);
    scale_.assign(c, 1.5f);
    shift_.assign(c, 0.25f);
    dscale_.assign(c, 0.0f);
    dshift_.assign(c, 0.0f);
    src_ = memory(md, engine_, runner.Buffer(0, 0));
    dst_ = memory(md, engine_, runner.Buffer(0, 1));
    diff_src_ = memory(md, engine_, runner.Buffer(0, op == workload::Op::kBackward ? 2 : 1));
    const memory mean_m(cd, engine_, mean_.data()), var_m(cd, engine_, var_.data()),
        scale_m(cd, engine_, scale_.data()), shift_m(cd, engine_, shift_.data()),
        dscale_m(cd, engine_, dscale_.data()), dshift_m(cd, engine_, dshift_.data());
    const normalization_flags ss = normalization_flags::use_scale | normalization_flags::use_shift;
    const std::unordered_map<int, memory> forward_args = {
        {DNNL_ARG_SRC, src_},       {DNNL_ARG_DST, dst_},      {DNNL_ARG_MEAN, mean_m},
        {DNNL_ARG_VARIANCE, var_m}, {DNNL_ARG_SCALE, scale_m}, {DNNL_ARG_SHIFT, shift_m}};
    if (op == workload::Op::kInference) {
      const dnnl::batch_normalization_forward::primitive_desc pd(
          {prop_kind::forward_inference, md, 1e-5f, ss | normalization_flags::use_global_stats},
          engine_);
      primitive_ = dnnl::batch_normalization_forward(pd);
      args_ = forward_args;
    } else if (op == workload::Op::kTraining || op == workload::Op::kBackward) {
      const dnnl::batch_normalization_forward::primitive_desc fwd_pd(
          {prop_kind::forward_training, md, 1e-5f, ss}, engine_);
      if (op == workload::Op::kTraining) {
        primitive_ = dnnl::batch_normalization_forward(fwd_pd);
        args_ = forward_args;
      } else {
        const dnnl::batch_normalization_backward::primitive_desc pd(
            {prop_kind::backward, md, md, 1e-5f, ss}, engine_, fwd_pd);
        primitive_ = dnnl::batch_normalization_backward(pd);
        // oneDNN 2.6 refuses to execute (invalid arguments) unless SHIFT is passed too.
        args_ = {{DNNL_ARG_SRC, src_},           {DNNL_ARG_DIFF_DST, dst_},
                 {DNNL_ARG_MEAN, mean_m},        {DNNL_ARG_VARIANCE, var_m},
                 {DNNL_ARG_SCALE, scale_m},      {DNNL_ARG_SHIFT, shift_m},
                 {DNNL_ARG_DIFF_SRC, diff_src_}, {DNNL_ARG_DIFF_SCALE, dscale_m},
                 {DNNL_ARG_DIFF_SHIFT, dshift_m}};
      }
    } else {
      throw dnnl::error(dnnl_unimplemented, "no oneDNN counterpart of this operation");
    }
  }

  // Runs once on buffer set `set` (modulo the runner's set count) and waits for it.
  void Run(int64_t set) {
    src_.set_data_handle(runner_.Buffer(set, 0));
    dst_.set_data_handle(runner_.Buffer(set, 1));
    if (op_ == workload::Op::kBackward) diff_src_.set_data_handle(runner_.Buffer(set, 2));
    primitive_.execute(stream_, args_);
    stream_.wait();
  }

 private:
  const workload::Runner& runner_;
  workload::Op op_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::memory src_, dst_, diff_src_;
  std::vector<float> mean_, var_, scale_, shift_, dscale_, dshift_;
  dnnl::primitive primitive_;
  std::unordered_map<int, dnnl::memory> args_;
};

}  // namespace peer
}  // namespace bnorm

#endif  // BNORM_BENCH_DNNL_PEER_H_
