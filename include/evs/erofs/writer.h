// ErofsWriter: builds an uncompressed EROFS image from a stream of
// LayerEntry values in one pass (reference/erofs-and-dm-verity-format.md §1).
//
// Full mode: 4096-byte blocks; file data is written block-aligned to the
// output as it streams in (it is never held in memory), metadata (inodes,
// directories, xattrs) is kept in memory — proportional to the number of
// entries, not to data size — and written by Finish().
//
// Tar-index mode (§1.7): 512-byte blocks; the original uncompressed tar, and
// EROFS metadata in which every regular file is one chunk index into the tar
// (flatdev: device 1 of the device table, mapped into the image at
// `uniaddr`). The caller passes the tar bytes through AddTarBytes() as it
// reads them.
//
// Layout. Metadata can only be written once every entry is known, and data
// must be written as it arrives, so metadata goes after the data:
//
//   full:      [block 0: superblock][file data][directory blocks]
//              [shared xattrs][inodes with inline tails]
//   tar-index: [blocks 0-7: superblock, device table][the tar, from byte
//              4096][directory and symlink blocks][shared xattrs][inodes]
//
// The kernel only needs the superblock at byte 1024; everything else is found
// through block addresses. In tar-index mode the tar is one contiguous region
// ([ImageInfo::tar_offset, +tar_size)), so the layer's diffID stays
// verifiable from the image.
//
// Small-file tails (size mod 4096) go inline after their inode when inode,
// xattrs and tail fit in one block (decided when the entry is added, against
// the largest inode and xattr area it could get), and otherwise into a
// zero-padded block right after the file's other blocks. Inline tails wait
// for Finish() in memory up to `tail_memory_limit` bytes, then in an unlinked
// scratch file, so memory stays bounded whatever the layer holds.
//
// Writeback of the written data is started every 16 MiB (sync_file_range,
// without waiting), so that the caller's fsync finds little left to write.
//
// Tree semantics, the same for tar and directory input: a later entry for the
// same path replaces the earlier one (a directory keeps its children when
// replaced by a directory, and loses them when replaced by anything else);
// parent directories missing from the input are created 0755 root:root with
// the image epoch as mtime; a hardlink must name an earlier non-directory
// entry.
//
// Output is deterministic: the same entries in the same order give the same
// bytes (UUID derived from `uuid_seed`, directories sorted byte-wise, inodes
// laid out in a fixed order).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "evs/common/block_observer.h"
#include "evs/common/byte_stream.h"
#include "evs/common/status.h"
#include "evs/tar/entry.h"

namespace evs::erofs {

enum class Mode { kFull, kTarIndex };

struct WriterOptions {
  Mode mode = Mode::kFull;
  // Seed for the image UUID, e.g. the layer's blob digest. Same seed, same
  // UUID. Empty gives an all-zero UUID.
  std::string uuid_seed;
  // Base time for compact inodes (superblock build_time). Inodes whose mtime
  // differs are written extended. 0 is a fine default: most layer files
  // carry their own mtime anyway.
  int64_t epoch = 0;
  // Optional: receives every block of the image exactly once, as it is
  // written (for the verity tree). Not owned.
  BlockObserver* observer = nullptr;
  // Name of the input, used in error messages ("layer sha256:…").
  std::string input_name;
  // Inline tails (and symlink targets) beyond this many bytes wait in a
  // scratch file instead of memory.
  size_t tail_memory_limit = 4u << 20;
  // Directory of that scratch file (O_TMPFILE, so nothing is left behind
  // even on a crash). Empty: the directory of the output file, found
  // through /proc/self/fd; $TMPDIR or /tmp if that fails.
  std::string scratch_dir;
};

struct ImageInfo {
  uint64_t image_size = 0;  // bytes, a multiple of block_size
  uint32_t block_size = 0;  // 4096 (full) or 512 (tar-index)
  uint64_t inodes = 0;
  uint64_t data_bytes = 0;  // regular-file bytes consumed
  // Tar-index mode: where the tar sits in the image, and its length.
  uint64_t tar_offset = 0;
  uint64_t tar_size = 0;
};

class ErofsWriter {
 public:
  // Writes the image to `fd` (which must be empty, opened for writing and
  // reading, and positioned anywhere: the writer uses pwrite). Does not own
  // `fd`. On any error the file holds garbage: write through an AtomicFile so
  // that nothing is left behind.
  //
  // Memory: about 250 bytes per entry, name included (measured: 200 000
  // entries, 70 MiB RSS for the whole CLI), xattrs on top,
  // one 1 MiB write buffer and up to `tail_memory_limit`; never
  // proportional to file data.
  static Result<std::unique_ptr<ErofsWriter>> Create(int fd, WriterOptions options);
  virtual ~ErofsWriter() = default;

  // Adds one entry. For kRegular entries `data` yields exactly entry.size
  // bytes (a short source is an InvalidArgument error naming the entry);
  // `data` is ignored for other types and may be null.
  // In tar-index mode regular-file data is not read from `data`: the entry
  // carry `data_offset`, the offset of its data in the tar, which must be
  // 512-aligned.
  //
  // InvalidArgument naming the entry for input the image cannot hold: a path
  // that is not normalised, a parent that exists but is not a directory, a
  // root that is not a directory, a hardlink to a missing entry or to a
  // directory, a symlink target empty or longer than 4095 bytes, a device
  // number beyond 12/20 bits, an xattr outside the user., trusted.,
  // security. and system.posix_acl_* namespaces or larger than EROFS holds.
  // Errors are sticky: after one, every call fails with it.
  virtual Status Add(const LayerEntry& entry, ByteSource* data) = 0;

  // Tar-index mode only: the next bytes of the uncompressed tar, in order.
  virtual Status AddTarBytes(const void* data, size_t n) = 0;

  // Writes metadata and the superblock; the image is complete when this
  // returns OK. The writer cannot be used afterwards.
  virtual Result<ImageInfo> Finish() = 0;
};

}  // namespace evs::erofs
