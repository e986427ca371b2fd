#include "evs/common/byte_stream.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace evs {

Result<size_t> FdSource::Read(void* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd_, buf, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) return ErrnoError(errno, StrCat("read ", name_));
  }
}

Result<size_t> StringSource::Read(void* buf, size_t n) {
  size_t k = std::min(n, data_.size() - pos_);
  std::memcpy(buf, data_.data() + pos_, k);
  pos_ += k;
  return k;
}

BytePipe::BytePipe(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

Status BytePipe::Write(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return cancelled_ || closed_ || buffered_ < capacity_; });
    if (cancelled_) return cancel_status_;
    if (closed_) return FailedPreconditionError("write to a closed pipe");
    size_t k = std::min(n, capacity_ - buffered_);
    chunks_.emplace_back(p, p + k);
    buffered_ += k;
    p += k;
    n -= k;
    cv_.notify_all();
  }
  return OkStatus();
}

Result<size_t> BytePipe::Read(void* buf, size_t n) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return cancelled_ || closed_ || buffered_ > 0; });
  if (buffered_ == 0) {
    if (cancelled_) return cancel_status_;
    if (!close_status_.ok()) return close_status_;
    return size_t{0};
  }
  uint8_t* out = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < n && !chunks_.empty()) {
    auto& front = chunks_.front();
    size_t k = std::min(n - done, front.size() - chunk_pos_);
    std::memcpy(out + done, front.data() + chunk_pos_, k);
    done += k;
    chunk_pos_ += k;
    if (chunk_pos_ == front.size()) {
      chunks_.pop_front();
      chunk_pos_ = 0;
    }
  }
  buffered_ -= done;
  cv_.notify_all();
  return done;
}

void BytePipe::Close(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  close_status_ = std::move(status);
  cv_.notify_all();
}

void BytePipe::Cancel(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_) return;
  cancelled_ = true;
  cancel_status_ = std::move(status);
  chunks_.clear();
  buffered_ = 0;
  chunk_pos_ = 0;
  cv_.notify_all();
}

}  // namespace evs
