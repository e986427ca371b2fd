#include "evs/tar/decompress.h"

#include <isa-l/igzip_lib.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace evs::tar {

std::string_view CompressionName(Compression compression) {
  switch (compression) {
    case Compression::kNone:
      return "none";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
  }
  return "unknown";
}

Compression DetectCompression(std::span<const uint8_t> head) {
  // RFC 1952 §2.3.1: ID1 = 31, ID2 = 139.
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) return Compression::kGzip;
  if (head.size() >= 4) {
    // RFC 8878 §3.1.1: frame magic 0xFD2FB528, little-endian; §3.1.2:
    // skippable frames 0x184D2A50..0x184D2A5F.
    uint32_t magic = head[0] | head[1] << 8 | head[2] << 16 | uint32_t{head[3]} << 24;
    if (magic == 0xFD2FB528u || (magic & 0xFFFFFFF0u) == 0x184D2A50u) return Compression::kZstd;
  }
  return Compression::kNone;
}

namespace {

constexpr size_t kMaxInflateChunk = std::numeric_limits<uint32_t>::max();

// The compressed bytes: read from the source in large reads into a buffer the
// inflater consumes from, hashed as they arrive (so the blob digest covers
// exactly what was read, once).
class CompressedInput {
 public:
  CompressedInput(ByteSource* source, size_t buffer_size, std::optional<HashAlgorithm> digest)
      : source_(source), buffer_(std::max<size_t>(buffer_size, 64)) {
    if (digest) hasher_.emplace(*digest);
  }

  uint8_t* data() { return buffer_.data() + begin_; }
  size_t avail() const { return end_ - begin_; }
  bool eof() const { return eof_; }
  void Consume(size_t n) { begin_ += n; }
  // Offset in the compressed stream of data()[0].
  uint64_t offset() const { return read_ - avail(); }
  uint64_t bytes_read() const { return read_; }

  // Reads more bytes after the unconsumed ones (moved to the front). Sets
  // eof() instead when the source has ended.
  Status ReadMore() {
    if (eof_) return OkStatus();
    if (begin_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + begin_, avail());
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == buffer_.size()) return OkStatus();  // full: nothing to add
    EVS_ASSIGN_OR_RETURN(size_t n, source_->Read(buffer_.data() + end_, buffer_.size() - end_));
    if (n == 0) {
      eof_ = true;
      return OkStatus();
    }
    if (hasher_) hasher_->Update(buffer_.data() + end_, n);
    end_ += n;
    read_ += n;
    return OkStatus();
  }

  // Makes at least `n` bytes available unless the stream ends first.
  Status Want(size_t n) {
    while (avail() < n && !eof_) EVS_RETURN_IF_ERROR(ReadMore());
    return OkStatus();
  }

  // Hands the rest of the stream to `out` without buffering it (plain tar):
  // first what is buffered, then reads straight into `out`.
  Result<size_t> ReadThrough(uint8_t* out, size_t n) {
    if (avail() > 0) {
      size_t k = std::min(n, avail());
      std::memcpy(out, data(), k);
      Consume(k);
      return k;
    }
    if (eof_) return size_t{0};
    EVS_ASSIGN_OR_RETURN(size_t k, source_->Read(out, n));
    if (k == 0) eof_ = true;
    if (hasher_) hasher_->Update(out, k);
    read_ += k;
    return k;
  }

  Digest Finish() {
    if (!hasher_) return Digest();
    return Digest(hasher_->algorithm(), hasher_->FinishBytes());
  }

 private:
  ByteSource* source_;
  std::vector<uint8_t> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
  uint64_t read_ = 0;
  bool eof_ = false;
  std::optional<Hasher> hasher_;
};

// One format's decoder: fills `out` with up to `n` bytes, 0 at the end of the
// stream, and reports errors as a short reason; the caller names the input.
class Codec {
 public:
  virtual ~Codec() = default;
  virtual Result<size_t> Decode(CompressedInput& in, uint8_t* out, size_t n) = 0;
};

class PlainCodec : public Codec {
 public:
  Result<size_t> Decode(CompressedInput& in, uint8_t* out, size_t n) override {
    return in.ReadThrough(out, n);
  }
};

