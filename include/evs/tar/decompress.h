// Decompression of layer blobs: gzip (multi-member), zstd (multi-frame) or
// plain tar, detected by magic, and LayerStream, which turns a blob into its
// uncompressed tar on a thread of its own while computing the blob digest and
// the diffID in the same pass.
//
//   FdSource blob(fd, path);
//   EVS_ASSIGN_OR_RETURN(auto tar, LayerStream::Open(&blob, {.input_name = "layer sha256:…"}));
//   LayerReader reader(tar.get(), {...});
//   ... read every entry; the reader drains the stream to its end ...
//   tar->blob_digest(); tar->diff_id();
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "evs/common/byte_stream.h"
#include "evs/common/chunk_source.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"

namespace evs::tar {

enum class Compression { kNone, kGzip, kZstd };

// "none", "gzip", "zstd".
std::string_view CompressionName(Compression compression);

// Looks at the first bytes of a blob: 1f 8b → gzip (RFC 1952 §2.3.1);
// 28 b5 2f fd, or 5x 2a 4d 18 (a skippable frame) → zstd (RFC 8878 §3.1);
// anything else, including fewer than 4 bytes, → kNone (a plain tar).
Compression DetectCompression(std::span<const uint8_t> head);

// The gzip inflater. ISA-L is the default because it is faster here (figures
// and the program that measures them: bench/decompress/); zlib is kept so the
// bench measures both through the same code.
enum class GzipEngine { kIsal, kZlib };

struct DecompressOptions {
  // Names the blob in error messages ("layer sha256:ab12…").
  std::string input_name;
  // Fail with ResourceExhausted once the output would exceed this many bytes
  // (a gzip stream expands up to ~1000×). 0: no cap.
  uint64_t max_output_bytes = 0;
  GzipEngine gzip_engine = GzipEngine::kIsal;
  // Size of the reads from the compressed source.
  size_t input_buffer_size = 256u << 10;
  // Hash the compressed bytes / the decompressed bytes as they pass (on the
  // thread that calls Read()). Read the digests once Read() returned 0.
  std::optional<HashAlgorithm> input_digest;
  std::optional<HashAlgorithm> output_digest;
};

// Decompresses a blob as it is read. The format is detected from the first
// bytes, on the first Read(). Every byte of the input is consumed: data after
// the last gzip member or zstd frame that is not another member or frame is
// an InvalidArgument error naming its compressed offset (as Go's gzip reader,
// which containerd uses, does), and so is a stream that ends inside one.
// Errors are sticky.
//
// Cost: one input buffer, and the inflater state (ISA-L ~200 KiB, zstd up to
// the frame's window: at most 128 MiB, the zstd default limit for --long).
// Runs on the calling thread; wrap it in a ReadAheadSource (as LayerStream
// does) to give it a thread of its own. Does not own `compressed`.
class Decompressor : public ByteSource {
 public:
  static Result<std::unique_ptr<Decompressor>> Create(ByteSource* compressed,
                                                      DecompressOptions options);
  virtual ~Decompressor() = default;

  // Fills `buf` with up to `n` decompressed bytes; 0 only at end of stream.
  Result<size_t> Read(void* buf, size_t n) override = 0;

