// Tensors beyond 2^31 bytes and 2^31 elements: indexing must be 64-bit everywhere.
// The default cases cost little memory: tensors live in anonymous MAP_NORESERVE
// mappings that are never written except at a few places, so reading them maps the
// shared zero page, and writes go through NCHW channel slices, which touch one plane.
//  - sweeps (read only): moments and the backward sums over > 2^31 elements, zero
//    except for markers at the start, the end, and on both sides of element 2^29
//    (byte 2^31) and element 2^31; expected values follow from the markers alone.
//    BNORM_HUGE_SWEEPS=0 skips them (emulated cross builds: hours under qemu).
//  - far writes: every operation on single-channel slices of a 2^31 + 2049-element
//    NCHW tensor, at the channels that hold element 2^29 and element 2^31.
// The opt-in case (BNORM_HUGE_TEST=1, about 9 GB of free memory) fills a tensor of
// more than 2^31 elements, runs affine in place and moments over all of it, and checks
// values at the start, the end and around the 2^31 boundary against the float64
// reference; it prints its time and peak memory.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "test/test_util.h"

namespace bnorm {
namespace test {
namespace {

constexpr int64_t k29 = int64_t{1} << 29;  // element at byte offset 2^31
constexpr int64_t k31 = int64_t{1} << 31;

// An anonymous private mapping of `count` floats: zero until written. With
// `noreserve`, memory is committed only for the pages written.
class Mapping {
 public:
  Mapping(int64_t count, bool noreserve) : bytes_(static_cast<size_t>(count) * sizeof(float)) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0), -1, 0);
    if (p == MAP_FAILED) return;
    data_ = static_cast<float*>(p);
    // Huge pages: fewer faults, and reads of untouched memory map the huge zero page.
    madvise(p, bytes_, MADV_HUGEPAGE);
  }
  ~Mapping() {
    if (data_) munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  float* data() const { return data_; }
  bool ok() const { return data_ != nullptr; }

 private:
  size_t bytes_;
  float* data_ = nullptr;
};

bool EnvIs(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) == value;
}

// Returns MemAvailable from /proc/meminfo in bytes (0 if unknown).
int64_t AvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

int64_t PeakRssBytes() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Returns the channel of element `index` of `s`.
int64_t ChannelOf(const bnorm_shape& s, int64_t index) {
  return s.layout == bnorm_nchw ? (index / s.spatial) % s.c : index % s.c;
}

// A few nonzero values in a tensor of zeros, and what they make of its statistics.
struct Marker {
  int64_t index;
  float value;
};

// Elements 3 * 715827901 = 2^31 + 55: more than 2^31 elements, 3 channels of 715827901.
constexpr int64_t kSweepElements = 3 * int64_t{715827901};

std::vector<Marker> SweepMarkers() {
  // Distinct values: a marker read twice, missed, or read from the wrong place (an
  // index that wrapped at 2^31) changes some channel's sum of squares.
  const int64_t at[] = {
      0, 1, k29 - 1, k29, k29 + 1, k31 - 1, k31, k31 + 1, kSweepElements - 2, kSweepElements - 1};
  std::vector<Marker> m;
  float v = 1.0f;
  for (int64_t i : at) {
    m.push_back({i, i == k29 + 1 ? -3.5f : v});  // one negative: the ReLU mask drops it
    v *= 2.0f;
  }
  return m;
}

// Per-channel float64 sums over the markers of `s` (the rest is zero).
struct Sums {
  std::vector<double> sum, sum_sq;
};
Sums MarkerSums(const bnorm_shape& s, const std::vector<Marker>& markers, bool positive_only) {
  Sums out{std::vector<double>(s.c, 0.0), std::vector<double>(s.c, 0.0)};
  for (const Marker& m : markers) {
    if (positive_only && m.value <= 0) continue;
    const int64_t ch = ChannelOf(s, m.index);
    out.sum[ch] += m.value;
    out.sum_sq[ch] += static_cast<double>(m.value) * m.value;
  }
  return out;
}

