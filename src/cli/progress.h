// A one-line progress display with throughput, drawn only when stderr is a
// terminal; silent otherwise (scripts and logs see only results).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace evs::cli {

class ProgressLine {
 public:
  // `label` is shown first ("converting layer.tar.gz"); `total` is 0 when unknown.
  ProgressLine(std::string label, uint64_t total = 0);
  ~ProgressLine();  // clears the line
  // Reports `done` bytes so far; redraws at most ten times a second.
  void Update(uint64_t done);
  bool enabled() const { return enabled_; }

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mu_;
};

// "123.4 MB/s" style formatting for results that are printed anyway.
std::string FormatBytes(uint64_t bytes);
std::string FormatRate(uint64_t bytes, double seconds);

}  // namespace evs::cli
