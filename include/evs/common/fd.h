// File descriptors and whole-buffer I/O on them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "evs/common/status.h"

namespace evs {

// Owns a file descriptor and closes it when destroyed. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership without closing.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC added; the error names the path.
Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0644);

// Writes all `n` bytes (retrying short writes and EINTR). `what` names the
// file in the error.
Status WriteAll(int fd, const void* data, size_t n, std::string_view what);
Status PwriteAll(int fd, const void* data, size_t n, off_t offset, std::string_view what);

// Reads until `n` bytes or end of file; returns the count read (< n only at
// end of file).
Result<size_t> ReadFull(int fd, void* data, size_t n, std::string_view what);
Result<size_t> PreadFull(int fd, void* data, size_t n, off_t offset, std::string_view what);

}  // namespace evs