  // kNone until the first Read() has looked at the input.
  virtual Compression compression() const = 0;
  // Bytes consumed from the compressed source / produced so far.
  virtual uint64_t input_bytes() const = 0;
  virtual uint64_t output_bytes() const = 0;
  // After Read() returned 0: digests of all input / output bytes, when asked
  // for in the options; empty otherwise.
  virtual Digest input_digest() const = 0;
  virtual Digest output_digest() const = 0;
};

// The thread that hashes the uncompressed tar for the diffID. SHA-256 of the
// tar costs about half as much as inflating it, so where it runs decides
// whether the two pipeline threads are balanced (bench/decompress/).
enum class DiffIdThread {
  kReader,        // the thread calling ReadChunk(), as bytes are lent out
  kDecompressor,  // the read-ahead thread, right after inflating
  kOwnThread,     // a third thread hashing the read-ahead buffers in place
                  // (ReadAheadOptions::observer); kReader when not threaded
};

struct LayerStreamOptions {
  // Names the blob in error messages ("layer sha256:ab12…").
  std::string input_name;
  // Cap on the uncompressed tar (see DecompressOptions). 0: no cap.
  uint64_t max_tar_bytes = 0;
  GzipEngine gzip_engine = GzipEngine::kIsal;
  // Verified when the stream ends: a mismatch makes the last ReadChunk() fail
  // with DataLoss naming both digests, instead of returning end of stream.
  // Their algorithms choose the hashes computed; sha256 when unset.
  std::optional<Digest> expected_blob_digest;
  std::optional<Digest> expected_diff_id;
  // Which digests to compute (each is computed anyway when its expected
  // value is given). Each costs a SHA-256 pass: over the blob ~0.15 × and
  // over the tar ~0.5 × the igzip time. Once the blob digest is verified the
  // tar's bytes are fixed (inflating is deterministic), so the diffID adds no
  // integrity; skip it when it is known from a trusted image config.
  bool compute_blob_digest = true;
  bool compute_diff_id = true;
  // Decompress on a thread of its own (the default). false: on the reading
  // thread, through a BufferedChunkSource (for tests and tiny layers).
  bool threaded = true;
  ReadAheadOptions read_ahead;
  // kOwnThread by default: on 2 cores, pinning the diffID's SHA-256 to
  // either pipeline thread overloads that thread (inflate + blob digest +
  // diffID alone is ~1.6 × igzip); a third thread lets the scheduler spread
  // it (docs/tar.md, "Performance").
  DiffIdThread diff_id_thread = DiffIdThread::kOwnThread;
};

// The uncompressed tar of a layer blob. Decompression and the blob digest
// (over the compressed bytes) run on the read-ahead thread, overlapping the
// consumer; the diffID (over the tar) is computed on the thread chosen by
// `diff_id_thread`. The consumer must read to the end of the stream for the
// digests to exist (TarReader does so).
//
// Errors name `input_name`: a corrupt stream is InvalidArgument, the cap
// ResourceExhausted, a digest mismatch DataLoss, a failed read of the blob
// is passed through.
//
// Destroying the stream stops its threads; it waits for a Read() of `blob`
// in progress, so cancel a blob that can block indefinitely (a BytePipe fed
// by the network) first. Does not own `blob`. Memory: read_ahead.chunks ×
// chunk_size (4 MiB by default) plus the Decompressor's.
class LayerStream : public ChunkSource {
 public:
  static Result<std::unique_ptr<LayerStream>> Open(ByteSource* blob, LayerStreamOptions options);
  ~LayerStream() override;

  Result<std::span<const uint8_t>> ReadChunk(size_t max) override;

  // Valid once ReadChunk() has returned end of stream (before that: kNone,
  // empty digests, counts 0). A digest not computed is empty.
  Compression compression() const;
  Digest blob_digest() const;
  Digest diff_id() const;
  uint64_t blob_bytes() const;
  uint64_t tar_bytes() const;

 private:
  LayerStream() = default;
  Status Finish();
  HashAlgorithm BlobAlgorithm() const;
  bool BlobHashed() const;

  LayerStreamOptions options_;
  class DiffIdObserver;

  std::unique_ptr<Decompressor> decompressor_;
  std::unique_ptr<Hasher> reader_hasher_;             // DiffIdThread::kReader
  std::unique_ptr<DiffIdObserver> diff_id_observer_;  // DiffIdThread::kOwnThread
  // Reads decompressor_ and calls diff_id_observer_ on its threads: declared
  // after them, so destroyed (its threads stopped) before them.
  std::unique_ptr<ChunkSource> chunks_;
  Digest diff_id_;
  Status error_;
  bool started_ = false;
  bool tar_is_blob_ = false;  // plain tar: diffID = blob digest, hashed once
  bool done_ = false;
};

}  // namespace evs::tar