// Checks moments of the marker tensor: mean = sum / count, var = sum_sq / count - mean^2.
void CheckMarkerMoments(const bnorm_shape& s, const std::vector<Marker>& markers, const float* mean,
                        const float* var) {
  const Sums sums = MarkerSums(s, markers, false);
  const double count = static_cast<double>(ref::Count(s));
  for (int64_t ch = 0; ch < s.c; ++ch) {
    INFO("channel ", ch);
    const double m = sums.sum[ch] / count, v = sums.sum_sq[ch] / count - m * m;
    CHECK_MESSAGE(ref::Near(mean[ch], m, ref::MeanMag(m, v), kMeanUlps),
                  "mean " << Fmt(mean[ch]) << ", want " << Fmt(m));
    CHECK_MESSAGE(ref::Near(var[ch], v, v, kVarRelBigMean / ref::kUlp),
                  "var " << Fmt(var[ch]) << ", want " << Fmt(v));
  }
}

TEST_CASE("huge: statistics over more than 2^31 elements read every marker (zero-page sweeps)") {
  if (EnvIs("BNORM_HUGE_SWEEPS", "0")) {
    MESSAGE("skipped: BNORM_HUGE_SWEEPS=0 (sweeps of 8.6 GB of zero pages)");
    return;
  }
  Mapping x(kSweepElements, /*noreserve=*/true);
  if (!x.ok()) {
    MESSAGE("skipped: cannot map 8.6 GB of address space (MAP_NORESERVE)");
    return;
  }
  const std::vector<Marker> markers = SweepMarkers();
  for (const Marker& m : markers) x.data()[m.index] = m.value;
  const std::vector<bnorm_shape> shapes = {Shape(1, 3, kSweepElements / 3, bnorm_nchw),
                                           Shape(1, 3, kSweepElements / 3, bnorm_nhwc),
                                           Shape(1, 1, kSweepElements, bnorm_nchw)};
  const auto start = std::chrono::steady_clock::now();
  // Moments: every shape on the best target, one channel of all of it on the others.
  const std::vector<std::string> targets = SupportedTargets();
  RestoreBestTarget restore;
  for (const std::string& target : targets) {
    REQUIRE(bnorm_set_target(target.c_str()) == bnorm_success);
    for (const bnorm_shape& s : shapes) {
      if (target != targets[0] && s.c != 1) continue;
      INFO("target ", target, ", shape ", ShapeString(s));
      float mean[3], var[3];
      REQUIRE_MESSAGE(bnorm_moments_f32(&s, x.data(), mean, var) == bnorm_success,
                      std::string(bnorm_last_error()));
      CheckMarkerMoments(s, markers, mean, var);
    }
  }
  REQUIRE(bnorm_set_target(nullptr) == bnorm_success);
  // Backward sums (dx NULL: nothing written) with x = dy = y: saved_mean 0 and
  // saved_invstd 1 make dbeta = sum(dy') and dgamma = sum(dy' * x), dy' = dy masked
  // where y <= 0 with the ReLU.
  const float zeros[3] = {0, 0, 0}, ones[3] = {1, 1, 1};
  for (const bnorm_shape& s : {shapes[0], shapes[1]}) {
    for (unsigned flags : {0u, unsigned{BNORM_FUSE_RELU}}) {
      INFO("backward, shape ", ShapeString(s), ", flags ", flags);
      float dgamma[3], dbeta[3];
      REQUIRE_MESSAGE(bnorm_backward_f32(&s, x.data(), x.data(), zeros, ones, nullptr, x.data(),
                                         nullptr, dgamma, dbeta, flags) == bnorm_success,
                      std::string(bnorm_last_error()));
      const Sums sums = MarkerSums(s, markers, flags != 0);
      for (int64_t ch = 0; ch < s.c; ++ch) {
        INFO("channel ", ch);
        CHECK_MESSAGE(dbeta[ch] == static_cast<float>(sums.sum[ch]),
                      "dbeta " << Fmt(dbeta[ch]) << ", want " << Fmt(sums.sum[ch]));
        CHECK_MESSAGE(dgamma[ch] == static_cast<float>(sums.sum_sq[ch]),
                      "dgamma " << Fmt(dgamma[ch]) << ", want " << Fmt(sums.sum_sq[ch]));
      }
    }
  }
  MESSAGE("sweeps of " << kSweepElements << " elements: " << Seconds(start) << " s, peak RSS "
                       << PeakRssBytes() / (1 << 20) << " MiB");
}

