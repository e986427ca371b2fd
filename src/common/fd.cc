#include "evs/common/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace evs {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, StrCat("open ", path));
  return UniqueFd(fd);
}

Status WriteAll(int fd, const void* data, size_t n, std::string_view what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, StrCat("write ", what));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}

Status PwriteAll(int fd, const void* data, size_t n, off_t offset, std::string_view what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, offset);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, StrCat("write ", what, " at offset ", offset));
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += w;
  }
  return OkStatus();
}

Result<size_t> ReadFull(int fd, void* data, size_t n, std::string_view what) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, StrCat("read ", what));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

Result<size_t> PreadFull(int fd, void* data, size_t n, off_t offset, std::string_view what) {
  char* p = static_cast<char*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, p + done, n - done, offset + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, StrCat("read ", what, " at offset ", offset + done));
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

}  // namespace evs