// Checks, between gzip members, that what follows is another member (Go's
// compress/gzip multistream reader: anything else is an error).
Result<bool> NextGzipMember(CompressedInput& in) {
  EVS_RETURN_IF_ERROR(in.Want(2));
  if (in.avail() == 0) return false;
  if (in.avail() < 2 || in.data()[0] != 0x1f || in.data()[1] != 0x8b) {
    return InvalidArgumentError(
        "gzip: trailing data that is not a gzip member at compressed offset ", in.offset());
  }
  return true;
}

const char* IsalErrorName(int ret) {
  switch (ret) {
    case ISAL_INVALID_BLOCK:
      return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
      return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
      return "invalid deflate distance";
    case ISAL_INVALID_WRAPPER:
      return "invalid gzip header";
    case ISAL_UNSUPPORTED_METHOD:
      return "unsupported compression method";
    case ISAL_INCORRECT_CHECKSUM:
      return "checksum mismatch";
    case ISAL_NEED_DICT:
      return "needs a preset dictionary";
    default:
      return "inflate error";
  }
}

// ISA-L's inflate (isa-l/igzip_lib.h). With crc_flag ISAL_GZIP it parses the
// member header and checks the CRC-32 trailer; at ISAL_BLOCK_FINISH next_in
// points just past the trailer, where the next member starts (as igzip's
// own multi-member loop in programs/igzip_cli.c relies on).
class IsalGzipCodec : public Codec {
 public:
  IsalGzipCodec() : state_(std::make_unique<inflate_state>()) {}

  Result<size_t> Decode(CompressedInput& in, uint8_t* out, size_t n) override {
    n = std::min(n, kMaxInflateChunk);
    for (;;) {
      if (!in_member_) {
        EVS_ASSIGN_OR_RETURN(bool more, NextGzipMember(in));
        if (!more) return size_t{0};
        isal_inflate_init(state_.get());
        state_->crc_flag = ISAL_GZIP;
        in_member_ = true;
      }
      if (in.avail() == 0) {
        EVS_RETURN_IF_ERROR(in.ReadMore());
        if (in.avail() == 0) {
          return InvalidArgumentError("gzip: stream ends inside a member at compressed offset ",
                                      in.offset());
        }
      }
      uint64_t offset = in.offset();
      uint32_t avail_in = static_cast<uint32_t>(std::min(in.avail(), kMaxInflateChunk));
      state_->next_in = in.data();
      state_->avail_in = avail_in;
      state_->next_out = out;
      state_->avail_out = static_cast<uint32_t>(n);
      int ret = isal_inflate(state_.get());
      size_t used = avail_in - state_->avail_in;
      size_t produced = n - state_->avail_out;
      in.Consume(used);
      if (ret != ISAL_DECOMP_OK) {
        return InvalidArgumentError("gzip: ", IsalErrorName(ret), " near compressed offset ",
                                    offset + used);
      }
      if (state_->block_state == ISAL_BLOCK_FINISH) in_member_ = false;
      if (produced > 0) return produced;
      if (used == 0 && in_member_) {
        // No progress with input available: it needs more than is buffered.
        if (in.eof()) {
          return InvalidArgumentError("gzip: stream ends inside a member at compressed offset ",
                                      in.offset());
        }
        EVS_RETURN_IF_ERROR(in.ReadMore());
      }
    }
  }

 private:
  std::unique_ptr<inflate_state> state_;
  bool in_member_ = false;
};

// zlib's inflate with gzip decoding (windowBits 15 + 16, zlib.h).
class ZlibGzipCodec : public Codec {
 public:
  ZlibGzipCodec() = default;
  ~ZlibGzipCodec() override {
    if (initialised_) inflateEnd(&z_);
  }

  Result<size_t> Decode(CompressedInput& in, uint8_t* out, size_t n) override {
    n = std::min(n, kMaxInflateChunk);
    for (;;) {
      if (!in_member_) {
        EVS_ASSIGN_OR_RETURN(bool more, NextGzipMember(in));
        if (!more) return size_t{0};
        if (!initialised_) {
          if (inflateInit2(&z_, 15 + 16) != Z_OK) return InternalError("gzip: inflateInit2 failed");
          initialised_ = true;
        } else {
          inflateReset(&z_);
        }
        in_member_ = true;
      }
      if (in.avail() == 0) {
        EVS_RETURN_IF_ERROR(in.ReadMore());
        if (in.avail() == 0) {
          return InvalidArgumentError("gzip: stream ends inside a member at compressed offset ",
                                      in.offset());
        }
      }
      uint64_t offset = in.offset();
      uInt avail_in = static_cast<uInt>(std::min(in.avail(), kMaxInflateChunk));
      z_.next_in = in.data();
      z_.avail_in = avail_in;
      z_.next_out = out;
      z_.avail_out = static_cast<uInt>(n);
      int ret = inflate(&z_, Z_NO_FLUSH);
      size_t used = avail_in - z_.avail_in;
      size_t produced = n - z_.avail_out;
      in.Consume(used);
      if (ret == Z_STREAM_END) {
        in_member_ = false;
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        return InvalidArgumentError("gzip: ", z_.msg ? z_.msg : "inflate error",
                                    " near compressed offset ", offset + used);
      }
      if (produced > 0) return produced;
      if (used == 0 && in_member_) {
        if (in.eof()) {
          return InvalidArgumentError("gzip: stream ends inside a member at compressed offset ",
                                      in.offset());
        }
        EVS_RETURN_IF_ERROR(in.ReadMore());
      }
    }
  }

