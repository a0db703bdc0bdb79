// Benchmark workloads shared by `bnorm bench` and bnorm_bench: the default shapes of
// real networks, the traffic model of each operation, and cold-cache buffer rotation.
// tools/compare_torch.py mirrors DefaultWorkloads() and TrafficTensors(): keep them in step.
#ifndef BNORM_BENCH_WORKLOADS_H_
#define BNORM_BENCH_WORKLOADS_H_

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "bnorm/bnorm.hpp"

namespace bnorm {
namespace workload {

enum class Op { kMoments, kInference, kAffine, kTraining, kBackward };
constexpr Op kAllOps[] = {Op::kInference, Op::kAffine, Op::kTraining, Op::kBackward, Op::kMoments};

// A timing of one library that follows calls of another waits this long first: the
// other's idle threads spin after a call (oneDNN's OpenMP threads, libgomp: tens of
// milliseconds; oneTBB's: briefly) and, on a machine with as many threads as CPUs,
// take a CPU from the timed calls (seen: bnorm at half speed right after oneDNN).
constexpr std::chrono::milliseconds kPeerSettle{100};

inline const char* OpName(Op op) {
  switch (op) {
    case Op::kMoments:
      return "moments";
    case Op::kInference:
      return "inference";
    case Op::kAffine:
      return "affine";
    case Op::kTraining:
      return "training";
    case Op::kBackward:
      return "backward";
  }
  return "?";
}

// Returns whether `name` names an operation, and which in *op.
inline bool ParseOp(const std::string& name, Op* op) {
  for (const Op candidate : kAllOps) {
    if (name == OpName(candidate)) {
      *op = candidate;
      return true;
    }
  }
  return false;
}

// Returns the least traffic of `op` in tensors (T = bytes of one tensor), the count
// every GB/s figure of bnorm_bench, `bnorm bench` and tools/compare_torch.py is based
// on: moments read x (1T); affine and inference read x and write y (2T); training
// forward reads x for the statistics, then reads x again and writes y (3T); backward
// reads x and dy once and writes dx (3T). For backward this is the least any
// implementation can move: it is reached when a channel block's x and dy stay in
// cache between the sums and dx, whereas DESIGN.md's out-of-cache column counts 5T
// (x and dy read twice). Training's 3T is DESIGN.md's out-of-cache count; 2T is
// possible when a channel's values stay in cache, so rates above 100% of the
// roofline are possible for small channels. Write-allocate reads are not counted.
inline int TrafficTensors(Op op) {
  switch (op) {
    case Op::kMoments:
      return 1;
    case Op::kInference:
    case Op::kAffine:
      return 2;
    case Op::kTraining:
      return 3;
    case Op::kBackward:
      return 3;
  }
  return 0;
}

// The traffic model in one line, for the headers of every report.
inline const char* TrafficModel() {
  return "minimal traffic: moments 1T, inference/affine 2T (x, y), training 3T (x twice, y), "
         "backward 3T (x, dy once, dx); T = bytes of one tensor";
}

// Returns how many tensor-sized buffers one call of `op` uses (x; x, y; x, dy, dx).
inline int BufferTensors(Op op) {
  switch (op) {
    case Op::kMoments:
      return 1;
    case Op::kInference:
    case Op::kAffine:
    case Op::kTraining:
      return 2;
    case Op::kBackward:
      return 3;
  }
  return 0;
}

// A named shape; `inference_only` marks shapes that only inference engines see.
struct Workload {
  std::string name;
  int64_t n, c, spatial;
  bool inference_only = false;
};

// Returns the default set (float32 tensors, 0.4 to 103 MB):
// - ResNet-50's batch-norm inputs at batch 32, stem to last stage;
// - batch-1 inference shapes of the same network (inference and affine only);
// - BatchNorm1d: a fully connected layer (spatial 1; small and large) and a
//   sequence (N, C, L);
// - a large-spatial shape: few channels, 512x512 images (segmentation, super-resolution),
//   where NHWC rows are short and NCHW channels are long.
inline std::vector<Workload> DefaultWorkloads() {
  return {
      {"resnet50.112x112", 32, 64, 112 * 112},  // stem, after conv1
      {"resnet50.56x56", 32, 64, 56 * 56},      // stage 2, inside a bottleneck
      {"resnet50.56x56", 32, 256, 56 * 56},     // stage 2, block output
      {"resnet50.28x28", 32, 512, 28 * 28},
      {"resnet50.14x14", 32, 1024, 14 * 14},
      {"resnet50.7x7", 32, 2048, 7 * 7},
      {"resnet50.112x112.b1", 1, 64, 112 * 112, true},
      {"resnet50.56x56.b1", 1, 256, 56 * 56, true},
      {"resnet50.7x7.b1", 1, 2048, 7 * 7, true},
      {"mlp.bn1d", 256, 1024, 1},
      {"mlp.bn1d.large", 16384, 1024, 1},
      {"seq.bn1d", 32, 256, 1024},
      {"unet.512x512", 2, 32, 512 * 512},
  };
}

// Returns whether `w` is one of the main shapes, which get one row per target.
inline bool IsMainWorkload(const Workload& w) {
  return (w.n == 32 && w.c == 256 && w.spatial == 56 * 56) ||
         (w.n == 256 && w.c == 1024 && w.spatial == 1) ||
         (w.n == 2 && w.c == 32 && w.spatial == 512 * 512);
}

// Returns tiny shapes for smoke tests (`bnorm bench --quick`).
inline std::vector<Workload> QuickWorkloads() {
  return {{"quick.small", 2, 16, 64},
          {"quick.odd", 3, 7, 33},
          {"quick.bn1d", 64, 33, 1},
          {"quick.rgb", 1, 3, 4096}};
}

inline int64_t Elements(const Workload& w) { return w.n * w.c * w.spatial; }

// Returns "NxCxS", the spelling --shape takes.
inline std::string ShapeString(int64_t n, int64_t c, int64_t spatial) {
  return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(spatial);
}

// Tensor element types of the benchmarks.
enum class DType { kF32, kBF16, kF16 };

inline const char* DTypeName(DType t) {
  return t == DType::kF32 ? "f32" : t == DType::kBF16 ? "bf16" : "f16";
}
inline size_t ElementBytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// One buffer of tensor elements of one type, filled once with values in [-2, 2), that
// every benchmark carves its tensors from: touching and filling gigabytes per
// benchmark would cost more than the benchmarks themselves. Sizes count 4-byte words
// (floats, or pairs of halves).
class Pool {
 public:
  explicit Pool(DType type = DType::kF32) : type_(type) {}
  DType type() const { return type_; }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() { std::free(data_); }

