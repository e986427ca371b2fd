// User-space dm-verity (DESIGN.md §5, mode `userspace`): a FUSE file that
// serves the data region of a layer file, checking each data block against
// the hash tree the first time it is read, and an EROFS mount on top of it
// (file-backed EROFS mounts need kernel ≥ 6.12; reference §2).
//
// The block source is an interface (block_source.h) so lazy loading can
// serve the same file from a sparse cache filled from the registry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "evs/common/digest.h"
#include "evs/common/mount.h"
#include "evs/common/status.h"
#include "evs/verity/block_source.h"
#include "evs/verity/verifier.h"

namespace evs::verity {

struct VerifiedBlockFileOptions {
  // Largest read the kernel sends in one request (FUSE max_pages is derived
  // from it) and the readahead window it may use: 1 MiB, libfuse's maximum
  // (FUSE_MAX_MAX_PAGES = 256 pages); the default 128 KiB halves throughput.
  uint32_t max_read = 1u << 20;
  // Worker threads reading /dev/fuse. Reads of a local file need about one
  // per core; a remote source that blocks on the network wants more.
  int threads = 4;
  // Threads that serve reads the source cannot answer locally
  // (LayerBlockSource::IsLocal false: a lazy layer's misses). A worker
  // hands such a read over and goes back to /dev/fuse, so reads of cached
  // blocks never queue behind misses waiting for the network (issue 6);
  // they start when the first such read comes (none for a local file).
  int miss_threads = 16;
  // FOPEN_DIRECT_IO: the FUSE file keeps no page cache of its own, so data
  // read through the EROFS mount on top is cached once (by EROFS) instead
  // of twice. Turn off only to measure.
  bool direct_io = true;
  // Tree cache and naming, passed to VerityTree.
  VerityTreeOptions tree;
};

// A mounted FUSE file at `path()` whose bytes are [0, hash_offset) of the
// layer file. A read of a block not yet verified reads the block from the
// source, checks it with VerityTree (hash blocks are verified up to the root
// before their entries are trusted), and marks it in a bitmap so later reads
// of it skip the check — dm-verity's `check_at_most_once`. A block that
// fails is never returned: the read fails with EIO and the failure is logged
// with the layer and block number; a source that is Unavailable also gives
// EIO (never zeros, never a hang). Reads are served by `threads` threads.
class VerifiedBlockFile {
 public:
  // Opens the tree (VerityTree::Open: DataLoss for a bad superblock) and
  // mounts the FUSE file over `mount_path`, which must be an existing
  // regular file (it becomes the mount point, the way a bind mount covers a
  // file). Needs root (or CAP_SYS_ADMIN) and /dev/fuse.
  static Result<std::unique_ptr<VerifiedBlockFile>> Mount(std::unique_ptr<LayerBlockSource> source,
                                                          uint64_t hash_offset,
                                                          const Digest& root_digest,
                                                          const std::string& mount_path,
                                                          VerifiedBlockFileOptions options = {});
  // Unmounts (see Unmount); if the file is still in use it is detached and
  // its FUSE connection ends, so that any remaining reader gets an error
  // instead of waiting forever.
  ~VerifiedBlockFile();
  VerifiedBlockFile(const VerifiedBlockFile&) = delete;
  VerifiedBlockFile& operator=(const VerifiedBlockFile&) = delete;

  // Unmounts the FUSE file and stops the threads. FailedPrecondition naming
  // the path while something (an EROFS mount) still has it open; the file
  // keeps working then.
  Status Unmount();

  const std::string& path() const;
  uint64_t size() const;  // bytes served: the hash offset
  const VerityTree& tree() const;

  struct Stats {
    uint64_t reads = 0;            // FUSE read requests
    uint64_t bytes_read = 0;       // bytes returned
    uint64_t blocks_verified = 0;  // distinct data blocks verified so far
    uint64_t failures = 0;         // reads answered with EIO
  };
  Stats stats() const;

  // Internal (the FUSE callbacks in the .cc reach it through the session).
  struct State;

 private:
  VerifiedBlockFile();
  std::unique_ptr<State> state_;
};

// An EROFS image mounted read-only, file-backed, on a VerifiedBlockFile:
// what the snapshotter mounts in `userspace` verification mode. Both mounts
// are undone, EROFS first, when the object is destroyed.
class VerifiedErofsMount {
 public:
  // Mounts the FUSE file at `fuse_file` (created empty if missing, removed
  // again on unmount when created here) and EROFS from it at `target`.
  // `erofs_options` are extra mount options (e.g. "user_xattr").
  static Result<std::unique_ptr<VerifiedErofsMount>> Mount(
      std::unique_ptr<LayerBlockSource> source, uint64_t hash_offset, const Digest& root_digest,
      const std::string& fuse_file, const std::string& target,
      VerifiedBlockFileOptions options = {}, const std::string& erofs_options = "");
  // The same for a local layer file.
  static Result<std::unique_ptr<VerifiedErofsMount>> MountLayerFile(
      const std::string& layer_file, uint64_t hash_offset, const Digest& root_digest,
      const std::string& fuse_file, const std::string& target,
      VerifiedBlockFileOptions options = {});
  ~VerifiedErofsMount();

  // Unmounts EROFS, then the FUSE file. FailedPrecondition (and both stay
  // mounted) when the EROFS mount is busy.
  Status Unmount();

  const std::string& target() const { return target_; }
  VerifiedBlockFile& file() { return *file_; }

 private:
  VerifiedErofsMount() = default;
  std::unique_ptr<VerifiedBlockFile> file_;
  MountPoint erofs_;
  std::string target_;
  std::string created_fuse_file_;  // removed after unmount when we made it
};

}  // namespace evs::verity
