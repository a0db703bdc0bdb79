// Determinism: for each target, every operation gives bit-identical results whatever the
// number of threads (tbb::task_arena of 1..4), with BNORM_SERIAL, and on repeated runs,
// on shapes big enough to be cut into many chunks. Under an emulator (BNORM_TEST_QUICK=1)
// smaller shapes of the same work plans and fewer arena sizes.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

// The shapes: LargeShapes(), or, quick, the same work plans at a fifth of the values,
// each still cut into at least two items per chunked dimension: fused NCHW planes in 2
// chunks and over kFuseValues per channel in 5, many single-chunk planes, rows in flat
// periods (NCHW spatial 9, NHWC) and in tiles (NCHW spatial 20, NHWC), 2 chunks each.
std::vector<bnorm_shape> DeterminismShapes() {
  if (!QuickRun()) return LargeShapes();
  return {Shape(1, 3, 70001, bnorm_nchw),  Shape(1, 2, 262147, bnorm_nchw),
          Shape(2, 32, 1500, bnorm_nchw),  Shape(2117, 7, 9, bnorm_nchw),
          Shape(145, 50, 20, bnorm_nchw),  Shape(2, 77, 1000, bnorm_nhwc),
          Shape(1, 5, 30005, bnorm_nhwc),  Shape(130, 1100, 1, bnorm_nhwc)};
}

// Arena sizes: 1..4 and 4 again; quick, 1, 3 and 4.
std::vector<int> ThreadCounts() {
  if (QuickRun()) return {1, 3, 4};
  return {1, 2, 3, 4, 4};
}

struct Data {
  std::vector<float> x, dy, y, gamma, beta, mean, var, saved_invstd, rm0, rv0;
};

Data MakeData(const bnorm_shape& s) {
  std::mt19937 rng = Rng(s, 60);
  Data d;
  d.x = RandomTensor(s, rng);
  d.dy = RandomTensor(s, rng, 1.0);
  d.y = RandomTensor(s, rng, 0.5);  // about a third of it <= 0: the ReLU mask
  d.gamma = RandomSigned(s.c, rng, 0.25, 2);
  d.beta = RandomVec(s.c, rng, -2, 2);
  const ref::Stats st = ref::Moments(s, d.x.data());
  d.mean = ToFloat(st.mean);
  d.var = ToFloat(st.var);
  d.saved_invstd.resize(s.c);
  for (int64_t ch = 0; ch < s.c; ++ch)
    d.saved_invstd[ch] = static_cast<float>(1 / std::sqrt(st.var[ch] + 1e-5));
  d.rm0 = RandomVec(s.c, rng, -1, 1);
  d.rv0 = RandomVec(s.c, rng, 0.5, 2);
  return d;
}

// The outputs of every operation, by name, and the statuses of the calls.
struct Outputs {
  std::vector<std::pair<std::string, std::vector<float>>> values;
  std::vector<bnorm_status> statuses;
};

// Runs moments, training forward (ReLU, running and saved statistics), inference forward,
// affine and backward (ReLU) on `d` with `flags` added, and returns every output. Makes
// no doctest assertion (it also runs on other threads).
Outputs RunAll(const bnorm_shape& s, const Data& d, unsigned flags) {
  const size_t e = d.x.size(), c = s.c;
  Outputs out;
  std::vector<float> mean(c), var(c);
  out.statuses.push_back(bnorm_moments_f32(&s, d.x.data(), mean.data(), var.data()));
  std::vector<float> y(e), rm = d.rm0, rv = d.rv0, sm(c), si(c);
  out.statuses.push_back(bnorm_forward_training_f32(
      &s, d.x.data(), y.data(), d.gamma.data(), d.beta.data(), 1e-5f, 0.1f, rm.data(), rv.data(),
      sm.data(), si.data(), flags | BNORM_FUSE_RELU));
  std::vector<float> yi(e);
  out.statuses.push_back(bnorm_forward_inference_f32(&s, d.x.data(), yi.data(), d.gamma.data(),
                                                     d.beta.data(), d.mean.data(), d.var.data(),
                                                     1e-5f, flags));
  std::vector<float> ya(e);
  out.statuses.push_back(bnorm_affine_f32(&s, d.x.data(), ya.data(), d.gamma.data(), d.beta.data(),
                                          flags | BNORM_FUSE_RELU));
  std::vector<float> dx(e), dg(c), db(c);
  out.statuses.push_back(bnorm_backward_f32(
      &s, d.x.data(), d.dy.data(), d.mean.data(), d.saved_invstd.data(), d.gamma.data(), d.y.data(),
      dx.data(), dg.data(), db.data(), flags | BNORM_FUSE_RELU));
  out.values = {{"moments mean", mean}, {"moments var", var},    {"training y", y},
                {"running_mean", rm},   {"running_var", rv},     {"saved_mean", sm},
                {"saved_invstd", si},   {"inference y", yi},     {"affine y", ya},
                {"backward dx", dx},    {"backward dgamma", dg}, {"backward dbeta", db}};
  return out;
}

