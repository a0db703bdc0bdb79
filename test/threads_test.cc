// Threads: bnorm runs its work in the caller's oneTBB task arena, so an engine's arena
// of one thread keeps bnorm on that thread, and BNORM_SERIAL keeps a call on the calling
// thread. The library's internals cannot be hooked from here: task_scheduler_observer
// objects record which threads enter the arenas while bnorm runs, and a positive control
// (the same calls without the restriction bring a worker in) shows they would see one.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <dirent.h>
#include <doctest/doctest.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>
#include <tbb/task_scheduler_observer.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// Records the threads that enter one arena (or are about to run its tasks) while armed.
// Constructed without an arena it watches the calling thread's current one (the
// default arena outside any execute()).
class EntryRecorder : public tbb::task_scheduler_observer {
 public:
  EntryRecorder() { observe(true); }
  explicit EntryRecorder(tbb::task_arena& arena) : tbb::task_scheduler_observer(arena) {
    observe(true);
  }
  ~EntryRecorder() override { observe(false); }

  void Arm(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = on;
  }
  void on_scheduler_entry(bool is_worker) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!armed_) return;
    entries_.push_back(std::this_thread::get_id());
    workers_ += is_worker;
  }
  // Entries by threads other than `caller` while armed.
  int Others(std::thread::id caller) {
    std::lock_guard<std::mutex> lock(mutex_);
    int n = 0;
    for (std::thread::id id : entries_) n += id != caller;
    return n;
  }
  int Workers() {
    std::lock_guard<std::mutex> lock(mutex_);
    return workers_;
  }

 private:
  std::mutex mutex_;
  bool armed_ = false;
  std::vector<std::thread::id> entries_;
  int workers_ = 0;
};

// Returns the number of threads of this process (Linux /proc), or -1.
int ThreadCount() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n;
}

int Repeats() { return QuickRun() ? 1 : 5; }

// Buffers for every operation on one shape.
struct Data {
  bnorm_shape s;
  std::vector<float> x, y, dy, dx, gamma, beta, mean, var, rm, rv, sm, si, dg, db;
  explicit Data(const bnorm_shape& shape) : s(shape) {
    std::mt19937 rng = Rng(s, 33);
    x = RandomTensor(s, rng);
    dy = RandomTensor(s, rng, 1.0);
    y = dx = std::vector<float>(x.size());
    gamma = RandomSigned(s.c, rng, 0.25, 2);
    beta = RandomVec(s.c, rng, -2, 2);
    mean = RandomVec(s.c, rng, -1, 1);
    var = RandomVec(s.c, rng, 0.5, 2);
    rm = mean;
    rv = var;
    sm = mean;
    si = var;
    dg = db = std::vector<float>(s.c);
  }
};

// Runs moments, training, inference, affine and backward (all with ReLU) with `flags`;
// moments has no flags: with BNORM_SERIAL it runs as a slice of every channel. Returns
// the number of failed calls.
int RunOps(Data& d, unsigned flags) {
  const unsigned f = flags | BNORM_FUSE_RELU;
  int failed = 0;
  if (flags & BNORM_SERIAL) {
    failed += bnorm_moments_slice_f32(&d.s, 0, d.s.c, d.x.data(), d.mean.data(), d.var.data(),
                                      flags) != bnorm_success;
  } else {
    failed += bnorm_moments_f32(&d.s, d.x.data(), d.mean.data(), d.var.data()) != bnorm_success;
  }
  failed += bnorm_forward_training_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(), d.beta.data(),
                                       1e-5f, 0.1f, d.rm.data(), d.rv.data(), d.sm.data(),
                                       d.si.data(), f) != bnorm_success;
  failed += bnorm_forward_inference_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(), d.beta.data(),
                                        d.sm.data(), d.rv.data(), 1e-5f, f) != bnorm_success;
  failed += bnorm_affine_f32(&d.s, d.x.data(), d.y.data(), d.gamma.data(), d.beta.data(), f) !=
            bnorm_success;
  failed +=
      bnorm_backward_f32(&d.s, d.x.data(), d.dy.data(), d.sm.data(), d.si.data(), d.gamma.data(),
                         d.y.data(), d.dx.data(), d.dg.data(), d.db.data(), f) != bnorm_success;
  return failed;
}

// Shapes above the fan-out threshold, one per work plan: NCHW planes fused per channel,
// NCHW planes in chunks, NHWC rows (quick: fused planes and rows only).
std::vector<Data> ThreadedData() {
  std::vector<Data> data;
  if (QuickRun()) {
    data.emplace_back(Shape(2, 64, 1024, bnorm_nchw));
    data.emplace_back(Shape(64, 1500, 1, bnorm_nhwc));
    return data;
  }
  for (const bnorm_shape& s : {Shape(8, 64, 1024, bnorm_nchw), Shape(1, 2, 300000, bnorm_nchw),
                               Shape(4, 3, 100000, bnorm_nhwc)})
    data.emplace_back(s);
  return data;
}