 private:
  z_stream z_{};
  bool initialised_ = false;
  bool in_member_ = false;
};

// libzstd streaming decompression (zstd.h). ZSTD_decompressStream moves from
// one frame to the next by itself; it returns 0 exactly when a frame has been
// decoded and flushed, so a stream that ends while the last return was not 0
// ends inside a frame.
class ZstdCodec : public Codec {
 public:
  ZstdCodec() : ds_(ZSTD_createDStream()) {}
  ~ZstdCodec() override { ZSTD_freeDStream(ds_); }

  Result<size_t> Decode(CompressedInput& in, uint8_t* out, size_t n) override {
    if (ds_ == nullptr) return InternalError("zstd: cannot allocate a decompression context");
    for (;;) {
      if (in.avail() == 0) {
        EVS_RETURN_IF_ERROR(in.ReadMore());
        if (in.avail() == 0) {
          if (in_frame_) {
            return InvalidArgumentError("zstd: stream ends inside a frame at compressed offset ",
                                        in.offset());
          }
          return size_t{0};
        }
      }
      uint64_t offset = in.offset();
      ZSTD_inBuffer input{in.data(), in.avail(), 0};
      ZSTD_outBuffer output{out, n, 0};
      size_t ret = ZSTD_decompressStream(ds_, &output, &input);
      in.Consume(input.pos);
      if (ZSTD_isError(ret)) {
        return InvalidArgumentError("zstd: ", ZSTD_getErrorName(ret), " near compressed offset ",
                                    offset + input.pos);
      }
      in_frame_ = ret != 0;
      if (output.pos > 0) return output.pos;
      if (input.pos == 0) {
        // No progress although input and output space were offered: the
        // decoder wants more input than is buffered.
        if (in.eof()) {
          return InvalidArgumentError("zstd: stream ends inside a frame at compressed offset ",
                                      in.offset());
        }
        EVS_RETURN_IF_ERROR(in.ReadMore());
      }
    }
  }

 private:
  ZSTD_DStream* ds_;
  bool in_frame_ = false;
};

class DecompressorImpl : public Decompressor {
 public:
  DecompressorImpl(ByteSource* compressed, DecompressOptions options)
      : options_(std::move(options)),
        in_(compressed, options_.input_buffer_size, options_.input_digest) {
    if (options_.output_digest) output_hasher_.emplace(*options_.output_digest);
  }

  Result<size_t> Read(void* buf, size_t n) override {
    if (!error_.ok()) return error_;
    if (done_ || n == 0) return size_t{0};
    if (!codec_) {
      Status s = Start();
      if (!s.ok()) return Fail(s);
    }
    // Ask for at most one byte more than the cap allows, so that running
    // over it is noticed without inflating much past it.
    if (options_.max_output_bytes > 0) {
      uint64_t room = options_.max_output_bytes - std::min(options_.max_output_bytes, output_);
      n = static_cast<size_t>(std::min<uint64_t>(n, room + 1));
    }
    uint8_t* out = static_cast<uint8_t*>(buf);
    auto got = codec_->Decode(in_, out, n);
    if (!got.ok()) return Fail(got.status());
    if (*got == 0) {
      done_ = true;
      input_digest_ = in_.Finish();
      if (output_hasher_) {
        output_digest_ = Digest(output_hasher_->algorithm(), output_hasher_->FinishBytes());
      } else if (output_is_input_) {
        output_digest_ = input_digest_;
      }
      return size_t{0};
    }
    output_ += *got;
    if (options_.max_output_bytes > 0 && output_ > options_.max_output_bytes) {
      return Fail(ResourceExhaustedError("decompressed data exceeds the limit of ",
                                         options_.max_output_bytes, " bytes (at compressed offset ",
                                         in_.offset(), ")"));
    }
    if (output_hasher_) output_hasher_->Update(out, *got);
    return *got;
  }

