// Small helpers of the bnorm CLI: argument parsing, target lists, machine facts and a
// minimal JSON writer. Header-only; used by tools/bnorm.cc alone.
#ifndef BNORM_TOOLS_CLI_UTIL_H_
#define BNORM_TOOLS_CLI_UTIL_H_

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bnorm {
namespace tools {

// Exit codes: 0 success, 1 a check or run failed, 2 bad usage.
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Thrown for bad command-line options; main prints the message and exits with 2.
struct UsageError {
  std::string message;
};

// Returns `text` split at every `sep`, empty pieces dropped.
inline std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, sep)) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

// Parses a whole decimal integer in [min, max], or throws UsageError naming `what`.
inline int64_t ParseInt(const std::string& text, const std::string& what, int64_t min,
                        int64_t max) {
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || value < min || value > max) {
    throw UsageError{what + ": expected an integer in [" + std::to_string(min) + ", " +
                     std::to_string(max) + "], got '" + text + "'"};
  }
  return value;
}

// Returns the CPU model from /proc/cpuinfo ("model name", or the Arm implementer and
// part), or "unknown".
inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, implementer, part;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (key == "model name" && !value.empty()) return value;
    if (key == "CPU implementer" && implementer.empty()) implementer = value;
    if (key == "CPU part" && part.empty()) part = value;
  }
  if (!implementer.empty()) return "Arm implementer " + implementer + ", part " + part;
  return "unknown";
}

// Returns the contents of a one-line sysfs file, or "".
inline std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Returns "L1d 48K, L2 2048K, L3 491520K (shared by 0-1)" from cpu0's sysfs caches.
inline std::string CacheSummary() {
  std::string out;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    const std::string type = ReadLine(dir + "/type");
    if (type.empty()) continue;
    if (type == "Instruction") continue;
    if (!out.empty()) out += ", ";
    out += "L" + ReadLine(dir + "/level") + (type == "Data" ? "d " : " ") + ReadLine(dir + "/size");
    const std::string shared = ReadLine(dir + "/shared_cpu_list");
    if (!shared.empty() && shared.find_first_of(",-") != std::string::npos) {
      out += " (shared by cpus " + shared + ")";
    }
  }
  return out.empty() ? "unknown" : out;
}

// Returns the 1-minute load average from /proc/loadavg, or -1.
inline double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
}

// A minimal JSON writer: values are written as they come; the caller keeps the
// nesting right. Non-finite numbers become null (JSON has no Inf or NaN).
class Json {
 public:
  Json& BeginObject() { return Open('{'); }
  Json& EndObject() { return Close('}'); }
  Json& BeginArray() { return Open('['); }
  Json& EndArray() { return Close(']'); }
  Json& Key(const std::string& key) {
    Separate();
    out_ += Quote(key) + ": ";
    after_key_ = true;
    return *this;
  }
  Json& String(const std::string& value) { return Raw(Quote(value)); }
  Json& Number(double value) {
    if (!std::isfinite(value)) return Raw("null");
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.6g", value);
    return Raw(buffer);
  }
  Json& Int(int64_t value) { return Raw(std::to_string(value)); }
  Json& Bool(bool value) { return Raw(value ? "true" : "false"); }
  const std::string& str() const { return out_; }

  // Writes the document to `path`; returns false (errno set) on failure.
  bool WriteFile(const std::string& path) const {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return false;
    const bool ok =
        std::fwrite(out_.data(), 1, out_.size(), f) == out_.size() && std::fputc('\n', f) != EOF;
    return std::fclose(f) == 0 && ok;
  }

 private:
  static std::string Quote(const std::string& s) {
    std::string q = "\"";
    for (const char ch : s) {
      if (ch == '"' || ch == '\\') {
        q += '\\';
        q += ch;
      } else if (static_cast<unsigned char>(ch) < 0x20) {
        char buffer[8];
        std::snprintf(buffer, sizeof(buffer), "\\u%04x", ch);
        q += buffer;
      } else {
        q += ch;
      }
    }
    return q + "\"";
  }
  void Separate() {
    if (after_key_) return;
    if (need_comma_) out_ += ",";
    if (depth_ > 0) out_ += "\n" + std::string(2 * depth_, ' ');
  }
  Json& Raw(const std::string& text) {
    Separate();
    out_ += text;
    after_key_ = false;
    need_comma_ = true;
    return *this;
  }
  Json& Open(char bracket) {
    Separate();
    out_ += bracket;
    after_key_ = false;
    need_comma_ = false;
    ++depth_;
    return *this;
  }
  Json& Close(char bracket) {
    --depth_;
    if (need_comma_) out_ += "\n" + std::string(2 * depth_, ' ');
    out_ += bracket;
    need_comma_ = true;
    return *this;
  }

  std::string out_;
  int depth_ = 0;
  bool need_comma_ = false;
  bool after_key_ = false;
};

}  // namespace tools
}  // namespace bnorm

#endif  // BNORM_TOOLS_CLI_UTIL_H_
