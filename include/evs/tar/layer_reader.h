// LayerReader: the entries of an OCI image layer (a tar), as LayerEntry
// values with OCI layer semantics applied (OCI image-spec "layer.md",
// "Whiteouts"; reference/erofs-and-dm-verity-format.md §1.6):
//
// - paths: a leading "/" or "./" is stripped, empty and "." components are
//   dropped, "a/../b" is resolved lexically; a path that would leave the root
//   ("../x", "a/../../x"), contains a NUL byte, or has a component longer than
//   255 bytes (NAME_MAX) is an InvalidArgument error naming the entry and its
//   offset. The root itself is "" (a tar entry "./" or "/"); only a directory
//   may be the root. Hardlink targets are normalised the same way, and may not
//   name the root.
// - "<dir>/.wh.<name>" becomes a whiteout: kCharDevice 0:0 at "<dir>/<name>",
//   mode 0, with the entry's uid, gid and mtime (what containerd's overlay
//   applier creates). "<dir>/.wh..wh..opq" becomes kOpaqueMarker with path
//   "<dir>". Other ".wh..wh.*" names are aufs metadata: they and everything
//   under them are skipped, as moby's applier does (hardlinks into them are
//   not resolved). ".wh." with an empty, "." or ".." name is an error.
// - xattrs sorted by name.
// - regular files: the data is readable through data() while the entry is
//   current; size and data_offset are set. For every other type size is 0.
//
// Not here (the EROFS writer's tree, include/evs/erofs/writer.h): a later
// entry replacing an earlier one, creating missing parents, checking that a
// hardlink names an earlier entry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "evs/common/byte_stream.h"
#include "evs/common/chunk_source.h"
#include "evs/common/status.h"
#include "evs/tar/entry.h"
#include "evs/tar/tar_reader.h"

namespace evs::tar {

struct LayerReaderOptions {
  // Names the layer in error messages ("layer sha256:ab12…").
  std::string input_name;
  // Receives every byte of the tar, in order (tar-index mode: pass it to
  // ErofsWriter::AddTarBytes). Not owned. See TarReaderOptions::tee.
  ByteSink* tee = nullptr;
  uint64_t max_extension_bytes = TarReaderOptions{}.max_extension_bytes;
};

// Reads a layer tar entry by entry. Not thread-safe. Does not own `tar`.
class LayerReader {
 public:
  LayerReader(ByteSource* tar, LayerReaderOptions options);
  ~LayerReader();
  LayerReader(const LayerReader&) = delete;
  LayerReader& operator=(const LayerReader&) = delete;

  // The next entry (valid until the next call), or nullptr once the archive
  // has ended and the stream has been read to its end. Errors (from the tar,
  // from the source, from the rules above) are sticky and name the entry and
  // its header offset.
  Result<const LayerEntry*> Next();

  // The current regular entry's data: exactly entry.size bytes, then end of
  // stream. Empty for other entries. Owned by the reader, valid for its
  // lifetime. Lends the source's buffers (ChunkSource::ReadChunk) or copies
  // once (Read).
  ChunkSource* data();

  // Bytes of the uncompressed tar consumed so far.
  uint64_t tar_bytes() const;

 private:
  class State;
  std::unique_ptr<State> state_;
};

// Normalises an archive path as above: "./a//b/../c/" → "a/c", "/" → "".
// InvalidArgument (a short reason, without the entry: the caller adds it)
// when it would leave the root or holds a NUL byte or an over-long component.
Result<std::string> NormalizeLayerPath(std::string_view path);

}  // namespace evs::tar
