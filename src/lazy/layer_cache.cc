#include "evs/lazy/layer_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "evs/common/file.h"
#include "evs/common/log.h"

namespace evs::lazy {
namespace {

Result<UniqueFd> LockDirectory(const std::string& dir) {
  const std::string path = JoinPath(dir, LayerCache::kLockFile);
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0600));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return FailedPreconditionError("lazy layer cache ", dir, " is in use (another attach holds ",
                                     path, ")");
    }
    return ErrnoError(errno, StrCat("lock ", path));
  }
  return fd;
}

}  // namespace

LayerCache::LayerCache(std::string dir, LayerCacheIdentity identity, UniqueFd lock, UniqueFd data)
    : dir_(std::move(dir)),
      data_path_(JoinPath(dir_, kDataFile)),
      identity_(std::move(identity)),
      lock_(std::move(lock)),
      data_(std::move(data)),
      present_((identity_.size + identity_.block_size - 1) / identity_.block_size) {}

LayerCache::~LayerCache() {
  Status st = Flush();
  if (!st.ok()) {
    EVS_LOG(kWarning) << "lazy cache bitmap not saved; cached blocks will be fetched again"
                      << Kv("dir", dir_) << Kv("error", st.message());
  }
}

std::string LayerCache::BitmapHeader() const {
  return StrCat("evs-lazy-cache 1 ", identity_.blob.ToString(), " ", identity_.size, " ",
                identity_.block_size, " ", identity_.hash_offset, " ",
                identity_.root_digest.ToString(), "\n");
}

Result<std::unique_ptr<LayerCache>> LayerCache::Open(const std::string& dir,
                                                     const LayerCacheIdentity& identity) {
  if (identity.block_size == 0 || identity.size == 0) {
    return InvalidArgumentError("lazy layer cache ", dir, ": empty layer or zero block size");
  }
  EVS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  EVS_ASSIGN_OR_RETURN(UniqueFd lock, LockDirectory(dir));
  const std::string data_path = JoinPath(dir, kDataFile);
  EVS_ASSIGN_OR_RETURN(UniqueFd data, OpenFile(data_path, O_RDWR | O_CREAT, 0600));
  struct stat st;
  if (::fstat(data.get(), &st) != 0) return ErrnoError(errno, StrCat("stat ", data_path));
  bool reset = static_cast<uint64_t>(st.st_size) != identity.size;
  if (reset && st.st_size != 0) {
    EVS_LOG(kWarning) << "lazy cache has the wrong size, starting empty" << Kv("dir", dir)
                      << Kv("bytes", st.st_size) << Kv("want", identity.size);
  }
  std::unique_ptr<LayerCache> cache(
      new LayerCache(dir, identity, std::move(lock), std::move(data)));
  if (!reset) {
    auto marker = ReadFileToString(JoinPath(dir, kCompleteFile), 4096);
    if (marker.ok() && *marker == identity.root_digest.ToString()) {
      cache->complete_ = true;
      for (uint64_t i = 0; i < cache->present_.size(); ++i) cache->present_.Set(i);
    } else if (marker.ok()) {
      EVS_LOG(kWarning) << "lazy cache marked complete for another root digest, starting empty"
                        << Kv("dir", dir) << Kv("marker", *marker);
      reset = true;
    } else {
      // Bytes no bitmap vouches for are not worth keeping: start clean.
      reset = !cache->LoadBitmap();
    }
  }
  if (reset) {
    for (uint64_t i = 0; i < cache->present_.size(); ++i) cache->present_.Clear(i);
    ::unlink(JoinPath(dir, kCompleteFile).c_str());
    ::unlink(JoinPath(dir, kBitmapFile).c_str());
    // Truncating to zero first drops every old byte (the file stays sparse).
    if (::ftruncate(cache->data_.get(), 0) != 0 ||
        ::ftruncate(cache->data_.get(), static_cast<off_t>(identity.size)) != 0) {
      return ErrnoError(errno, StrCat("size ", data_path));
    }
  }
  cache->flushed_changes_ = cache->changes_.load();
  return cache;
}

bool LayerCache::LoadBitmap() {
  const std::string path = JoinPath(dir_, kBitmapFile);
  const std::string header = BitmapHeader();
  const size_t bytes = static_cast<size_t>((present_.size() + 7) / 8);
  auto text = ReadFileToString(path, header.size() + bytes + 1);
  if (!text.ok()) {
    if (text.status().code() != Code::kNotFound) {
      EVS_LOG(kWarning) << "lazy cache bitmap unreadable, starting empty" << Kv("path", path)
                        << Kv("error", text.status().message());
    }
    return false;
  }
  if (text->size() != header.size() + bytes || text->compare(0, header.size(), header) != 0) {
    EVS_LOG(kWarning) << "lazy cache bitmap is for another layer or damaged, starting empty"
                      << Kv("path", path);
    return false;
  }
  const auto* bits = reinterpret_cast<const uint8_t*>(text->data() + header.size());
  for (uint64_t i = 0; i < present_.size(); ++i) {
    if ((bits[i / 8] >> (i % 8)) & 1) present_.Set(i);
  }
  return true;
}

