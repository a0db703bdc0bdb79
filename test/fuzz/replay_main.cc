// A main() for the bnorm fuzz target without libFuzzer (any compiler): runs
// LLVMFuzzerTestOneInput once on every file given (directories: every file inside),
// then, with --random=N, on N pseudo-random inputs: seeds from the given files with a
// few bytes changed, and fresh random bytes. The Meson suite runs it on the checked-in
// corpus (test/fuzz/corpus); a finding aborts, as under libFuzzer.
//   fuzz_replay [--random=N] [--seed=S] FILE_OR_DIR...
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

// The input being run, written to ./fuzz-replay-crash when the target aborts.
const std::vector<uint8_t>* g_current = nullptr;

void SaveCurrent(int sig) {
  if (g_current) {
    FILE* f = std::fopen("fuzz-replay-crash", "wb");
    if (f) {
      std::fwrite(g_current->data(), 1, g_current->size(), f);
      std::fclose(f);
      const char note[] = "fuzz_replay: input saved to ./fuzz-replay-crash\n";
      (void)!write(2, note, sizeof(note) - 1);
    }
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void Collect(const std::string& path, std::vector<std::string>* files) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "fuzz_replay: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  if (!S_ISDIR(st.st_mode)) {
    files->push_back(path);
    return;
  }
  DIR* dir = opendir(path.c_str());
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());  // a stable order, whatever the file system
  for (const std::string& n : names) Collect(path + "/" + n, files);
}

std::vector<uint8_t> Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  long random_runs = 0;
  unsigned seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--random=", 0) == 0) {
      random_runs = std::atol(arg.c_str() + 9);
    } else if (arg.rfind("--seed=", 0) == 0) {
      seed = static_cast<unsigned>(std::atol(arg.c_str() + 7));
    } else {
      Collect(arg, &files);
    }
  }
  // Under an emulator (BNORM_TEST_QUICK set and not "0") a tenth of the mutations: the
  // corpus itself still runs whole.
  const char* quick = std::getenv("BNORM_TEST_QUICK");
  if (quick != nullptr && *quick != 0 && std::strcmp(quick, "0") != 0) random_runs /= 10;
  signal(SIGABRT, SaveCurrent);
  signal(SIGSEGV, SaveCurrent);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::vector<uint8_t>> inputs;
  for (const std::string& f : files) {
    inputs.push_back(Read(f));
    std::fprintf(stderr, "%s\n", f.c_str());
    g_current = &inputs.back();
    LLVMFuzzerTestOneInput(inputs.back().data(), inputs.back().size());
  }
  std::mt19937 rng(seed);
  for (long run = 0; run < random_runs; ++run) {
    std::vector<uint8_t> data;
    if (!inputs.empty() && run % 4 != 3) {
      data = inputs[rng() % inputs.size()];
      const int changes = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < changes && !data.empty(); ++k) data[rng() % data.size()] = rng() & 255;
    } else {
      data.resize(rng() % 96);
      for (uint8_t& b : data) b = rng() & 255;
    }
    g_current = &data;
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz_replay: %zu files and %ld random inputs passed in %.1f s\n", files.size(),
              random_runs, seconds);
  return 0;
}
