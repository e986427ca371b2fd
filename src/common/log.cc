#include "evs/common/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <string>

namespace evs {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  if (text == "debug") *level = LogLevel::kDebug;
  else if (text == "info") *level = LogLevel::kInfo;
  else if (text == "warn" || text == "warning") *level = LogLevel::kWarning;
  else if (text == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

LogLine::~LogLine() {
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  struct tm tm;
  ::gmtime_r(&tv.tv_sec, &tm);
  char stamp[64];
  size_t n = ::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  ::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000));
  std::string line = std::string(stamp) + " " + LevelName(level_) + " " + out_.str() + "\n";
  // One write(2) per line keeps lines from different threads whole.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

std::ostream& operator<<(std::ostream& out, const Kv& kv) {
  out << ' ' << kv.key << '=';
  // Values come from clients (snapshot keys, labels): quote anything that
  // could be mistaken for another field, and escape control bytes so that a
  // hostile value cannot forge a log line.
  bool quote = kv.value.empty();
  for (unsigned char c : kv.value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f) quote = true;
  }
  if (!quote) return out << kv.value;
  out << '"';
  for (unsigned char c : kv.value) {
    if (c == '"' || c == '\\') {
      out << '\\' << c;
    } else if (c == '\n') {
      out << "\\n";
    } else if (c == '\t') {
      out << "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out << "\\x" << kHex[c >> 4] << kHex[c & 15];
    } else {
      out << c;
    }
  }
  return out << '"';
}

}  // namespace evs
