// Where the bytes of a layer file (data region and hash tree) come from when
// they are verified block by block. Here: the local layer file. In lazy
// loading (DESIGN.md §1, "lazy"): a sparse local cache whose missing ranges
// are fetched from the registry with ranged GETs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs::verity {

class LayerBlockSource {
 public:
  virtual ~LayerBlockSource() = default;

  // Reads exactly `n` bytes at `offset` of the layer file into `buf`.
  // Thread-safe: called concurrently from FUSE worker threads. May block
  // (a remote source fetches), but must return in bounded time: a source
  // that cannot get the bytes now returns Unavailable — never zeros and
  // never a partial read — and the reader turns that into EIO. Reading past
  // size() is OutOfRange.
  virtual Status ReadAt(uint64_t offset, void* buf, size_t n) = 0;

  // True when [offset, offset + n) can be read without waiting for the
  // network. Cheap and non-blocking; a hint for scheduling (a reader may
  // serve local ranges first), never a promise that ReadAt succeeds.
  virtual bool IsLocal(uint64_t offset, uint64_t n) const = 0;

  // Size of the whole layer file (data, superblock and tree).
  virtual uint64_t size() const = 0;

  // Names the layer in log lines and errors ("layer sha256:ab12…" or a path).
  virtual const std::string& name() const = 0;
};

// A layer file on local disk, read with pread(2). Every range is local.
class FileBlockSource : public LayerBlockSource {
 public:
  // Opens `path` read-only; `name` (default: the path) names it in errors.
  static Result<std::unique_ptr<FileBlockSource>> Open(const std::string& path,
                                                       std::string name = "");

  Status ReadAt(uint64_t offset, void* buf, size_t n) override;
  bool IsLocal(uint64_t, uint64_t) const override { return true; }
  uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int fd() const { return fd_.get(); }

 private:
  FileBlockSource() = default;
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string name_;
};

}  // namespace evs::verity