  // Returns a buffer of at least `floats` floats (64-byte aligned), reallocating and
  // refilling when the current one is smaller; nullptr if allocation fails.
  float* Reserve(size_t floats) {
    if (floats <= floats_) return data_;
    std::free(data_);
    floats_ = 0;
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) return nullptr;
    floats_ = bytes / sizeof(float);
    float* data = data_;
    uint16_t* halves = reinterpret_cast<uint16_t*>(data_);
    const DType type = type_;
    const size_t count = type == DType::kF32 ? floats_ : 2 * floats_;
    tbb::parallel_for(tbb::blocked_range<size_t>(0, count, size_t{1} << 16),
                      [=](const tbb::blocked_range<size_t>& r) {
                        for (size_t i = r.begin(); i != r.end(); ++i) {
                          uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
                          h ^= h >> 15;
                          const float v = static_cast<float>(h >> 8) * (4.0f / 16777216.0f) - 2.0f;
                          if (type == DType::kF32) {
                            data[i] = v;
                          } else if (type == DType::kBF16) {
                            uint32_t bits;
                            std::memcpy(&bits, &v, sizeof(bits));
                            halves[i] = static_cast<uint16_t>(bits >> 16);
                          } else {  // float16 in [-2, 2): sign, exponent 12..15, mantissa
                            halves[i] = static_cast<uint16_t>((h & 0x8000u) | 0x3000u | (h & 0xfffu));
                          }
                        }
                      });
    return data_;
  }
  size_t floats() const { return floats_; }

