// No heap allocation per call: after one warm-up call, 100 more calls of each operation
// (every variant an engine or a trainer makes, both layouts, serial and threaded shapes;
// 5 calls and fewer shapes under an emulator, BNORM_TEST_QUICK=1) allocate nothing,
// neither in bnorm nor in the oneTBB work they start.
//
// How allocations are seen. This executable defines malloc & co. and every global
// operator new/delete: on Linux the executable's definitions come first in symbol lookup,
// so calls from libbnorm.so, libstdc++ and libtbb.so land here too. oneTBB allocates its
// tasks from libtbbmalloc (scalable_malloc, bound through dlsym, which malloc interposition
// does not see): this executable also defines dlsym and hands oneTBB counting wrappers
// of scalable_malloc and scalable_aligned_malloc. Counted while armed, on every thread.
// Under AddressSanitizer (which owns malloc) the test is skipped.
//
// One known exception, outside bnorm: oneTBB 2021.8 on every CPU but x86 keeps the
// floating-point environment in a heap-allocated fenv_t (d1::cpu_ctl_env when its
// headers do not define __TBB_CPU_CTL_ENV_PRESENT), and every task-dispatch loop
// (context_guard_helper) copies it: two or three 8-byte allocations per parallel_for.
// There, allocations of exactly sizeof(fenv_t) by oneTBB in threaded calls are
// counted apart and reported, not failed; anything else still fails. Calls that run on
// the calling thread (BNORM_SERIAL, slices, small tensors, fold, refused calls) stay
// strict there too: nothing at all may be allocated on the calling thread, and on other
// threads only such fenv_t copies: oneTBB workers that wake up late for the previous
// threaded call and enter their dispatch loop while the next call runs (seen on
// cortex-a72 under qemu). Any call that enters oneTBB on the calling thread copies the
// fenv_t there too (its task_group_context takes the caller's settings), which the
// first test case checks, so a calling-thread path that went through oneTBB would fail.
//
// oneTBB also keeps per-thread pools of task objects, grown a 256-byte block at a time
// when a thread needs more objects at once than ever before. That happens in the first
// threaded calls of a process (a warm-up before the measurement takes it), and rarely
// later, when a new stealing pattern reaches a new high-water mark (seen under load: one
// block in some hundreds of calls). Such blocks are counted apart, reported, and
// accepted up to one per ten calls: anything that allocates per call fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <errno.h>
#include <execinfo.h>
#include <fenv.h>
#include <tbb/task_arena.h>  // defines __TBB_CPU_CTL_ENV_PRESENT where oneTBB has one
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "test/test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BNORM_ALLOC_TEST_SANITIZED 1
#else
#define BNORM_ALLOC_TEST_SANITIZED 0
#endif

#if defined(__TBB_CPU_CTL_ENV_PRESENT)
constexpr bool kTbbHeapFenv = false;
#else
constexpr bool kTbbHeapFenv = true;  // see the top of this file
#endif