  Compression compression() const override { return compression_; }
  uint64_t input_bytes() const override { return in_.bytes_read(); }
  uint64_t output_bytes() const override { return output_; }
  Digest input_digest() const override { return input_digest_; }
  Digest output_digest() const override { return output_digest_; }

 private:
  Status Start() {
    // A zstd magic is 4 bytes; a shorter stream is a (broken) plain tar.
    EVS_RETURN_IF_ERROR(in_.Want(4));
    compression_ = DetectCompression(std::span<const uint8_t>(in_.data(), in_.avail()));
    if (compression_ == Compression::kNone && output_hasher_ && options_.input_digest &&
        *options_.input_digest == *options_.output_digest) {
      // Input and output are the same bytes: hash them once.
      output_hasher_.reset();
      output_is_input_ = true;
    }
    switch (compression_) {
      case Compression::kNone:
        codec_ = std::make_unique<PlainCodec>();
        break;
      case Compression::kGzip:
        if (options_.gzip_engine == GzipEngine::kZlib) {
          codec_ = std::make_unique<ZlibGzipCodec>();
        } else {
          codec_ = std::make_unique<IsalGzipCodec>();
        }
        break;
      case Compression::kZstd:
        codec_ = std::make_unique<ZstdCodec>();
        break;
    }
    return OkStatus();
  }

  Status Fail(const Status& s) {
    error_ = options_.input_name.empty() ? s : s.Annotate(options_.input_name);
    return error_;
  }

  DecompressOptions options_;
  CompressedInput in_;
  std::unique_ptr<Codec> codec_;
  Compression compression_ = Compression::kNone;
  std::optional<Hasher> output_hasher_;
  bool output_is_input_ = false;
  uint64_t output_ = 0;
  Digest input_digest_;
  Digest output_digest_;
  Status error_;
  bool done_ = false;
};

}  // namespace

Result<std::unique_ptr<Decompressor>> Decompressor::Create(ByteSource* compressed,
                                                           DecompressOptions options) {
  if (compressed == nullptr) return InvalidArgumentError("Decompressor: no input");
  return std::unique_ptr<Decompressor>(new DecompressorImpl(compressed, std::move(options)));
}

// Hashes the tar on the read-ahead source's observer thread.
class LayerStream::DiffIdObserver : public ChunkObserver {
 public:
  DiffIdObserver(LayerStream* stream, HashAlgorithm algorithm)
      : stream_(stream), hasher_(algorithm) {}

  void OnChunk(std::span<const uint8_t> bytes) override {
    if (first_) {
      first_ = false;
      // compression() was set before the first buffer was published. A
      // plain tar is its own blob: its diffID is the blob digest.
      tar_is_blob_ = stream_->decompressor_->compression() == Compression::kNone &&
                     stream_->BlobHashed() && hasher_.algorithm() == stream_->BlobAlgorithm();
    }
    if (!tar_is_blob_) hasher_.Update(bytes.data(), bytes.size());
  }
  bool tar_is_blob() const { return tar_is_blob_; }
  Digest Finish() { return Digest(hasher_.algorithm(), hasher_.FinishBytes()); }

 private:
  LayerStream* stream_;
  Hasher hasher_;
  bool first_ = true;
  bool tar_is_blob_ = false;
};

