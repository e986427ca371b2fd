// TarReader: a streaming reader of tar archives over any ByteSource. It never
// seeks and never holds a file's data in memory: headers are parsed in place
// in the source's buffers (ChunkSource), file data is lent or copied straight
// to the caller.
//
// Formats (POSIX.1-2017 pax "ustar Interchange Format" and "pax Interchange
// Format"; GNU tar manual "Basic Tar Format"):
// - ustar (name + prefix), GNU (long names 'L', long link names 'K'), v7;
// - pax extended 'x' and global 'g' headers, keywords path, linkpath, size,
//   uid, gid, uname, gname, mtime (fractional, may be negative),
//   SCHILY.xattr.<name> (raw value), LIBARCHIVE.xattr.<%-encoded name>
//   (base64 value), RHT.security.selinux; other keywords (atime, ctime,
//   charset, comment, SCHILY.acl.*, …) are ignored. A record with an empty
//   value deletes the keyword (POSIX "pax Extended Header");
// - numeric fields in octal or base-256 (GNU), checksums as unsigned or
//   signed byte sums;
// - entry kinds: regular ('0', NUL, '7'; NUL with a trailing '/' is an old
//   directory), hardlink '1', symlink '2', char '3', block '4', directory '5'
//   (and GNU dumpdir 'D'), fifo '6'. GNU volume labels 'V' are skipped.
// Rejected with an InvalidArgument error: GNU sparse files (type 'S', pax
// GNU.sparse.* of formats 0.0, 0.1 and 1.0), multi-volume 'M' and old long
// name 'N' entries, unknown entry types, uid/gid above 2^32-1, and every
// malformed header. Error messages name the input, the entry (as far as it is
// known) and the offset in the uncompressed tar: `layer sha256:ab12…: tar
// entry "etc/x" at offset 1536: bad header checksum`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/chunk_source.h"
#include "evs/common/status.h"
#include "evs/tar/entry.h"

namespace evs::tar {

// One archive member as stored, after its GNU and pax extension headers have
// been applied. Paths are not normalised (LayerReader does that).
struct TarHeader {
  char typeflag = '0';  // as stored ('\0' and '7' are kept as they are)
  // kRegular, kHardlink, kSymlink, kCharDevice, kBlockDevice, kDirectory or
  // kFifo.
  EntryType type = EntryType::kRegular;
  std::string path;       // pax path > GNU 'L' > ustar prefix/name
  std::string link_path;  // pax linkpath > GNU 'K' > ustar linkname
  uint32_t mode = 0;      // permission bits (07777); file-type bits dropped
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  int64_t mtime = 0;        // seconds since the epoch, may be negative
  uint32_t mtime_nsec = 0;  // from a fractional pax mtime
  // Data bytes following the header: the file size for regular files, the
  // listing of a GNU dumpdir 'D'; 0 for hardlinks, symlinks, devices, fifos
  // and directories whatever their size field says: they carry no data, as
  // Go's archive/tar (containerd's layer applier) reads them. GNU tar
  // differs: it skips `size` bytes after symlinks, devices and fifos.
  uint64_t size = 0;
  uint32_t dev_major = 0;  // char and block devices only
  uint32_t dev_minor = 0;
  // Extended attributes in archive order, names unique (a later record for
  // the same name replaces an earlier one).
  std::vector<std::pair<std::string, std::string>> xattrs;
  // Offset in the uncompressed tar of the header block carrying this entry's
  // type (after any extension headers), and of its data: always
  // header_offset + 512.
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;
};

struct TarReaderOptions {
  // Names the archive in error messages ("layer sha256:ab12…").
  std::string input_name;
  // Optional: receives every byte of the archive, in order, exactly once, as
  // it is read — including the end-of-archive blocks and any padding after
  // them (tar-index mode appends the tar to the image). Not owned. An error
  // from it stops the reader.
  ByteSink* tee = nullptr;
  // Most bytes of extension headers (pax 'x', GNU 'L'/'K') one entry may
  // have, and most bytes of pax 'g' records in force at once; they are held
  // in memory. 8 MiB fits many large xattrs.
  uint64_t max_extension_bytes = 8u << 20;
};

// Reads entries one at a time. Not thread-safe. Does not own `source`, which
// must outlive the reader; if it is a ChunkSource its buffers are used in
// place, otherwise it is read through a 1 MiB BufferedChunkSource.
class TarReader {
 public:
  TarReader(ByteSource* source, TarReaderOptions options);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Moves to the next entry, skipping what is left of the current entry's
  // data. Returns the entry (valid until the next call), or nullptr at the end
  // of the archive: at two zero blocks, at one zero block followed by
  // anything (GNU tar stops there too), or at the end of the stream on a
  // block boundary. Before returning nullptr it reads the source to its end,
  // so that digests computed by the source (and the tee) cover every byte.
  // A stream that ends inside a header or inside data is an error. Errors
  // are sticky.
  Result<const TarHeader*> Next();

  // Reads the current entry's data: up to `n` bytes, filling `buf` unless the
  // data ends first; 0 at its end. Only the entry's `size` bytes are ever
  // returned, never the padding after them.
  Result<size_t> ReadData(void* buf, size_t n);
  // Lends up to `max` bytes of the current entry's data without copying
  // (valid until the next call on this reader); empty at its end.
  Result<std::span<const uint8_t>> ReadDataChunk(size_t max);
  // The current entry's data as a ChunkSource (the calls above). Owned by the
  // reader; valid for the reader's lifetime, reading the current entry.
  ChunkSource* data();

  // Bytes of the uncompressed archive consumed so far.
  uint64_t offset() const;

 private:
  class State;
  std::unique_ptr<State> state_;
};

}  // namespace evs::tar
