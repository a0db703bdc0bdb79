// Thread safety: 8 application threads call every operation at once, each on its own
// tensors (threaded and BNORM_SERIAL calls, small and large shapes), and get the same
// bits as the same calls made one after the other; failure messages stay per thread.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

constexpr int kThreads = 8;

int Rounds() { return QuickRun() ? 2 : 12; }

// The inputs of every operation for one shape (each thread gets its own, seeded by the
// thread index).
struct Inputs {
  bnorm_shape s;
  std::vector<float> x, dy, y, gamma, beta, mean, var, saved_invstd, rm0, rv0;

  Inputs(const bnorm_shape& shape, uint32_t seed) : s(shape) {
    std::mt19937 rng = Rng(s, seed);
    x = RandomTensor(s, rng);
    dy = RandomTensor(s, rng, 1.0);
    y = RandomTensor(s, rng, 0.5);  // the ReLU mask of backward
    gamma = RandomSigned(s.c, rng, 0.25, 2);
    beta = RandomVec(s.c, rng, -2, 2);
    mean = RandomVec(s.c, rng, -1, 1);
    var = RandomVec(s.c, rng, 0.5, 2);
    saved_invstd = RandomVec(s.c, rng, 0.5, 2);
    rm0 = RandomVec(s.c, rng, -1, 1);
    rv0 = RandomVec(s.c, rng, 0.5, 2);
  }
};

// Every output of every operation, with the statuses of the calls.
struct Outputs {
  std::vector<std::pair<const char*, std::vector<float>>> values;
  std::vector<bnorm_status> statuses;
};

// Runs moments, training forward (plain; ReLU with running and saved statistics),
// inference forward (ReLU), fold, affine (ReLU) and backward (every output; ReLU) with
// `flags` added. Makes no doctest assertion: it runs on the application threads.
Outputs RunAll(const Inputs& in, unsigned flags) {
  const bnorm_shape& s = in.s;
  const size_t e = in.x.size(), c = static_cast<size_t>(s.c);
  const float* g = in.gamma.data();
  const float* b = in.beta.data();
  Outputs out;
  auto& st = out.statuses;
  std::vector<float> mean(c), var(c);
  st.push_back(bnorm_moments_f32(&s, in.x.data(), mean.data(), var.data()));
  std::vector<float> y0(e);
  st.push_back(bnorm_forward_training_f32(&s, in.x.data(), y0.data(), g, b, 1e-5f, 0.1f, nullptr,
                                          nullptr, nullptr, nullptr, flags));
  std::vector<float> y(e), rm = in.rm0, rv = in.rv0, sm(c), si(c);
  st.push_back(bnorm_forward_training_f32(&s, in.x.data(), y.data(), g, b, 1e-5f, 0.1f, rm.data(),
                                          rv.data(), sm.data(), si.data(),
                                          flags | BNORM_FUSE_RELU));
  std::vector<float> yi(e);
  st.push_back(bnorm_forward_inference_f32(&s, in.x.data(), yi.data(), g, b, in.mean.data(),
                                           in.var.data(), 1e-5f, flags | BNORM_FUSE_RELU));
  std::vector<float> scale(c), shift(c);
  st.push_back(
      bnorm_fold_f32(s.c, g, b, in.mean.data(), in.var.data(), 1e-5f, scale.data(), shift.data()));
  std::vector<float> ya(e);
  st.push_back(bnorm_affine_f32(&s, in.x.data(), ya.data(), scale.data(), shift.data(),
                                flags | BNORM_FUSE_RELU));
  std::vector<float> dx(e), dg(c), db(c);
  st.push_back(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.mean.data(),
                                  in.saved_invstd.data(), g, nullptr, dx.data(), dg.data(),
                                  db.data(), flags));
  std::vector<float> dxr(e), dgr(c), dbr(c);
  st.push_back(bnorm_backward_f32(&s, in.x.data(), in.dy.data(), in.mean.data(),
                                  in.saved_invstd.data(), g, in.y.data(), dxr.data(), dgr.data(),
                                  dbr.data(), flags | BNORM_FUSE_RELU));
  out.values = {{"moments mean", std::move(mean)},
                {"moments var", std::move(var)},
                {"training y", std::move(y0)},
                {"training+ReLU y", std::move(y)},
                {"running_mean", std::move(rm)},
                {"running_var", std::move(rv)},
                {"saved_mean", std::move(sm)},
                {"saved_invstd", std::move(si)},
                {"inference y", std::move(yi)},
                {"fold scale", std::move(scale)},
                {"fold shift", std::move(shift)},
                {"affine y", std::move(ya)},
                {"backward dx", std::move(dx)},
                {"backward dgamma", std::move(dg)},
                {"backward dbeta", std::move(db)},
                {"backward+ReLU dx", std::move(dxr)},
                {"backward+ReLU dgamma", std::move(dgr)},
                {"backward+ReLU dbeta", std::move(dbr)}};
  return out;
}