namespace bnorm {
namespace test {
namespace {

// ---------------------------------------------------------------------------------
// Counters.

std::atomic<bool> g_armed{false};
std::atomic<long> g_mallocs{0};   // malloc, calloc, realloc, *memalign, aligned_alloc, valloc
std::atomic<long> g_news{0};      // every global operator new
std::atomic<long> g_tbb{0};       // oneTBB's scalable_malloc and scalable_aligned_malloc
std::atomic<long> g_tbb_pool{0};  // apart: blocks of oneTBB's small-object pools
std::atomic<long> g_tbb_fenv{0};  // apart: oneTBB's fenv_t copies (kTbbHeapFenv only)
std::atomic<long> g_tbb_fenv_caller{0};  // those of them on the thread that runs Count()
// oneTBB's small_object_pool grows by blocks of this many bytes (small_object_size).
constexpr size_t kTbbPoolBlock = 256;
std::atomic<bool> g_tbb_hooked{false};

// The call stacks of the first few allocations seen while armed (raw frames; printed
// after the measurement, when printing may allocate).
constexpr int kMaxTraces = 8;
constexpr int kMaxFrames = 24;
struct Trace {
  const char* kind;
  int depth;
  void* frames[kMaxFrames];
};
Trace g_traces[kMaxTraces];
std::atomic<int> g_num_traces{0};
thread_local bool t_in_record = false;
thread_local bool t_caller = false;  // this thread runs the counted calls

// Counts one allocation if armed, and records its call stack (unless `quiet`).
void Record(std::atomic<long>& counter, const char* kind, bool quiet = false) {
  if (!g_armed.load(std::memory_order_relaxed)) return;
  counter.fetch_add(1, std::memory_order_relaxed);
  if (quiet || t_in_record) return;
  const int slot = g_num_traces.fetch_add(1, std::memory_order_relaxed);
  if (slot >= kMaxTraces) return;
  t_in_record = true;
  g_traces[slot].kind = kind;
  g_traces[slot].depth = backtrace(g_traces[slot].frames, kMaxFrames);
  t_in_record = false;
}

struct Counts {
  long mallocs, news, tbb, tbb_pool, tbb_fenv, tbb_fenv_caller;
  // oneTBB's fenv_t copies on other threads than the caller.
  long tbb_fenv_others() const { return tbb_fenv - tbb_fenv_caller; }
  // Everything but oneTBB's pool blocks and fenv_t copies.
  long charged() const { return mallocs + news + tbb; }
};

Counts Now() {
  return Counts{g_mallocs.load(), g_news.load(),     g_tbb.load(),
                g_tbb_pool.load(), g_tbb_fenv.load(), g_tbb_fenv_caller.load()};
}

// Runs fn with the counters armed and returns what it allocated (on any thread).
template <class Fn>
Counts Count(Fn&& fn) {
  const Counts before = Now();
  g_num_traces.store(0);
  t_caller = true;
  g_armed.store(true);
  fn();
  g_armed.store(false);
  t_caller = false;
  const Counts after = Now();
  return Counts{after.mallocs - before.mallocs,   after.news - before.news,
                after.tbb - before.tbb,           after.tbb_pool - before.tbb_pool,
                after.tbb_fenv - before.tbb_fenv, after.tbb_fenv_caller - before.tbb_fenv_caller};
}

std::string Describe(const Counts& c) {
  return std::to_string(c.mallocs) + " malloc-family, " + std::to_string(c.news) +
         " operator new, " + std::to_string(c.tbb) + " oneTBB scalable_malloc, " +
         std::to_string(c.tbb_pool) + " oneTBB task-pool blocks" +
         (kTbbHeapFenv ? ", " + std::to_string(c.tbb_fenv) + " oneTBB fenv_t copies (" +
                             std::to_string(c.tbb_fenv_caller) + " on the calling thread)"
                       : "");
}

// Prints the call stacks recorded by the last Count() to stderr.
void PrintTraces() {
  const int n = std::min(g_num_traces.load(), kMaxTraces);
  for (int i = 0; i < n; ++i) {
    std::fprintf(stderr, "allocation %d (%s):\n", i + 1, g_traces[i].kind);
    std::fflush(stderr);
    backtrace_symbols_fd(g_traces[i].frames, g_traces[i].depth, STDERR_FILENO);
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm

// ---------------------------------------------------------------------------------
// Replacements (glibc: forward to its __libc_* entry points, which never recurse here).

#if !BNORM_ALLOC_TEST_SANITIZED
using bnorm::test::g_mallocs;
using bnorm::test::g_news;
using bnorm::test::Record;

extern "C" {
void* __libc_malloc(size_t size);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* p, size_t size);
void __libc_free(void* p);
void* __libc_memalign(size_t alignment, size_t size);
void* __libc_valloc(size_t size);
void* __libc_pvalloc(size_t size);

void* malloc(size_t size) {
  Record(g_mallocs, "malloc");
  return __libc_malloc(size);
}
void* calloc(size_t count, size_t size) {
  Record(g_mallocs, "calloc");
  return __libc_calloc(count, size);
}
void* realloc(void* p, size_t size) {
  Record(g_mallocs, "realloc");
  return __libc_realloc(p, size);
}
void free(void* p) { __libc_free(p); }
void* memalign(size_t alignment, size_t size) {
  Record(g_mallocs, "memalign");
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(size_t alignment, size_t size) {
  Record(g_mallocs, "aligned_alloc");
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, size_t alignment, size_t size) {
  Record(g_mallocs, "posix_memalign");
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(size_t size) {
  Record(g_mallocs, "valloc");
  return __libc_valloc(size);
}
void* pvalloc(size_t size) {
  Record(g_mallocs, "pvalloc");
  return __libc_pvalloc(size);
}
}  // extern "C"

namespace {

void* CountedNew(size_t size) {
  Record(g_news, "operator new");
  for (;;) {
    if (void* p = __libc_malloc(size ? size : 1)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

void* CountedAlignedNew(size_t size, std::align_val_t alignment) {
  Record(g_news, "operator new (aligned)");
  const size_t a = static_cast<size_t>(alignment) < sizeof(void*) ? sizeof(void*)
                                                                  : static_cast<size_t>(alignment);
  for (;;) {
    if (void* p = __libc_memalign(a, size ? size : 1)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

}  // namespace

void* operator new(size_t size) { return CountedNew(size); }
void* operator new[](size_t size) { return CountedNew(size); }
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  try {
    return CountedNew(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t size, const std::nothrow_t&) noexcept {
  try {
    return CountedNew(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(size_t size, std::align_val_t a) { return CountedAlignedNew(size, a); }
void* operator new[](size_t size, std::align_val_t a) { return CountedAlignedNew(size, a); }
void* operator new(size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return CountedAlignedNew(size, a);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return CountedAlignedNew(size, a);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, size_t) noexcept { __libc_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  __libc_free(p);
}

// oneTBB binds its allocator at its first allocation: dlopen of libtbbmalloc.so.2 from
// its own directory, then dlsym of these names on that handle. Hand it counting wrappers.
namespace {

using DlsymFn = void* (*)(void*, const char*);
using ScalableMallocFn = void* (*)(size_t);
using ScalableAlignedMallocFn = void* (*)(size_t, size_t);
ScalableMallocFn g_scalable_malloc = nullptr;
ScalableAlignedMallocFn g_scalable_aligned_malloc = nullptr;

DlsymFn RealDlsym() {
  static const DlsymFn real = [] {
    // The default version of dlsym: GLIBC_2.34 since libdl moved into libc, before that
    // GLIBC_2.17 (aarch64) or GLIBC_2.2.5 (x86-64).
    for (const char* version : {"GLIBC_2.34", "GLIBC_2.17", "GLIBC_2.2.5"}) {
      if (void* p = dlvsym(RTLD_NEXT, "dlsym", version)) return reinterpret_cast<DlsymFn>(p);
    }
    return static_cast<DlsymFn>(nullptr);
  }();
  return real;
}

void* CountedScalableMalloc(size_t size) {
  Record(bnorm::test::g_tbb, "oneTBB scalable_malloc");
  return g_scalable_malloc(size);
}

void* CountedScalableAlignedMalloc(size_t size, size_t alignment) {
  if (kTbbHeapFenv && size == sizeof(fenv_t)) {
    Record(bnorm::test::g_tbb_fenv, "oneTBB fenv_t", /*quiet=*/true);
    if (bnorm::test::t_caller)
      Record(bnorm::test::g_tbb_fenv_caller, "oneTBB fenv_t", /*quiet=*/true);
  }
  else if (size == bnorm::test::kTbbPoolBlock)
    Record(bnorm::test::g_tbb_pool, "oneTBB task-pool block");
  else
    Record(bnorm::test::g_tbb, "oneTBB scalable_aligned_malloc");
  return g_scalable_aligned_malloc(size, alignment);
}

}  // namespace

extern "C" void* dlsym(void* __restrict handle, const char* __restrict name) noexcept {
  const DlsymFn real = RealDlsym();
  if (real == nullptr) return nullptr;
  void* p = real(handle, name);
  if (p == nullptr) return p;
  if (std::strcmp(name, "scalable_malloc") == 0) {
    g_scalable_malloc = reinterpret_cast<ScalableMallocFn>(p);
    bnorm::test::g_tbb_hooked.store(true);
    return reinterpret_cast<void*>(&CountedScalableMalloc);
  }
  if (std::strcmp(name, "scalable_aligned_malloc") == 0) {
    g_scalable_aligned_malloc = reinterpret_cast<ScalableAlignedMallocFn>(p);
    return reinterpret_cast<void*>(&CountedScalableAlignedMalloc);
  }
  return p;
}
#endif  // !BNORM_ALLOC_TEST_SANITIZED

namespace bnorm {
namespace test {
namespace {

// ---------------------------------------------------------------------------------
// The calls.

// Calls per operation counted after the warm-up (BNORM_ALLOC_CALLS overrides).
int Calls() {
  const char* env = std::getenv("BNORM_ALLOC_CALLS");
  return env && std::atoi(env) > 0 ? std::atoi(env) : QuickRun() ? 5 : 100;
}

// Every buffer the operations read and write, for one shape.
struct Data {
  bnorm_shape s;
  std::vector<float> x, y, dy, dx, gamma, beta, mean, var, running_mean, running_var, saved_mean,
      saved_invstd, scale, shift, dgamma, dbeta;

  explicit Data(const bnorm_shape& shape) : s(shape) {
    std::mt19937 rng = Rng(s, 91);
    x = RandomTensor(s, rng);
    dy = RandomTensor(s, rng, 1.0);
    y = RandomTensor(s, rng, 0.5);
    dx.assign(x.size(), 0.0f);
    gamma = RandomSigned(s.c, rng, 0.25, 2);
    beta = RandomVec(s.c, rng, -2, 2);
    mean = RandomVec(s.c, rng, -1, 1);
    var = RandomVec(s.c, rng, 0.5, 2);
    running_mean = RandomVec(s.c, rng, -1, 1);
    running_var = RandomVec(s.c, rng, 0.5, 2);
    saved_mean = mean;
    saved_invstd = RandomVec(s.c, rng, 0.5, 2);
    scale = RandomSigned(s.c, rng, 0.25, 2);
    shift = RandomVec(s.c, rng, -2, 2);
    dgamma.assign(s.c, 0.0f);
    dbeta.assign(s.c, 0.0f);
  }
};

struct Op {
  const char* name;
  bnorm_status want;  // the status every call must return
  bnorm_status (*call)(Data& d);
  bool threads;  // fans out over oneTBB on a large shape (not BNORM_SERIAL, not fold)
};

bnorm_status Training(Data& d, unsigned flags) {
  return bnorm_forward_training_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(), d.beta.data(),
                                    1e-5f, 0.1f, d.running_mean.data(), d.running_var.data(),
                                    d.saved_mean.data(), d.saved_invstd.data(), flags);
}
bnorm_status Inference(Data& d, unsigned flags) {
  return bnorm_forward_inference_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(), d.beta.data(),
                                     d.mean.data(), d.var.data(), 1e-5f, flags);
}
bnorm_status Affine(Data& d, unsigned flags) {
  return bnorm_affine_f32(&d.s, d.x.data(), d.y.data(), d.scale.data(), d.shift.data(), flags);
}
bnorm_status Backward(Data& d, unsigned flags) {
  return bnorm_backward_f32(&d.s, d.x.data(), d.dy.data(), d.saved_mean.data(),
                            d.saved_invstd.data(), d.gamma.data(), d.y.data(), d.dx.data(),
                            d.dgamma.data(), d.dbeta.data(), flags);
}

const Op kOps[] = {
    {"moments", bnorm_success,
     [](Data& d) { return bnorm_moments_f32(&d.s, d.x.data(), d.mean.data(), d.var.data()); },
     true},
    {"moments, BNORM_SERIAL (a slice of every channel)", bnorm_success,
     [](Data& d) {
       return bnorm_moments_slice_f32(&d.s, 0, d.s.c, d.x.data(), d.mean.data(), d.var.data(),
                                      BNORM_SERIAL);
     },
     false},
    {"forward training (running + saved stats)", bnorm_success,
     [](Data& d) { return Training(d, 0); }, true},
    {"forward training, ReLU, biased running var", bnorm_success,
     [](Data& d) { return Training(d, BNORM_FUSE_RELU | BNORM_RUNNING_VAR_BIASED); }, true},
    {"forward training, BNORM_SERIAL", bnorm_success,
     [](Data& d) { return Training(d, BNORM_SERIAL); }, false},
    {"forward inference", bnorm_success, [](Data& d) { return Inference(d, 0); }, true},
    {"forward inference, ReLU", bnorm_success,
     [](Data& d) { return Inference(d, BNORM_FUSE_RELU); }, true},
    {"fold", bnorm_success,
     [](Data& d) {
       return bnorm_fold_f32(d.s.c, d.gamma.data(), d.beta.data(), d.mean.data(), d.var.data(),
                             1e-5f, d.scale.data(), d.shift.data());
     },
     false},
    {"affine", bnorm_success, [](Data& d) { return Affine(d, 0); }, true},
    {"affine, ReLU", bnorm_success, [](Data& d) { return Affine(d, BNORM_FUSE_RELU); }, true},
    {"affine, ReLU, BNORM_SERIAL", bnorm_success,
     [](Data& d) { return Affine(d, BNORM_FUSE_RELU | BNORM_SERIAL); }, false},
    {"backward (dx, dgamma, dbeta)", bnorm_success, [](Data& d) { return Backward(d, 0); }, true},
    {"backward, ReLU", bnorm_success, [](Data& d) { return Backward(d, BNORM_FUSE_RELU); }, true},
    {"backward, BNORM_SERIAL", bnorm_success, [](Data& d) { return Backward(d, BNORM_SERIAL); },
     false},
    // A rejected call formats its message into a thread-local buffer: no allocation either.
    {"rejected call (eps = -1)", bnorm_invalid_argument,
     [](Data& d) {
       return bnorm_forward_inference_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(),
                                          d.beta.data(), d.mean.data(), d.var.data(), -1.0f, 0);
     },
     false},
};

// Small shapes run on the calling thread; the others are above the fan-out threshold
// (64K values) and run through oneTBB: NCHW planes fused per channel (8x64x1024) or
// cut into chunks (4x3x100000), NCHW short planes as rows (400x40x20), NHWC rows in
// flat periods (8x64x1024, 4x3x100000) and in tiles of wide rows (64x1500x1).
// Quick: the small ones, NCHW fused planes / NHWC flat rows (2x77x1000) and tiled rows.
std::vector<bnorm_shape> AllocShapes(bnorm_layout layout) {
  if (QuickRun()) {
    return {Shape(1, 1, 2, layout), Shape(2, 3, 5, layout), Shape(2, 1000, 3, layout),
            Shape(2, 77, 1000, layout), Shape(64, 1500, 1, layout)};
  }
  return {Shape(1, 1, 2, layout),     Shape(2, 3, 5, layout),     Shape(3, 17, 33, layout),
          Shape(2, 1000, 3, layout),  Shape(8, 64, 1024, layout), Shape(4, 3, 100000, layout),
          Shape(400, 40, 20, layout), Shape(64, 1500, 1, layout)};
}

bool Parallel(const bnorm_shape& s) { return s.n * s.c * s.spatial >= 64 * 1024; }

// oneTBB grows per-thread pools of task objects (and starts its worker threads, which
// initialize themselves asynchronously) during the first parallel calls of a process.
// Runs every operation on every threaded shape until one whole round allocates nothing
// (at most 20 rounds), once per process, and reports how that went.
void SettleTbb() {
  static bool settled = false;
  if (settled) return;
  settled = true;
  std::vector<Data> data;
  for (bnorm_layout layout : kLayouts)
    for (const bnorm_shape& s : AllocShapes(layout))
      if (Parallel(s)) data.emplace_back(s);
  std::string log;
  for (int round = 1; round <= 20; ++round) {
    const Counts c = Count([&] {
      for (Data& d : data)
        for (const Op& op : kOps) op.call(d);
    });
    log += " " + std::to_string(c.charged()) + "+" + std::to_string(c.tbb_pool) + " pool";
    if (kTbbHeapFenv) log += "+" + std::to_string(c.tbb_fenv) + " fenv_t";
    if (c.charged() == 0 && c.tbb_pool == 0 && round > 1) break;
  }
  MESSAGE("warm-up rounds, allocations per round over all threaded shapes and operations:", log);
}

// Warms every operation up once on each shape of `layout`, then counts Calls() calls.
void CheckNoAllocation(bnorm_layout layout) {
  SettleTbb();
  const int calls = Calls();
  for (const bnorm_shape& s : AllocShapes(layout)) {
    INFO("shape ", ShapeString(s), std::string(Parallel(s) ? " (threaded)" : " (calling thread)"));
    Data d(s);
    long fenv_copies = 0, pool_blocks = 0, late_fenv_copies = 0;
    for (const Op& op : kOps) {
      INFO("operation ", std::string(op.name));
      REQUIRE(op.call(d) == op.want);  // warm-up: scratch grows to this shape
      int wrong_status = 0;
      const Counts c = Count([&] {
        for (int i = 0; i < calls; ++i) wrong_status += op.call(d) != op.want;
      });
      CHECK(wrong_status == 0);
      // In calls that go through oneTBB: its fenv_t copies are tolerated where its
      // headers make them (kTbbHeapFenv), its pool growth up to one block per ten calls;
      // both are reported once per shape. In calls on the calling thread: fenv_t copies
      // on oneTBB's worker threads (late for the previous threaded call), never on the
      // calling thread. Anything else fails.
      const bool threaded = op.threads && Parallel(s);
      const long fenv = !kTbbHeapFenv ? 0 : threaded ? c.tbb_fenv : c.tbb_fenv_others();
      const long pool = threaded && c.tbb_pool * 10 <= std::max(calls, 10) ? c.tbb_pool : 0;
      if (c.charged() + (c.tbb_pool - pool) + (c.tbb_fenv - fenv) != 0) {
        PrintTraces();
        FAIL_CHECK(calls << " calls allocated: " << Describe(c) << " (call stacks on stderr)");
      }
      (threaded ? fenv_copies : late_fenv_copies) += fenv;
      pool_blocks += pool;
    }
    if (fenv_copies > 0 || pool_blocks > 0) {
      MESSAGE(ShapeString(s), ": in ", calls, " calls of each threaded operation oneTBB grew its ",
              "task pools by ", pool_blocks, " blocks and copied its heap fenv_t ", fenv_copies,
              " times (not bnorm's; see the top of the file)");
    }
    if (late_fenv_copies > 0) {
      MESSAGE(ShapeString(s), ": during the calls that run on the calling thread, oneTBB's ",
              "worker threads copied their heap fenv_t ", late_fenv_copies,
              " times, the calling thread never (workers late for an earlier threaded call)");
    }
  }
}

// ---------------------------------------------------------------------------------

TEST_CASE("alloc: the counters see malloc, new and oneTBB's allocator") {
  volatile size_t size = 64;
  const Counts c = Count([&] {
    void* p = std::malloc(size);
    p = std::realloc(p, 2 * size);
    std::free(p);
    std::free(std::calloc(size, 2));
    ::operator delete(::operator new(size));
    ::operator delete (::operator new (size, std::align_val_t{64}), std::align_val_t{64});
    std::free(strdup("calls malloc inside libc.so"));
  });
  CHECK(c.mallocs == 4);
  CHECK(c.news == 2);
  // Calls from libbnorm.so are seen too: a fresh thread's first call of a shape grows
  // that thread's scratch (if bnorm ever stops allocating there, pick another probe).
  Data d(Shape(64, 1500, 1, bnorm_nhwc));
  Counts first{};
  std::thread([&] { first = Count([&] { Training(d, 0); }); }).join();
  MESSAGE("first call on a fresh thread: ", Describe(first));
  CHECK(first.mallocs + first.news > 0);
  // oneTBB's own allocations are counted whichever allocator it bound.
  SettleTbb();
  MESSAGE("oneTBB allocator: ",
          std::string(g_tbb_hooked ? "scalable_malloc (libtbbmalloc)" : "malloc"));
  // Where oneTBB copies its fenv_t on the heap, a call that enters oneTBB does so on the
  // calling thread too: what keeps calling-thread calls strict (see the top of the file).
  const Counts threaded = Count([&] { Affine(d, 0); });
  MESSAGE("one threaded call after the warm-up: ", Describe(threaded));
  if (kTbbHeapFenv) CHECK(threaded.tbb_fenv_caller > 0);
}

TEST_CASE("alloc: no allocation per call, NCHW") { CheckNoAllocation(bnorm_nchw); }

TEST_CASE("alloc: no allocation per call, NHWC") { CheckNoAllocation(bnorm_nhwc); }

}  // namespace
}  // namespace test
}  // namespace bnorm

int main(int argc, char** argv) {
  if (BNORM_ALLOC_TEST_SANITIZED) {
    std::puts("alloc_test: skipped under a sanitizer (it owns malloc)");
    return 77;
  }
  // backtrace() loads libgcc_s at its first call: do it now, not inside a counted call.
  void* frames[2];
  backtrace(frames, 2);
  doctest::Context context(argc, argv);
  return context.run();
}