Result<std::unique_ptr<LayerStream>> LayerStream::Open(ByteSource* blob,
                                                       LayerStreamOptions options) {
  if (blob == nullptr) return InvalidArgumentError("LayerStream: no input");
  std::unique_ptr<LayerStream> s(new LayerStream());
  s->options_ = std::move(options);
  const LayerStreamOptions& o = s->options_;
  HashAlgorithm blob_alg = s->BlobAlgorithm();
  HashAlgorithm tar_alg =
      o.expected_diff_id ? o.expected_diff_id->algorithm() : HashAlgorithm::kSha256;
  DecompressOptions d;
  d.input_name = o.input_name;
  d.max_output_bytes = o.max_tar_bytes;
  d.gzip_engine = o.gzip_engine;
  if (s->BlobHashed()) d.input_digest = blob_alg;
  DiffIdThread where = o.diff_id_thread;
  if (where == DiffIdThread::kOwnThread && !o.threaded) where = DiffIdThread::kReader;
  if (!o.compute_diff_id && !o.expected_diff_id) {
    // No diffID: no hasher anywhere.
  } else if (where == DiffIdThread::kDecompressor) {
    d.output_digest = tar_alg;
  } else if (where == DiffIdThread::kReader) {
    s->reader_hasher_ = std::make_unique<Hasher>(tar_alg);
  } else {
    s->diff_id_observer_ = std::make_unique<DiffIdObserver>(s.get(), tar_alg);
  }
  EVS_ASSIGN_OR_RETURN(s->decompressor_, Decompressor::Create(blob, std::move(d)));
  if (o.threaded) {
    ReadAheadOptions read_ahead = o.read_ahead;
    if (s->diff_id_observer_) read_ahead.observer = s->diff_id_observer_.get();
    s->chunks_ = std::make_unique<ReadAheadSource>(s->decompressor_.get(), read_ahead);
  } else {
    s->chunks_ =
        std::make_unique<BufferedChunkSource>(s->decompressor_.get(), o.read_ahead.chunk_size);
  }
  return s;
}

bool LayerStream::BlobHashed() const {
  return options_.compute_blob_digest || options_.expected_blob_digest.has_value();
}

HashAlgorithm LayerStream::BlobAlgorithm() const {
  return options_.expected_blob_digest ? options_.expected_blob_digest->algorithm()
                                       : HashAlgorithm::kSha256;
}

LayerStream::~LayerStream() {
  // The read-ahead thread reads decompressor_: stop it first.
  chunks_.reset();
}

Result<std::span<const uint8_t>> LayerStream::ReadChunk(size_t max) {
  if (!error_.ok()) return error_;
  if (done_) return std::span<const uint8_t>();
  auto chunk = chunks_->ReadChunk(max);
  if (!chunk.ok()) {
    error_ = chunk.status();
    return error_;
  }
  if (chunk->empty()) {
    done_ = true;
    error_ = Finish();
    if (!error_.ok()) return error_;
    return *chunk;
  }
  if (!started_) {
    started_ = true;
    // compression() was set before the first chunk was published to us.
    if (reader_hasher_ && decompressor_->compression() == Compression::kNone && BlobHashed() &&
        reader_hasher_->algorithm() == BlobAlgorithm()) {
      // A plain tar is its own blob: its diffID is the blob digest.
      reader_hasher_.reset();
      tar_is_blob_ = true;
    }
  }
  if (reader_hasher_) reader_hasher_->Update(chunk->data(), chunk->size());
  return *chunk;
}

Status LayerStream::Finish() {
  // The producer is done with decompressor_ once end of stream was seen.
  Digest blob = decompressor_->input_digest();
  if (reader_hasher_) {
    diff_id_ = Digest(reader_hasher_->algorithm(), reader_hasher_->FinishBytes());
  } else if (diff_id_observer_ && !diff_id_observer_->tar_is_blob()) {
    // The observer has seen every buffer once end of stream was returned.
    diff_id_ = diff_id_observer_->Finish();
  } else if (tar_is_blob_ || diff_id_observer_) {
    diff_id_ = blob;
  } else {
    diff_id_ = decompressor_->output_digest();
  }
  const std::string prefix = options_.input_name.empty() ? "" : options_.input_name + ": ";
  if (options_.expected_blob_digest && blob != *options_.expected_blob_digest) {
    return DataLossError(prefix, "blob digest ", blob.ToString(), " does not match the expected ",
                         options_.expected_blob_digest->ToString());
  }
  if (options_.expected_diff_id && diff_id_ != *options_.expected_diff_id) {
    return DataLossError(prefix, "uncompressed digest (diffID) ", diff_id_.ToString(),
                         " does not match the expected ", options_.expected_diff_id->ToString());
  }
  return OkStatus();
}

Compression LayerStream::compression() const {
  return done_ ? decompressor_->compression() : Compression::kNone;
}
Digest LayerStream::blob_digest() const { return done_ ? decompressor_->input_digest() : Digest(); }
Digest LayerStream::diff_id() const { return done_ ? diff_id_ : Digest(); }
uint64_t LayerStream::blob_bytes() const { return done_ ? decompressor_->input_bytes() : 0; }
uint64_t LayerStream::tar_bytes() const { return done_ ? decompressor_->output_bytes() : 0; }

}  // namespace evs::tar