// Returns "" if got equals want bit for bit, else what differs first.
std::string Compare(const Outputs& got, const Outputs& want) {
  for (size_t k = 0; k < got.statuses.size(); ++k)
    if (got.statuses[k] != bnorm_success) return "call " + std::to_string(k) + " failed";
  for (size_t k = 0; k < want.values.size(); ++k) {
    const std::vector<float>& a = got.values[k].second;
    const std::vector<float>& b = want.values[k].second;
    const int64_t i = FirstDifference(a.data(), b.data(), b.size());
    if (i >= 0) {
      return std::string(want.values[k].first) + " differs at " + std::to_string(i) + ": " +
             Fmt(a[i]) + " vs " + Fmt(b[i]);
    }
  }
  return "";
}

// Threaded shapes (above the 64K-value fan-out threshold) of every work plan: NCHW planes
// fused per channel and chunked (count > 256K), NCHW short planes as rows, NHWC rows in
// flat periods and in tiles. Then small ones, which run on the calling thread.
std::vector<bnorm_shape> ThreadedShapes() {
  if (QuickRun()) {
    return {Shape(2, 64, 1024, bnorm_nchw), Shape(2, 77, 1000, bnorm_nhwc),
            Shape(64, 1500, 1, bnorm_nhwc), Shape(2, 77, 1000, bnorm_nchw)};
  }
  return {Shape(2, 64, 1024, bnorm_nchw), Shape(1, 1, 300000, bnorm_nchw),
          Shape(2, 77, 1000, bnorm_nhwc), Shape(400, 40, 20, bnorm_nchw),
          Shape(64, 1500, 1, bnorm_nhwc), Shape(16, 64, 256, bnorm_nhwc),
          Shape(4, 5, 5000, bnorm_nchw),  Shape(3, 7, 30000, bnorm_nhwc)};
}
std::vector<bnorm_shape> SmallShapes() {
  return {Shape(3, 17, 33, bnorm_nchw), Shape(2, 1000, 3, bnorm_nhwc), Shape(1, 7, 15, bnorm_nhwc),
          Shape(2, 3, 5, bnorm_nchw)};
}

TEST_CASE("concurrency: 8 threads calling every operation give the sequential bits") {
  // Thread t works on a threaded shape and a small one, with its own data.
  struct Work {
    std::vector<Inputs> inputs;
    std::vector<Outputs> want;  // computed one call after the other, before the threads
    std::string failure;
  };
  std::vector<Work> work(kThreads);
  const std::vector<bnorm_shape> threaded = ThreadedShapes(), small = SmallShapes();
  for (int t = 0; t < kThreads; ++t) {
    work[t].inputs.emplace_back(threaded[t % threaded.size()], 700 + t);
    work[t].inputs.emplace_back(small[t % small.size()], 800 + t);
    for (const Inputs& in : work[t].inputs) work[t].want.push_back(RunAll(in, 0));
  }
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Work& w = work[t];
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();  // start together
      for (int round = 0; round < Rounds() && w.failure.empty(); ++round) {
        const unsigned flags = (round + t) % 2 ? BNORM_SERIAL : 0u;
        for (size_t k = 0; k < w.inputs.size() && w.failure.empty(); ++k) {
          const std::string diff = Compare(RunAll(w.inputs[k], flags), w.want[k]);
          if (!diff.empty()) {
            w.failure = ShapeString(w.inputs[k].s) + (flags ? " BNORM_SERIAL" : "") + " round " +
                        std::to_string(round) + ": " + diff;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread ", t);
    CHECK_MESSAGE(work[t].failure.empty(), work[t].failure);
  }
}

TEST_CASE("concurrency: failure messages are per thread") {
  // Each thread makes a call that fails with its own value and reads its own message,
  // while the others do the same.
  std::vector<std::string> messages(kThreads);
  std::vector<bnorm_status> statuses(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const bnorm_shape s = Shape(1, 4, 8, bnorm_nchw);
      std::vector<float> x(32, 1.0f), y(32), scale(4, 1.0f), shift(4, 0.0f);
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      for (int i = 0; i < 1000; ++i) {
        // Succeeding calls in between do not clear the message.
        bnorm_affine_f32(&s, x.data(), y.data(), scale.data(), shift.data(), 0);
        statuses[t] =
            bnorm_forward_inference_f32(&s, x.data(), y.data(), nullptr, nullptr, scale.data(),
                                        shift.data(), -static_cast<float>(t + 1), 0);
        messages[t] = bnorm_last_error();
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread ", t, ": ", messages[t]);
    CHECK(statuses[t] == bnorm_invalid_argument);
    CHECK(messages[t].find("eps") != std::string::npos);
    CHECK(messages[t].find("(got -" + std::to_string(t + 1) + ")") != std::string::npos);
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
