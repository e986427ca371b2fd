// ErofsWriter: builds an uncompressed EROFS image from a stream of
// LayerEntry values in one pass (reference/erofs-and-dm-verity-format.md §1).
//
// Full mode: 4096-byte blocks; file data is written block-aligned to the
// output as it streams in (it is never held in memory), metadata (inodes,
// directories, xattrs) is kept in memory — proportional to the number of
// entries, not to data size — and written by Finish().
//
// Tar-index mode (§1.7): 512-byte blocks of metadata followed by the original
// uncompressed tar; every regular file is one chunk index into the tar. The
// caller passes the tar bytes through AddTarBytes() as it reads them.
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
};

struct ImageInfo {
  uint64_t image_size = 0;   // bytes, a multiple of block_size
  uint32_t block_size = 0;   // 4096 (full) or 512 (tar-index)
  uint64_t inodes = 0;
  uint64_t data_bytes = 0;   // regular-file bytes consumed
};

class ErofsWriter {
 public:
  // Writes the image to `fd` (which must be empty, opened for writing and
  // reading, and positioned anywhere: the writer uses pwrite). Does not own
  // `fd`.
  static Result<std::unique_ptr<ErofsWriter>> Create(int fd, WriterOptions options);
  virtual ~ErofsWriter() = default;

  // Adds one entry. For kRegular entries `data` yields exactly entry.size
  // bytes (a short source is an InvalidArgument error naming the entry);
  // `data` is ignored for other types and may be null.
  // In tar-index mode regular-file data is not read from `data`: the entry
  // carry `data_offset`, the offset of its data in the tar, which must be
  // 512-aligned.
  virtual Status Add(const LayerEntry& entry, ByteSource* data) = 0;

  // Tar-index mode only: the next bytes of the uncompressed tar, in order.
  virtual Status AddTarBytes(const void* data, size_t n) = 0;

  // Writes metadata and the superblock; the image is complete when this
  // returns OK. The writer cannot be used afterwards.
  virtual Result<ImageInfo> Finish() = 0;
};

}  // namespace evs::erofs