void CheckSame(const Outputs& got, const Outputs& want) {
  const char* ops[] = {"moments", "forward training", "forward inference", "affine", "backward"};
  REQUIRE(got.statuses.size() == 5);
  for (size_t k = 0; k < 5; ++k)
    CHECK_MESSAGE(got.statuses[k] == bnorm_success, std::string(ops[k]));
  REQUIRE(got.values.size() == want.values.size());
  for (size_t k = 0; k < got.values.size(); ++k)
    CheckSameBits(got.values[k].first.c_str(), got.values[k].second.data(),
                  want.values[k].second.data(), want.values[k].second.size());
}

TEST_CASE("determinism: bit-identical for 1..4 threads, serial, and repeated runs") {
  // Let arenas of up to 4 threads really get 4 threads on a 2-core machine.
  tbb::global_control allow(tbb::global_control::max_allowed_parallelism, 4);
  for (const bnorm_shape& s : DeterminismShapes()) {
    INFO("shape ", ShapeString(s));
    const Data d = MakeData(s);
    ForEachTarget([&](const std::string&) {
      const Outputs serial = RunAll(s, d, BNORM_SERIAL);
      for (int threads : ThreadCounts()) {
        INFO("threads ", threads);
        tbb::task_arena arena(threads);
        Outputs got;
        arena.execute([&] { got = RunAll(s, d, 0); });
        CheckSame(got, serial);
      }
      INFO("default arena, repeated");
      CheckSame(RunAll(s, d, 0), serial);
      CheckSame(RunAll(s, d, BNORM_SERIAL), serial);
    });
  }
}

TEST_CASE("determinism: concurrent calls from several threads") {
  // Four application threads call every operation at once (threaded and serial): the
  // results equal the serial ones (no shared scratch, no cross-talk between calls).
  tbb::global_control allow(tbb::global_control::max_allowed_parallelism, 4);
  // Quick: 2 chunks of NHWC rows instead of 6, and the NCHW planes at half the values.
  const std::vector<bnorm_shape> shapes =
      QuickRun() ? std::vector<bnorm_shape>{Shape(2, 77, 1000, bnorm_nhwc), Shape(2, 3, 20000, bnorm_nchw)}
              : std::vector<bnorm_shape>{Shape(2, 77, 5000, bnorm_nhwc), Shape(4, 3, 20000, bnorm_nchw)};
  for (const bnorm_shape& s : shapes) {
    INFO("shape ", ShapeString(s));
    const Data d = MakeData(s);
    ForEachTarget([&](const std::string&) {
      const Outputs serial = RunAll(s, d, BNORM_SERIAL);
      CheckSame(serial, serial);
      std::vector<Outputs> got(8);
      std::vector<std::thread> threads;
      for (int k = 0; k < 4; ++k)
        threads.emplace_back([&, k] {
          got[2 * k] = RunAll(s, d, 0);
          got[2 * k + 1] = RunAll(s, d, BNORM_SERIAL);
        });
      for (std::thread& t : threads) t.join();
      for (const Outputs& o : got) CheckSame(o, serial);
    });
  }
}

}  // namespace
}  // namespace test
}  // namespace bnorm
