// An out-of-tree C++ program built against the installed bnorm through CMake
// (find_package(bnorm), target bnorm::bnorm): moments and an inference forward pass with
// ReLU through bnorm.hpp on a small NHWC tensor, checked against double, and a refused
// call that throws bnorm::Error. Exits 0 when everything agrees.
#include <bnorm/bnorm.hpp>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
  if (bnorm::Version() != BNORM_VERSION_STRING || bnorm::Version() != BNORM_PACKAGE_VERSION) {
    std::fprintf(stderr, "library %s, headers %s, package %s\n", bnorm::Version().c_str(),
                 BNORM_VERSION_STRING, BNORM_PACKAGE_VERSION);
    return 1;
  }
  const bnorm::Shape shape{3, 4, 6, bnorm::Layout::kNHWC};
  const int c = 4, count = 3 * 6;
  std::vector<float> x(shape.elements()), y(x.size()), mean(c), var(c);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 5) % 13) - 4.0f;
  const std::vector<float> gamma{1.0f, 2.0f, -1.0f, 0.5f}, beta{0.0f, -1.0f, 2.0f, 0.5f};
  int bad = 0;
  try {
    bnorm::Moments(shape, x, mean, var);
    bnorm::ForwardInference(shape, x, y, gamma, beta, mean, var, 1e-5f, bnorm::kFuseRelu);
    for (int ch = 0; ch < c; ++ch) {
      double sum = 0, m2 = 0;
      for (int k = 0; k < count; ++k) sum += x[k * c + ch];
      const double m = sum / count;
      for (int k = 0; k < count; ++k) m2 += (x[k * c + ch] - m) * (x[k * c + ch] - m);
      const double v = m2 / count;
      bad += std::fabs(mean[ch] - m) > 1e-6 * (1 + std::fabs(m));
      bad += std::fabs(var[ch] - v) > 1e-6 * v;
      for (int k = 0; k < count; ++k) {
        const double t = (x[k * c + ch] - m) / std::sqrt(v + 1e-5) * gamma[ch] + beta[ch];
        const double want = t > 0 ? t : 0;
        bad += std::fabs(y[k * c + ch] - want) > 1e-5 * (1 + std::fabs(want));
      }
    }
  } catch (const bnorm::Error& e) {
    std::fprintf(stderr, "bnorm::Error: %s\n", e.what());
    return 1;
  }
  bool threw = false;
  try {
    bnorm::ForwardInference(shape, x, y, gamma, beta, mean, var, -1.0f);  // eps < 0
  } catch (const bnorm::Error& e) {
    threw = e.status() == bnorm_invalid_argument &&
            std::string(e.what()).find("eps") != std::string::npos;
  }
  std::printf("bnorm %s (%s) through CMake: y[5] = %.6f, %d values off, error %s\n",
              bnorm::Version().c_str(), bnorm::ActiveTarget().c_str(), y[5], bad,
              threw ? "thrown" : "NOT thrown");
  return bad != 0 || !threw;
}
