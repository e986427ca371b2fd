// LayerCache: the on-disk cache of one lazy layer, cache/<digest>/
// (DESIGN.md §3). The cache of a layer IS the layer file: once every block
// has arrived, layer.erofs is a complete layer (EROFS image, superblock,
// tree) that `evs verity verify` accepts, not a second copy of anything.
//
//   layer.erofs   the layer blob, sparse, at its full size from the start
//   blocks        which blocks of layer.erofs hold fetched bytes: a header
//                 naming the layer, then the bitmap; replaced atomically
//   complete      written once the whole file was verified against the root
//                 digest (its content is that digest); such a layer needs
//                 neither the registry nor this bitmap again
//   lock          flock(2)ed while a LayerCache has the directory open
//
// What a bit in `blocks` means: "these bytes were verified when they were
// written" — but a bit persisted before a crash may describe bytes that
// never reached the disk, and the file may have been altered since. So a
// reader treats a bit as "local, still to verify" and LazyBlockSource checks
// such blocks against the tree before serving them (dropping and refetching
// a block that fails). Nothing here decides trust.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "evs/common/atomic_bitmap.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs::lazy {

// What a cache directory holds: anything on disk that does not match it is
// discarded when the cache is opened.
struct LayerCacheIdentity {
  Digest blob;              // the layer blob's digest (the directory's name)
  uint64_t size = 0;        // the blob's size = layer.erofs's size
  uint32_t block_size = 0;  // bitmap granularity: the verity data block size
  uint64_t hash_offset = 0;
  Digest root_digest;
};

class LayerCache {
 public:
  static constexpr const char* kDataFile = "layer.erofs";
  static constexpr const char* kBitmapFile = "blocks";
  static constexpr const char* kCompleteFile = "complete";
  static constexpr const char* kLockFile = "lock";

  // Creates `dir` if needed, takes its lock (FailedPrecondition naming the
  // directory when another LayerCache, in this or another process, holds
  // it), and opens or creates layer.erofs at identity.size. A bitmap whose
  // header names another identity, a data file of another size, or a
  // `complete` marker with another digest are discarded (logged), and the
  // cache starts empty. Costs a few syscalls and one read of the bitmap
  // file (size/block_size/8 bytes).
  static Result<std::unique_ptr<LayerCache>> Open(const std::string& dir,
                                                  const LayerCacheIdentity& identity);
  // Flushes (errors logged) and releases the lock.
  ~LayerCache();
  LayerCache(const LayerCache&) = delete;
  LayerCache& operator=(const LayerCache&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& data_path() const { return data_path_; }
  const LayerCacheIdentity& identity() const { return identity_; }
  uint64_t blocks() const { return present_.size(); }
  // Bits of blocks whose bytes are in layer.erofs (see the file comment).
  const AtomicBitmap& present() const { return present_; }
  bool complete() const { return complete_; }

  // Reads [offset, offset+n) of layer.erofs (pread; any block, present or
  // not — holes read as zeros). Internal on I/O errors or a short file.
  Status ReadAt(uint64_t offset, void* buf, size_t n) const;
  // Writes `count` whole blocks starting at block `first` (the last block
  // of the file may be short: only up to size is written), then sets their
  // bits. Internal naming the file on I/O errors (ENOSPC: ResourceExhausted).
  Status WriteBlocks(uint64_t first, const uint8_t* data, uint64_t count);
  // Writes bytes that are not yet to be marked present (a hash tree being
  // checked); MarkPresent() follows when they pass.
  Status WriteRaw(uint64_t offset, const void* data, size_t n);
  void MarkPresent(uint64_t first, uint64_t count);
  // Clears the bits and punches the blocks out of the file, so that a block
  // that failed verification is neither served nor counted as cached.
  void DropBlocks(uint64_t first, uint64_t count);

  // Makes the bitmap durable: fdatasync of layer.erofs, then the bitmap
  // file written atomically. A no-op when nothing changed since the last
  // flush. Blocks for two fsyncs.
  Status Flush();
  // Records that the whole file was verified: flushes, then writes
  // `complete` atomically. Only the caller knows it verified; this does not.
  Status MarkComplete();

  // True when `dir` holds a complete layer with root digest `root` (reads
  // the marker only; takes no lock).
  static bool IsComplete(const std::string& dir, const Digest& root);
  // Removes the directory (RemoveTree; refuses mount points below it).
  // FailedPrecondition while a LayerCache holds its lock.
  static Status Remove(const std::string& dir);

  // Bytes of allocated disk under the directory (for metrics).
  Result<uint64_t> DiskUsage() const;

 private:
  LayerCache(std::string dir, LayerCacheIdentity identity, UniqueFd lock, UniqueFd data);
  std::string BitmapHeader() const;
  // Loads the bitmap file; false when it is missing or for another layer.
  bool LoadBitmap();

  std::string dir_;
  std::string data_path_;
  LayerCacheIdentity identity_;
  UniqueFd lock_;
  UniqueFd data_;
  AtomicBitmap present_;
  bool complete_ = false;
  std::atomic<uint64_t> changes_{0};  // bumped on every bit change
  uint64_t flushed_changes_ = 0;      // changes_ at the last flush
  std::mutex flush_mu_;
};

}  // namespace evs::lazy