 private:
  DType type_;
  float* data_ = nullptr;
  size_t floats_ = 0;
};

// Returns how many buffer sets of `set_bytes` a rotation over `cold_bytes` needs so
// that a set is not touched again before `cold_bytes` of other data have passed
// (at least 2); 1 when hot.
inline int64_t RotationSets(size_t set_bytes, size_t cold_bytes, bool cold) {
  if (!cold) return 1;
  const size_t sets = (cold_bytes + set_bytes - 1) / std::max<size_t>(set_bytes, 1);
  return static_cast<int64_t>(std::max<size_t>(sets, 2));
}

// Returns the 4-byte words of one buffer set of `op` on a tensor of `elements` elements
// of `type`, rounded up so that every set starts 64-byte aligned (every tensor of a set
// starts 64-byte aligned too when a tensor is a multiple of 64 bytes).
inline size_t SetFloats(Op op, int64_t elements, DType type = DType::kF32) {
  const size_t bytes = static_cast<size_t>(elements) * ElementBytes(type) * BufferTensors(op);
  return (bytes / 4 + 15) / 16 * 16;
}

// Returns the pool size (4-byte words) a Runner of `op` on `elements` elements needs.
inline size_t PoolFloats(Op op, int64_t elements, size_t cold_bytes, bool cold,
                         DType type = DType::kF32) {
  const size_t set_floats = SetFloats(op, elements, type);
  return set_floats *
         static_cast<size_t>(RotationSets(set_floats * sizeof(float), cold_bytes, cold));
}

// Runs one operation on one shape, rotating over buffer sets carved from a Pool. The
// buffers stay valid until the pool grows: reserve the largest need first, or keep
// one runner at a time.
// Per-channel parameters are plausible (gamma 1.5, beta 0.25, mean 0, var 4/3);
// training updates running statistics and saves mean and invstd; backward computes
// dx, dgamma and dbeta. No ReLU.
class Runner {
 public:
  // `pool` must outlive the runner; cold rotates over about `cold_bytes`. Tensors hold
  // the pool's element type.
  Runner(Pool& pool, Op op, const bnorm_shape& shape, bool cold, size_t cold_bytes)
      : op_(op), shape_(shape), type_(pool.type()) {
    elements_ = static_cast<size_t>(shape.n * shape.c * shape.spatial);
    set_floats_ = SetFloats(op, static_cast<int64_t>(elements_), type_);
    sets_ = RotationSets(set_floats_ * sizeof(float), cold_bytes, cold);
    base_ = pool.Reserve(set_floats_ * static_cast<size_t>(sets_));
    const size_t c = static_cast<size_t>(shape.c);
    gamma_.assign(c, 1.5f);
    beta_.assign(c, 0.25f);
    mean_.assign(c, 0.0f);
    var_.assign(c, 4.0f / 3.0f);
    scale_.assign(c, 1.25f);
    shift_.assign(c, -0.5f);
    running_mean_.assign(c, 0.0f);
    running_var_.assign(c, 1.0f);
    saved_mean_.assign(c, 0.0f);
    saved_invstd_.assign(c, 0.866f);
    out_a_.assign(c, 0.0f);
    out_b_.assign(c, 0.0f);
  }

  // Whether the pool could provide the buffers.
  bool ok() const { return base_ != nullptr; }
  int64_t sets() const { return sets_; }
  DType type() const { return type_; }
  size_t TensorBytes() const { return elements_ * ElementBytes(type_); }
  // Returns the minimal traffic of one call, in bytes (TrafficTensors).
  double TrafficBytes() const { return static_cast<double>(TrafficTensors(op_)) * TensorBytes(); }
  // Returns the bytes the rotation spans (all sets).
  size_t RotationBytes() const { return set_floats_ * sizeof(float) * sets_; }

  // Returns x, y / dy, dx of buffer set `set` (modulo the set count).
  void* Buffer(int64_t set, int which) const {
    return reinterpret_cast<char*>(base_ + static_cast<size_t>(set % sets_) * set_floats_) +
           which * TensorBytes();
  }

  // Runs the operation once on buffer set `set` (modulo the set count).
  bnorm_status Run(int64_t set) {
    switch (type_) {
      case DType::kF32:
        return RunAs<float>(set);
      case DType::kBF16:
        return RunAs<bnorm_bf16>(set);
      case DType::kF16:
        return RunAs<bnorm_f16>(set);
    }
    return bnorm_internal_error;
  }

 private:
  template <typename T>
  bnorm_status RunAs(int64_t set) {
    T* x = static_cast<T*>(Buffer(set, 0));
    T* b1 = static_cast<T*>(Buffer(set, 1));  // y, or dy for backward
    T* b2 = static_cast<T*>(Buffer(set, 2));
    switch (op_) {
      case Op::kMoments:
        return Api<T>::moments(&shape_, x, out_a_.data(), out_b_.data());
      case Op::kInference:
        return Api<T>::forward_inference(&shape_, x, b1, gamma_.data(), beta_.data(),
                                         mean_.data(), var_.data(), 1e-5f, 0);
      case Op::kAffine:
        return Api<T>::affine(&shape_, x, b1, scale_.data(), shift_.data(), 0);
      case Op::kTraining:
        return Api<T>::forward_training(&shape_, x, b1, gamma_.data(), beta_.data(), 1e-5f,
                                        0.1f, running_mean_.data(), running_var_.data(),
                                        saved_mean_.data(), saved_invstd_.data(), 0);
      case Op::kBackward:
        return Api<T>::backward(&shape_, x, b1, saved_mean_.data(), saved_invstd_.data(),
                                gamma_.data(), nullptr, b2, out_a_.data(), out_b_.data(), 0);
    }
    return bnorm_internal_error;
  }
  template <typename T>
  using Api = bnorm::detail::Api<T>;

  Op op_;
  bnorm_shape shape_;
  DType type_;
  size_t elements_ = 0, set_floats_ = 0;
  int64_t sets_ = 1;
  float* base_ = nullptr;
  std::vector<float> gamma_, beta_, mean_, var_, scale_, shift_, running_mean_, running_var_,
      saved_mean_, saved_invstd_, out_a_, out_b_;
};

}  // namespace workload
}  // namespace bnorm

#endif  // BNORM_BENCH_WORKLOADS_H_