TEST_CASE(
    "huge: every operation writes and reads at offsets beyond 2^31 bytes and 2^31 elements "
    "(NCHW channel slices)") {
  // 1048065 channels of 2049 values: 2^31 + 2049 elements. Channel 262016 holds element
  // 2^29 (byte 2^31), the last channel element 2^31 (byte 2^33).
  const bnorm_shape s = Shape(1, 1048065, 2049, bnorm_nchw);
  const int64_t elements = ref::Elements(s);
  REQUIRE(elements > k31);
  Mapping x(elements, true), y(elements, true), dy(elements, true), dx(elements, true);
  if (!x.ok() || !y.ok() || !dy.ok() || !dx.ok()) {
    MESSAGE("skipped: cannot map 4 x 8.6 GB of address space (MAP_NORESERVE)");
    return;
  }
  const int64_t kFarChannels[] = {k29 / s.spatial, k31 / s.spatial, 0};
  REQUIRE(kFarChannels[0] * s.spatial < k29);
  REQUIRE((kFarChannels[0] + 1) * s.spatial > k29);
  REQUIRE(kFarChannels[1] == s.c - 1);
  std::mt19937 rng(70);
  std::vector<float> gamma = RandomSigned(s.c, rng, 0.5, 2), beta = RandomVec(s.c, rng, -1, 1);
  std::vector<float> mean = RandomVec(s.c, rng, -1, 1), var = RandomVec(s.c, rng, 0.5, 2);
  std::vector<float> invstd = RandomVec(s.c, rng, 0.5, 2);
  for (int64_t ch : kFarChannels) {
    const int64_t base = ch * s.spatial;
    INFO("channel ", ch, " (elements ", base, " to ", base + s.spatial, ")");
    // The channel's values, and a one-channel copy of it for the reference.
    const bnorm_shape one = Shape(1, 1, s.spatial, bnorm_nchw);
    std::mt19937 r(static_cast<uint32_t>(ch));
    const std::vector<float> xc = RandomTensor(one, r), dyc = RandomTensor(one, r, 1.0);
    std::copy(xc.begin(), xc.end(), x.data() + base);
    std::copy(dyc.begin(), dyc.end(), dy.data() + base);
    const float g = gamma[ch], b = beta[ch];
    auto check_plane = [&](const char* what, const float* out, const ref::Output& want) {
      CheckTensor(what, one, out + base, want, kOutUlps);
      // The neighbours were not written (still the zero page).
      if (ch > 0) CHECK_MESSAGE(out[base - 1] == 0.0f, what << ": wrote before the slice");
      if (ch + 1 < s.c)
        CHECK_MESSAGE(out[base + s.spatial] == 0.0f, what << ": wrote after the slice");
    };
    ForEachTarget([&](const std::string&) {
      float m_out[1], v_out[1];
      std::vector<float> mo(s.c, -1.0f), vo(s.c, -1.0f);
      REQUIRE(bnorm_moments_slice_f32(&s, ch, ch + 1, x.data(), mo.data(), vo.data(), 0) ==
              bnorm_success);
      m_out[0] = mo[ch];
      v_out[0] = vo[ch];
      CheckMoments("mean", m_out, "var", v_out, ref::Moments(one, xc.data()), kVarRel);
      CHECK((ch == 0 || mo[ch - 1] == -1.0f));

      REQUIRE(bnorm_affine_slice_f32(&s, ch, ch + 1, x.data(), y.data(), gamma.data(), beta.data(),
                                     0) == bnorm_success);
      check_plane("affine y", y.data(), ref::Affine(one, xc.data(), &g, &b, false));

      REQUIRE(bnorm_forward_inference_slice_f32(&s, ch, ch + 1, x.data(), y.data(), gamma.data(),
                                                beta.data(), mean.data(), var.data(), 1e-5f,
                                                BNORM_FUSE_RELU) == bnorm_success);
      check_plane("inference y", y.data(),
                  ref::ForwardInference(one, xc.data(), &g, &b, &mean[ch], &var[ch], 1e-5f, true));

      std::vector<float> sm(s.c, 0.0f), si(s.c, 0.0f);
      REQUIRE(bnorm_forward_training_slice_f32(&s, ch, ch + 1, x.data(), y.data(), gamma.data(),
                                               beta.data(), 1e-5f, 0.1f, nullptr, nullptr,
                                               sm.data(), si.data(), 0) == bnorm_success);
      const ref::Training want_t = ref::ForwardTraining(one, xc.data(), &g, &b, 1e-5f, false);
      check_plane("training y", y.data(), want_t.y);
      CheckSaved(&sm[ch], &si[ch], want_t.stats, want_t.invstd, kVarRel);

      std::vector<float> dg(s.c, 0.0f), db(s.c, 0.0f);
      REQUIRE(bnorm_backward_slice_f32(&s, ch, ch + 1, x.data(), dy.data(), mean.data(),
                                       invstd.data(), gamma.data(), nullptr, dx.data(), dg.data(),
                                       db.data(), 0) == bnorm_success);
      const ref::Gradients want_b =
          ref::Backward(one, xc.data(), dyc.data(), &mean[ch], &invstd[ch], &g, nullptr, false);
      check_plane("dx", dx.data(), want_b.dx);
      CheckChannels("dgamma", &dg[ch], want_b.dgamma.value, want_b.dgamma.mag, kOutUlps);
      CheckChannels("dbeta", &db[ch], want_b.dbeta.value, want_b.dbeta.mag, kOutUlps);

      // In place: y == x (then restore x).
      REQUIRE(bnorm_affine_slice_f32(&s, ch, ch + 1, x.data(), x.data(), gamma.data(), beta.data(),
                                     0) == bnorm_success);
      check_plane("affine in place", x.data(), ref::Affine(one, xc.data(), &g, &b, false));
      std::copy(xc.begin(), xc.end(), x.data() + base);
    });
  }
}