// Runs the threaded operations in `arena` until `recorder` has seen a worker, for at
// most ~5 seconds. Returns whether one was seen.
bool WorkerJoins(tbb::task_arena& arena, EntryRecorder& recorder, std::vector<Data>& data) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  recorder.Arm(true);
  while (recorder.Workers() == 0 && std::chrono::steady_clock::now() < end)
    arena.execute([&] {
      for (Data& d : data) RunOps(d, 0);
    });
  recorder.Arm(false);
  return recorder.Workers() > 0;
}

// First in this file: in a fresh process no oneTBB worker thread exists yet.
TEST_CASE("threads: BNORM_SERIAL runs on the calling thread only") {
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<Data> data = ThreadedData();
  const int threads_before = ThreadCount();
  {
    // The default arena: no worker enters while serial calls run.
    EntryRecorder in_default;
    in_default.Arm(true);
    int failed = 0;
    for (int i = 0; i < Repeats(); ++i)
      for (Data& d : data) failed += RunOps(d, BNORM_SERIAL);
    in_default.Arm(false);
    CHECK(failed == 0);
    CHECK(in_default.Others(caller) == 0);
    // Serial calls create no thread at all (oneTBB starts workers on demand).
    if (threads_before > 0) CHECK(ThreadCount() == threads_before);
  }
  if (tbb::info::default_concurrency() < 2) return;  // no worker to see
  {
    // A fresh arena of 2: serial calls bring no worker in; then (the control) the same
    // calls without BNORM_SERIAL do.
    tbb::task_arena two(2);
    EntryRecorder in_two(two);
    in_two.Arm(true);
    int failed = 0;
    two.execute([&] {
      for (int i = 0; i < Repeats(); ++i)
        for (Data& d : data) failed += RunOps(d, BNORM_SERIAL);
    });
    in_two.Arm(false);
    CHECK(failed == 0);
    CHECK(in_two.Workers() == 0);
    CHECK(in_two.Others(caller) == 0);
    CHECK_MESSAGE(WorkerJoins(two, in_two, data),
                  "control: threaded calls in an arena of 2 never brought a worker in");
  }
}

TEST_CASE("threads: an arena of 1 thread runs bnorm on that thread only") {
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<Data> data = ThreadedData();
  EntryRecorder in_default;  // the default arena must not be used either
  tbb::task_arena one(1);
  EntryRecorder in_one(one);
  in_one.Arm(true);
  in_default.Arm(true);
  int failed = 0, concurrency = 0;
  one.execute([&] {
    concurrency = tbb::this_task_arena::max_concurrency();
    for (int i = 0; i < Repeats(); ++i)
      for (Data& d : data) failed += RunOps(d, 0);
  });
  in_one.Arm(false);
  in_default.Arm(false);
  CHECK(concurrency == 1);
  CHECK(failed == 0);
  CHECK(in_one.Others(caller) == 0);
  CHECK(in_one.Workers() == 0);
  CHECK(in_default.Others(caller) == 0);

  // The control: in an arena of 2 the same calls bring a worker into that arena (and
  // still none into the default arena): bnorm's tasks go to the caller's arena.
  if (tbb::info::default_concurrency() < 2) return;
  tbb::task_arena two(2);
  EntryRecorder in_two(two);
  in_default.Arm(true);
  const bool joined = WorkerJoins(two, in_two, data);
  in_default.Arm(false);
  CHECK_MESSAGE(joined, "control: threaded calls in an arena of 2 never brought a worker in");
  CHECK(in_default.Others(caller) == 0);
}

TEST_CASE("threads: results do not depend on the arena") {
  // The same bits in an arena of 1, of 2, the default arena and with BNORM_SERIAL.
  const bnorm_shape s = QuickRun() ? Shape(64, 1500, 1, bnorm_nhwc) : Shape(4, 3, 100000, bnorm_nhwc);
  Data base(s);
  auto run = [&](unsigned flags) {
    Data d = base;
    RunOps(d, flags);
    std::vector<float> out = d.y;
    out.insert(out.end(), d.dx.begin(), d.dx.end());
    out.insert(out.end(), d.rm.begin(), d.rm.end());
    out.insert(out.end(), d.rv.begin(), d.rv.end());
    out.insert(out.end(), d.dg.begin(), d.dg.end());
    return out;
  };
  const std::vector<float> serial = run(BNORM_SERIAL);
  std::vector<float> in_one, in_two;
  tbb::task_arena(1).execute([&] { in_one = run(0); });
  tbb::task_arena(2).execute([&] { in_two = run(0); });
  const std::vector<float> in_default = run(0);
  CheckSameBits("arena of 1", in_one.data(), serial.data(), serial.size());
  CheckSameBits("arena of 2", in_two.data(), serial.data(), serial.size());
  CheckSameBits("default arena", in_default.data(), serial.data(), serial.size());
}

}  // namespace
}  // namespace test
}  // namespace bnorm
