// Byte streams: a pull interface (ByteSource), a push interface (ByteSink),
// and a bounded pipe that joins a pushing producer thread (an HTTP transfer,
// a decompressor) to a pulling consumer thread (the tar reader).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `n` bytes; returns 0 only at end of stream. May block.
  virtual Result<size_t> Read(void* buf, size_t n) = 0;
};

class ByteSink {
 public:
  virtual ~ByteSink() = default;
  // Consumes all `n` bytes or fails. May block.
  virtual Status Write(const void* data, size_t n) = 0;
};

// Reads from a file descriptor it does not own.
class FdSource : public ByteSource {
 public:
  FdSource(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  Result<size_t> Read(void* buf, size_t n) override;

 private:
  int fd_;
  std::string name_;
};

// Writes to a file descriptor it does not own.
class FdSink : public ByteSink {
 public:
  FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  Status Write(const void* data, size_t n) override { return WriteAll(fd_, data, n, name_); }

 private:
  int fd_;
  std::string name_;
};

// Reads from memory (tests, small manifests).
class StringSource : public ByteSource {
 public:
  explicit StringSource(std::string data) : data_(std::move(data)) {}
  Result<size_t> Read(void* buf, size_t n) override;

 private:
  std::string data_;
  size_t pos_ = 0;
};

// A bounded, thread-safe pipe. The producer calls Write() and finally
// Close(status); the consumer calls Read(). Read() returns the producer's
// error once the buffered bytes are drained; if the consumer gives up it
// calls Cancel(status) and the producer's next Write() fails with it.
// Memory held is at most `capacity` bytes.
class BytePipe : public ByteSource, public ByteSink {
 public:
  explicit BytePipe(size_t capacity = 4u << 20);

  Status Write(const void* data, size_t n) override;
  Result<size_t> Read(void* buf, size_t n) override;
  void Close(Status status = OkStatus());
  void Cancel(Status status);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<uint8_t>> chunks_;
  size_t chunk_pos_ = 0;
  size_t buffered_ = 0;
  size_t capacity_;
  bool closed_ = false;
  Status close_status_;
  bool cancelled_ = false;
  Status cancel_status_;
};

}  // namespace evs