Status LayerCache::ReadAt(uint64_t offset, void* buf, size_t n) const {
  EVS_ASSIGN_OR_RETURN(size_t got,
                       PreadFull(data_.get(), buf, n, static_cast<off_t>(offset), data_path_));
  if (got != n) {
    return InternalError(data_path_, ": short read of ", n, " bytes at ", offset, " (got ", got,
                         ")");
  }
  return OkStatus();
}

Status LayerCache::WriteRaw(uint64_t offset, const void* data, size_t n) {
  return PwriteAll(data_.get(), data, n, static_cast<off_t>(offset), data_path_);
}

Status LayerCache::WriteBlocks(uint64_t first, const uint8_t* data, uint64_t count) {
  const uint64_t bs = identity_.block_size;
  const uint64_t begin = first * bs;
  const uint64_t end = std::min(identity_.size, (first + count) * bs);
  if (first + count > present_.size() || begin >= end) {
    return InternalError(data_path_, ": write of blocks ", first, "+", count, " is out of range");
  }
  EVS_RETURN_IF_ERROR(WriteRaw(begin, data, static_cast<size_t>(end - begin)));
  MarkPresent(first, count);
  return OkStatus();
}

void LayerCache::MarkPresent(uint64_t first, uint64_t count) {
  for (uint64_t i = first; i < first + count; ++i) present_.Set(i);
  changes_.fetch_add(1, std::memory_order_acq_rel);
}

void LayerCache::DropBlocks(uint64_t first, uint64_t count) {
  for (uint64_t i = first; i < first + count; ++i) present_.Clear(i);
  changes_.fetch_add(1, std::memory_order_acq_rel);
  const uint64_t bs = identity_.block_size;
  const uint64_t begin = first * bs;
  const uint64_t end = std::min(identity_.size, (first + count) * bs);
  // Best effort: the cleared bits are what keeps the bytes from being used.
  (void)::fallocate(data_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(begin), static_cast<off_t>(end - begin));
}

Status LayerCache::Flush() {
  std::lock_guard<std::mutex> lock(flush_mu_);
  // Read the counter before the bits: a change after this point makes the
  // next Flush() write again.
  const uint64_t changes = changes_.load(std::memory_order_acquire);
  if (changes == flushed_changes_) return OkStatus();
  // Data first, so that a bit made durable describes durable bytes (a bit
  // that still does not is caught by verification on read).
  if (::fdatasync(data_.get()) != 0) return ErrnoError(errno, StrCat("fdatasync ", data_path_));
  std::string out = BitmapHeader();
  const size_t header = out.size();
  out.resize(header + static_cast<size_t>((present_.size() + 7) / 8), '\0');
  for (uint64_t i = 0; i < present_.size(); ++i) {
    if (present_.Test(i)) out[header + i / 8] |= static_cast<char>(1u << (i % 8));
  }
  EVS_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir_, kBitmapFile), out, 0600));
  flushed_changes_ = changes;
  return OkStatus();
}

Status LayerCache::MarkComplete() {
  EVS_RETURN_IF_ERROR(Flush());
  if (::fdatasync(data_.get()) != 0) return ErrnoError(errno, StrCat("fdatasync ", data_path_));
  EVS_RETURN_IF_ERROR(
      WriteFileAtomic(JoinPath(dir_, kCompleteFile), identity_.root_digest.ToString(), 0600));
  complete_ = true;
  return OkStatus();
}

bool LayerCache::IsComplete(const std::string& dir, const Digest& root) {
  auto marker = ReadFileToString(JoinPath(dir, kCompleteFile), 4096);
  return marker.ok() && *marker == root.ToString();
}

Status LayerCache::Remove(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("stat ", dir));
  }
  EVS_ASSIGN_OR_RETURN(UniqueFd lock, LockDirectory(dir));
  return RemoveTree(dir);
}

Result<uint64_t> LayerCache::DiskUsage() const {
  EVS_ASSIGN_OR_RETURN(evs::DiskUsage usage, MeasureDiskUsage(dir_));
  return static_cast<uint64_t>(usage.bytes);
}

}  // namespace evs::lazy