// The pattern of the opt-in test: multiples of 0.25 in [-128, 128), so that affine
// with the scales and shifts below is exact.
float Pattern(int64_t i) { return static_cast<float>((i * 7) % 1024) * 0.25f - 128.0f; }

// Runs fn(begin, end) over [0, count) on two threads.
template <class Fn>
void Split(int64_t count, Fn fn) {
  const int64_t half = count / 2;
  std::thread t([&] { fn(int64_t{0}, half); });
  fn(half, count);
  t.join();
}

TEST_CASE(
    "huge: affine in place and moments on more than 2^31 elements (opt-in: "
    "BNORM_HUGE_TEST=1, about 9 GB)") {
  const int64_t spatial = 715827901, c = 3, elements = c * spatial;  // 2^31 + 55
  const int64_t need = elements * 4 + (int64_t{512} << 20);
  if (!EnvIs("BNORM_HUGE_TEST", "1")) {
    MESSAGE("skipped: set BNORM_HUGE_TEST=1 to run it (needs about " << need / 1e9
                                                                     << " GB of free memory)");
    return;
  }
  const int64_t available = AvailableBytes();
  if (available < need) {
    MESSAGE("skipped: needs about " << need / 1e9 << " GB of free memory, MemAvailable is "
                                    << available / 1e9 << " GB");
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  Mapping buf(elements, /*noreserve=*/false);
  if (!buf.ok()) {
    MESSAGE("skipped: mmap of " << elements * 4 / 1e9 << " GB failed");
    return;
  }
  float* x = buf.data();
  const float scale[3] = {2.0f, 0.5f, -1.0f}, shift[3] = {1.0f, -3.0f, 0.25f};
  // Windows checked exactly: start, the 2^31-byte and 2^31-element boundaries, the end.
  const int64_t kWindow = 4096;
  const int64_t window_starts[] = {0, k29 - kWindow, k31 - kWindow, elements - kWindow};
  for (bnorm_layout layout : kLayouts) {
    const bnorm_shape s = Shape(1, c, spatial, layout);
    INFO("shape ", ShapeString(s));
    Split(elements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) x[i] = Pattern(i);
    });
    const auto t_affine = std::chrono::steady_clock::now();
    REQUIRE_MESSAGE(bnorm_affine_f32(&s, x, x, scale, shift, 0) == bnorm_success,
                    std::string(bnorm_last_error()));
    MESSAGE(ShapeString(s) << ": affine in place on " << elements << " elements in "
                           << Seconds(t_affine) << " s");
    auto want = [&](int64_t i) {
      const int64_t ch = ChannelOf(s, i);
      return Pattern(i) * scale[ch] + shift[ch];  // exact in float32
    };
    int64_t bad = 0;
    auto check = [&](int64_t i) {
      if (Bits(x[i]) != Bits(want(i)) && bad++ < kMaxReports)
        FAIL_CHECK("y at " << Where(s, i) << " = " << Fmt(x[i]) << ", want " << Fmt(want(i)));
    };
    for (int64_t w : window_starts)
      for (int64_t i = w; i < std::min(elements, w + 2 * kWindow); ++i) check(i);
    for (int64_t i = 0; i < elements; i += 999983) check(i);  // a prime stride
    CHECK_MESSAGE(bad == 0, bad << " values of affine in place are wrong");

    // Moments of the result against a float64 two-pass reference over every element.
    float mean[3], var[3];
    const auto t_moments = std::chrono::steady_clock::now();
    REQUIRE_MESSAGE(bnorm_moments_f32(&s, x, mean, var) == bnorm_success,
                    std::string(bnorm_last_error()));
    MESSAGE(ShapeString(s) << ": moments in " << Seconds(t_moments) << " s");
    double sum[2][3] = {}, m2[2][3] = {}, ref_mean[3];
    Split(elements, [&](int64_t b, int64_t e) {
      double* acc = sum[b == 0 ? 0 : 1];
      for (int64_t i = b; i < e; ++i) acc[ChannelOf(s, i)] += x[i];
    });
    for (int ch = 0; ch < 3; ++ch) ref_mean[ch] = (sum[0][ch] + sum[1][ch]) / spatial;
    Split(elements, [&](int64_t b, int64_t e) {
      double* acc = m2[b == 0 ? 0 : 1];
      for (int64_t i = b; i < e; ++i) {
        const double d = x[i] - ref_mean[ChannelOf(s, i)];
        acc[ChannelOf(s, i)] += d * d;
      }
    });
    for (int ch = 0; ch < 3; ++ch) {
      INFO("channel ", ch);
      const double v = (m2[0][ch] + m2[1][ch]) / spatial;
      CHECK_MESSAGE(ref::Near(mean[ch], ref_mean[ch], ref::MeanMag(ref_mean[ch], v), kMeanUlps),
                    "mean " << Fmt(mean[ch]) << ", want " << Fmt(ref_mean[ch]));
      CHECK_MESSAGE(ref::Near(var[ch], v, v, kVarRelBigMean / ref::kUlp),
                    "var " << Fmt(var[ch]) << ", want " << Fmt(v));
    }
  }
  // One channel of all 2^31 + 55 values (count per channel beyond 2^31).
  {
    const bnorm_shape s = Shape(1, 1, elements, bnorm_nchw);
    float mean, var;
    REQUIRE(bnorm_moments_f32(&s, x, &mean, &var) == bnorm_success);
    double sum[2] = {}, m2[2] = {};
    Split(elements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum[b == 0 ? 0 : 1] += x[i];
    });
    const double m = (sum[0] + sum[1]) / elements;
    Split(elements, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) m2[b == 0 ? 0 : 1] += (x[i] - m) * (x[i] - m);
    });
    const double v = (m2[0] + m2[1]) / elements;
    CHECK_MESSAGE(ref::Near(mean, m, ref::MeanMag(m, v), kMeanUlps),
                  "one channel: mean " << Fmt(mean) << ", want " << Fmt(m));
    CHECK_MESSAGE(ref::Near(var, v, v, kVarRelBigMean / ref::kUlp),
                  "one channel: var " << Fmt(var) << ", want " << Fmt(v));
  }
  MESSAGE("huge test on " << std::string(bnorm_active_target()) << ": " << elements << " elements ("
                          << elements * 4 / 1e9 << " GB) in " << Seconds(start) << " s, peak RSS "
                          << PeakRssBytes() / 1e9 << " GB");
}

}  // namespace
}  // namespace test
}  // namespace bnorm
