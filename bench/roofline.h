// The machine's own memory-bandwidth roofline: a STREAM-like copy measured with plain
// stores and with non-temporal stores, shared by `bnorm bench` and bnorm_bench.
#ifndef BNORM_BENCH_ROOFLINE_H_
#define BNORM_BENCH_ROOFLINE_H_

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

// x86 gets explicit SSE2 / AVX / AVX-512 copies with and without streaming stores;
// elsewhere (or with -DBNORM_ROOFLINE_X86=0) a portable loop stands for both.
#ifndef BNORM_ROOFLINE_X86
#if defined(__x86_64__) || defined(__i386__)
#define BNORM_ROOFLINE_X86 1
#else
#define BNORM_ROOFLINE_X86 0
#endif
#endif
#if BNORM_ROOFLINE_X86
#include <immintrin.h>
#endif

namespace bnorm {
namespace roofline {

constexpr size_t kMiB = size_t{1} << 20;

// Returns the size in bytes of the largest data or unified cache of cpu0 (Linux sysfs),
// or 32 MiB when it cannot be read.
inline size_t LastLevelCacheBytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream type_file(dir + "/type"), size_file(dir + "/size");
    std::string type, size;
    if (!(type_file >> type) || !(size_file >> size) || type == "Instruction") continue;
    size_t bytes = std::strtoull(size.c_str(), nullptr, 10);
    const char unit = size.empty() ? 0 : size.back();
    if (unit == 'K') bytes <<= 10;
    if (unit == 'M') bytes <<= 20;
    best = std::max(best, bytes);
  }
  return best ? best : 32 * kMiB;
}

// Returns how many bytes to rotate over so that no operand is still cached from an
// earlier repetition: 4x the LLC, at least 256 MiB, capped at `cap_bytes` to keep the
// footprint modest on machines that report a huge (shared, virtualized) LLC.
inline size_t ColdBytes(size_t cap_bytes = 1024 * kMiB) {
  return std::min(std::max(4 * LastLevelCacheBytes(), 256 * kMiB), cap_bytes);
}

// Returns the number of threads TBB will run parallel work on here: the current
// arena's concurrency, limited by any active tbb::global_control.
inline int Threads() {
  const size_t limit =
      tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism);
  return static_cast<int>(
      std::min<size_t>(static_cast<size_t>(tbb::this_task_arena::max_concurrency()), limit));
}

namespace detail {

// The copy kernels: 64 bytes per iteration, dst and src 64-byte aligned, `bytes` a
// multiple of 64. The empty asm keeps GCC from turning the plain loop into memcpy
// (glibc's memcpy itself switches to non-temporal stores on large copies).
#if BNORM_ROOFLINE_X86
__attribute__((target("avx512f"))) inline void CopyAvx512(float* dst, const float* src,
                                                          size_t bytes, bool nt) {
  const size_t n = bytes / sizeof(float);
  if (nt) {
    for (size_t i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(src + i));
    _mm_sfence();
  } else {
    for (size_t i = 0; i < n; i += 16) {
      _mm512_store_ps(dst + i, _mm512_load_ps(src + i));
      asm volatile("" ::: "memory");
    }
  }
}
__attribute__((target("avx"))) inline void CopyAvx(float* dst, const float* src, size_t bytes,
                                                   bool nt) {
  const size_t n = bytes / sizeof(float);
  for (size_t i = 0; i < n; i += 16) {
    const __m256 a = _mm256_load_ps(src + i), b = _mm256_load_ps(src + i + 8);
    if (nt) {
      _mm256_stream_ps(dst + i, a);
      _mm256_stream_ps(dst + i + 8, b);
    } else {
      _mm256_store_ps(dst + i, a);
      _mm256_store_ps(dst + i + 8, b);
      asm volatile("" ::: "memory");
    }
  }
  if (nt) _mm_sfence();
}
inline void CopySse2(float* dst, const float* src, size_t bytes, bool nt) {
  const size_t n = bytes / sizeof(float);
  for (size_t i = 0; i < n; i += 16) {
    for (size_t j = 0; j < 16; j += 4) {
      const __m128 v = _mm_load_ps(src + i + j);
      if (nt) {
        _mm_stream_ps(dst + i + j, v);
      } else {
        _mm_store_ps(dst + i + j, v);
      }
    }
    asm volatile("" ::: "memory");
  }
  if (nt) _mm_sfence();
}
#endif

// Returns the widest ISA the copy uses, and whether non-temporal stores exist here.
inline const char* CopyIsa() {
#if BNORM_ROOFLINE_X86
  if (__builtin_cpu_supports("avx512f")) return "AVX-512";
  if (__builtin_cpu_supports("avx")) return "AVX";
  return "SSE2";
#else
  return "portable";
#endif
}

inline void Copy(float* dst, const float* src, size_t bytes, bool nt) {
#if BNORM_ROOFLINE_X86
  if (__builtin_cpu_supports("avx512f")) return CopyAvx512(dst, src, bytes, nt);
  if (__builtin_cpu_supports("avx")) return CopyAvx(dst, src, bytes, nt);
  return CopySse2(dst, src, bytes, nt);
#else
  (void)nt;  // No portable non-temporal store in GCC: both variants are plain copies.
  const size_t n = bytes / sizeof(float);
  for (size_t i = 0; i < n; i += 16) {
    for (size_t j = 0; j < 16; ++j) dst[i + j] = src[i + j];
    asm volatile("" ::: "memory");
  }
#endif
}

// Runs `Copy` over [0, bytes) split in `threads` equal, 64-byte aligned slices, one
// per TBB task (static partitioner: one slice per thread).
inline void ParallelCopy(float* dst, const float* src, size_t bytes, bool nt, int threads) {
  const size_t lines = bytes / 64;
  tbb::parallel_for(
      tbb::blocked_range<int>(0, threads, 1),
      [&](const tbb::blocked_range<int>& r) {
        for (int t = r.begin(); t != r.end(); ++t) {
          const size_t begin = lines * t / threads * 64, end = lines * (t + 1) / threads * 64;
          Copy(reinterpret_cast<float*>(reinterpret_cast<char*>(dst) + begin),
               reinterpret_cast<const float*>(reinterpret_cast<const char*>(src) + begin),
               end - begin, nt);
        }
      },
      tbb::static_partitioner());
}

}  // namespace detail

