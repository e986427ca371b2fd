// ErofsReader: reads uncompressed EROFS images — the ones ErofsWriter makes
// and the ones mkfs.erofs makes without compression — from one file
// (reference/erofs-and-dm-verity-format.md §1): superblock, inodes,
// directories, xattrs, file data (FLAT_PLAIN, FLAT_INLINE, CHUNK_BASED with
// block maps or chunk indexes, extra devices mapped into the same file as the
// kernel's flatdev mode does, §1.3).
//
// Hostile input is normal input: every offset is checked against the image
// before it is read, every count against what holds it, and arithmetic
// cannot overflow, so a corrupt image gives a DataLoss error naming the image
// and the inode (nid), never a crash or a read out of bounds. Features it
// does not implement (compression, 48-bit layout, long xattr prefixes) give
// Unimplemented.
//
// Costs: every call reads with pread(2) (no cache); ReadDirectory() holds the
// whole directory listing. Thread-compatible: const methods may be called
// from several threads at once.
#pragma once

#include <sys/stat.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/status.h"
#include "evs/erofs/format.h"

namespace evs::erofs {

// What the superblock says, checked.
struct ImageSummary {
  uint32_t block_size = 0;
  uint64_t blocks = 0;
  uint64_t inodes = 0;
  uint64_t root_nid = 0;
  uint64_t meta_blkaddr = 0;
  uint64_t xattr_blkaddr = 0;
  int64_t build_time = 0;  // the mtime of compact inodes
  uint32_t build_time_nsec = 0;
  uint32_t feature_compat = 0;
  uint32_t feature_incompat = 0;
  bool checksum_present = false;  // kFeatureCompatSbChksum (and it matched)
  std::array<uint8_t, 16> uuid{};
  std::string volume_name;
  struct Device {
    uint64_t blocks = 0;
    uint64_t uniaddr = 0;  // first block in this image (flatdev)
  };
  std::vector<Device> devices;  // the device table
};

// One inode, decoded.
struct Inode {
  uint64_t nid = 0;
  uint32_t mode = 0;  // st_mode: file type and permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  int64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  bool compact = false;     // 32-byte inode
  uint8_t data_layout = 0;  // DataLayout
  uint32_t raw_u = 0;       // i_u: start block or chunk format
  uint32_t xattr_size = 0;  // inline xattr area
  uint64_t offset = 0;      // byte offset of the inode in the image

  bool is_dir() const { return S_ISDIR(mode); }
  bool is_reg() const { return S_ISREG(mode); }
  bool is_symlink() const { return S_ISLNK(mode); }
  uint32_t inode_size() const { return compact ? 32 : 64; }
};

struct DirectoryEntry {
  std::string name;
  uint64_t nid = 0;
  uint8_t file_type = 0;  // FileType
};

using Xattrs = std::vector<std::pair<std::string, std::string>>;

class ErofsReader {
 public:
  // Opens `path` read-only and checks the superblock: magic, block size,
  // checksum when present, known features, and that the file holds every
  // block the superblock counts (it may hold more, e.g. a verity tree).
  static Result<std::unique_ptr<ErofsReader>> Open(const std::string& path);
  // The same over an open file; `name` names it in errors.
  static Result<std::unique_ptr<ErofsReader>> FromFd(UniqueFd fd, std::string name);

  const ImageSummary& summary() const { return summary_; }
  const std::string& name() const { return name_; }

  Result<Inode> ReadInode(uint64_t nid) const;
  Result<Inode> Root() const { return ReadInode(summary_.root_nid); }

  // Every entry of a directory inode, "." and ".." included, in on-disk
  // order. DataLoss if the blocks are malformed (offsets out of order or out
  // of the block, empty or over-long names, names not strictly increasing).
  Result<std::vector<DirectoryEntry>> ReadDirectory(const Inode& dir) const;

  // Full names ("user.x") and values, shared ones first, in on-disk order.
  Result<Xattrs> ReadXattrs(const Inode& inode) const;

  // Reads up to `n` bytes of a regular file, directory or symlink from
  // `offset`; returns the count, short only at end of file.
  Result<size_t> ReadData(const Inode& inode, uint64_t offset, void* buf, size_t n) const;

  // The target of a symlink (at most 4095 bytes).
  Result<std::string> ReadSymlink(const Inode& inode) const;

  // The inode at `path` ("" or "/" is the root; components separated by "/";
  // symlinks are not followed). NotFound naming the path if it is missing.
  Result<Inode> Lookup(std::string_view path) const;

  // Visits every inode reachable from the root, depth-first, directories
  // before their entries, entries in on-disk order; `path` is "" for the
  // root, else "a/b". A hardlinked inode is visited once per name. Checks
  // what a walk can: "." and ".." name the directory and its parent, dirent
  // file types match the inodes, no directory is reached twice. Stops at the
  // first error, from the image or from `visit`.
  Status Walk(
      const std::function<Status(const std::string& path, const Inode& inode)>& visit) const;

 private:
  ErofsReader(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  Status ReadSuperBlock(uint64_t file_size);
  // pread of [offset, offset + n), which must lie within the image.
  Status ReadAt(uint64_t offset, void* buf, size_t n, std::string_view what) const;
  Result<size_t> ReadChunked(const Inode& inode, uint64_t offset, void* buf, size_t n) const;
  uint64_t InlineDataOffset(const Inode& inode) const;
  template <typename... Args>
  Status Corrupt(const Args&... args) const;

  UniqueFd fd_;
  std::string name_;
  ImageSummary summary_;
  uint64_t image_bytes_ = 0;  // blocks · block_size
  uint32_t blkbits_ = 0;
};

// "drwxr-xr-x"-style rendering of a mode, as ls -l shows it.
std::string ModeString(uint32_t mode);

}  // namespace evs::erofs
