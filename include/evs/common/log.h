// Logging: one line per event on stderr, "2026-11-28T01:02:03.456Z INFO msg
// key=value …". Thread-safe (each line is one write(2)). Never log a secret.
//
//   EVS_LOG(kInfo) << "layer converted" << Kv("layer", digest.Short())
//                  << Kv("ms", elapsed_ms);
#pragma once

#include <sstream>
#include <string_view>

namespace evs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warn"/"warning", "error"; false if unknown.
bool ParseLogLevel(std::string_view text, LogLevel* level);

// One log line; written when destroyed.
class LogLine {
 public:
  explicit LogLine(LogLevel level) : level_(level) {}
  ~LogLine();
  template <typename T>
  LogLine& operator<<(const T& value) {
    out_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream out_;
};

// " key=value", quoting the value if it has spaces or quotes.
struct Kv {
  template <typename T>
  Kv(std::string_view key, const T& value) : key(key) {
    std::ostringstream o;
    o << value;
    this->value = o.str();
  }
  std::string_view key;
  std::string value;
};
std::ostream& operator<<(std::ostream& out, const Kv& kv);

}  // namespace evs

#define EVS_LOG(level)                                           \
  if (::evs::LogLevel::level < ::evs::GetLogLevel()) {           \
  } else                                                         \
    ::evs::LogLine(::evs::LogLevel::level)