// The measured roofline. GB/s count 2 bytes per copied byte (read + write), as STREAM
// does; write-allocate reads of plain stores are not counted (nor are they in bnorm's
// traffic model).
struct Bandwidth {
  double copy_gbs = 0;     // plain loads and stores
  double copy_nt_gbs = 0;  // non-temporal (streaming) stores
  size_t array_bytes = 0;  // size of each of the two arrays
  int threads = 0;
  int runs = 0;
  const char* isa = "";
  bool nt_available = BNORM_ROOFLINE_X86 != 0;
};

// Returns the size of each copy array: 8x the LLC, at least 256 MiB, at most
// `cap_bytes` (the LLC reported by a VM can be far larger than what it may use).
inline size_t CopyArrayBytes(size_t cap_bytes = 1024 * kMiB) {
  return std::min(std::max(8 * LastLevelCacheBytes(), 256 * kMiB), cap_bytes) / 64 * 64;
}

// Measures copy bandwidth on the current TBB thread count: best of `runs` copies of an
// `array_bytes` array, with plain and with non-temporal stores. Allocates and touches
// 2 * array_bytes (freed on return).
inline Bandwidth MeasureCopy(size_t array_bytes = CopyArrayBytes(), int runs = 5) {
  Bandwidth bw;
  bw.array_bytes = array_bytes / 64 * 64;
  bw.threads = Threads();
  bw.runs = runs;
  bw.isa = detail::CopyIsa();
  float* src = static_cast<float*>(std::aligned_alloc(64, bw.array_bytes));
  float* dst = static_cast<float*>(std::aligned_alloc(64, bw.array_bytes));
  if (src == nullptr || dst == nullptr) {
    std::free(src);
    std::free(dst);
    return bw;  // zeros: callers print "n/a"
  }
  // Touch both arrays with the threads that will copy them (first-touch placement).
  const size_t n = bw.array_bytes / sizeof(float);
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n, size_t{1} << 16),
                    [&](const tbb::blocked_range<size_t>& r) {
                      for (size_t i = r.begin(); i != r.end(); ++i) {
                        src[i] = static_cast<float>(i & 1023);
                        dst[i] = 0.0f;
                      }
                    });
  for (const bool nt : {false, true}) {
    double best = 0;
    detail::ParallelCopy(dst, src, bw.array_bytes, nt, bw.threads);  // warm-up
    for (int run = 0; run < runs; ++run) {
      const auto start = std::chrono::steady_clock::now();
      detail::ParallelCopy(dst, src, bw.array_bytes, nt, bw.threads);
      const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
      best = std::max(best, 2.0 * bw.array_bytes / seconds.count() * 1e-9);
    }
    (nt ? bw.copy_nt_gbs : bw.copy_gbs) = best;
  }
  std::free(src);
  std::free(dst);
  return bw;
}

}  // namespace roofline
}  // namespace bnorm

#endif  // BNORM_BENCH_ROOFLINE_H_
