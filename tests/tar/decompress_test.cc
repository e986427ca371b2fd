// Decompressor, LayerStream and the ReadAheadSource they run on.
#include "evs/tar/decompress.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>

#include "evs/common/byte_stream.h"
#include "evs/common/chunk_source.h"
#include "evs/common/digest.h"
#include "tar_builder.h"

namespace evs::tar {
namespace {

using testing::Gzip;
using testing::Sha256Hex;
using testing::Zstd;

std::string RandomText(size_t n, uint32_t seed) {
  // Compressible but not trivially: words from a small alphabet.
  std::mt19937 rng(seed);
  std::string out;
  out.reserve(n);
  while (out.size() < n) out.push_back("abcdefgh \n"[rng() % 10]);
  return out;
}

// Returns reads of random small sizes, to shake out buffering assumptions.
class TricklingSource : public ByteSource {
 public:
  TricklingSource(std::string data, uint32_t seed) : data_(std::move(data)), rng_(seed) {}
  Result<size_t> Read(void* buf, size_t n) override {
    size_t k = std::min({n, data_.size() - pos_, size_t{1} + rng_() % 700});
    std::memcpy(buf, data_.data() + pos_, k);
    pos_ += k;
    return k;
  }

 private:
  std::string data_;
  size_t pos_ = 0;
  std::mt19937 rng_;
};

Result<std::string> Inflate(std::string blob, DecompressOptions options = {}) {
  TricklingSource source(std::move(blob), 7);
  EVS_ASSIGN_OR_RETURN(auto d, Decompressor::Create(&source, std::move(options)));
  std::string out;
  char buf[3000];
  for (;;) {
    EVS_ASSIGN_OR_RETURN(size_t n, d->Read(buf, sizeof buf));
    if (n == 0) return out;
    out.append(buf, n);
  }
}

Result<std::string> ReadAll(ChunkSource* source, size_t max = 5000) {
  std::string out;
  for (;;) {
    EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> c, source->ReadChunk(max));
    if (c.empty()) return out;
    out.append(reinterpret_cast<const char*>(c.data()), c.size());
  }
}

TEST(DetectCompression, RecognisesMagicNumbers) {
  auto detect = [](std::string_view s) {
    return DetectCompression(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  };
  EXPECT_EQ(detect("\x1f\x8b\x08\x00"), Compression::kGzip);
  EXPECT_EQ(detect("\x28\xb5\x2f\xfd"), Compression::kZstd);
  EXPECT_EQ(detect("\x50\x2a\x4d\x18"), Compression::kZstd);  // skippable frame
  EXPECT_EQ(detect("\x5f\x2a\x4d\x18"), Compression::kZstd);
  EXPECT_EQ(detect("\x60\x2a\x4d\x18"), Compression::kNone);
  EXPECT_EQ(detect("ustar"), Compression::kNone);
  EXPECT_EQ(detect("\x28\xb5"), Compression::kNone);
  EXPECT_EQ(detect(""), Compression::kNone);
}

class GzipEngines : public ::testing::TestWithParam<GzipEngine> {};

TEST_P(GzipEngines, InflatesMultiMemberStreams) {
  std::string a = RandomText(200000, 1), b = RandomText(5, 2), c = RandomText(70000, 3);
  // An empty member in the middle, as concatenating tools may produce.
  std::string blob = Gzip(a) + Gzip("") + Gzip(b) + Gzip(c, 1);
  auto out = Inflate(blob, {.gzip_engine = GetParam()});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, a + b + c);
}

TEST_P(GzipEngines, RejectsTrailingGarbageNamingItsOffset) {
  std::string first = Gzip(RandomText(10000, 4));
  auto out = Inflate(first + "not gzip", {.input_name = "blob X", .gzip_engine = GetParam()});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            StrCat("blob X: gzip: trailing data that is not a gzip member at compressed offset ",
                   first.size()));
}

TEST_P(GzipEngines, RejectsTruncatedAndCorruptStreams) {
  std::string text = RandomText(100000, 5);
  std::string blob = Gzip(text);
  auto truncated = Inflate(blob.substr(0, blob.size() - 3), {.gzip_engine = GetParam()});
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("ends inside a member"), std::string::npos)
      << truncated.status().message();
  std::string bad_crc = blob;
  bad_crc[bad_crc.size() - 6] ^= 0x55;  // CRC-32 in the trailer (RFC 1952 §2.3.1)
  auto crc = Inflate(bad_crc, {.gzip_engine = GetParam()});
  ASSERT_FALSE(crc.ok());
  EXPECT_EQ(crc.status().code(), Code::kInvalidArgument);
  std::string bad_data = blob;
  for (size_t i = 100; i < 140; ++i) bad_data[i] = static_cast<char>(0xff);
  auto data = Inflate(bad_data, {.gzip_engine = GetParam()});
  EXPECT_FALSE(data.ok());
}

INSTANTIATE_TEST_SUITE_P(Decompressor, GzipEngines,
                         ::testing::Values(GzipEngine::kIsal, GzipEngine::kZlib),
                         [](const auto& info) {
                           return info.param == GzipEngine::kIsal ? "Isal" : "Zlib";
                         });

TEST(Decompressor, InflatesMultiFrameZstdWithSkippableFrames) {
  std::string a = RandomText(300000, 6), b = RandomText(1000, 7);
  std::string skippable("\x50\x2a\x4d\x18\x04\x00\x00\x00meta", 12);
  std::string blob = skippable + Zstd(a) + Zstd(b, 19) + skippable;
  auto out = Inflate(blob);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, a + b);
  auto truncated = Inflate(Zstd(a).substr(0, 1000));
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.status().message().find("zstd: stream ends inside a frame"),
            std::string::npos)
      << truncated.status().message();
  auto garbage = Inflate(Zstd(a) + "trailing");
  EXPECT_FALSE(garbage.ok());
}

TEST(Decompressor, PassesPlainDataThrough) {
  std::string text = RandomText(100000, 8);
  auto out = Inflate(text);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, text);
  auto tiny = Inflate("ab");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(*tiny, "ab");
}

TEST(Decompressor, EnforcesTheOutputCapExactly) {
  std::string text = RandomText(100000, 9);
  std::string blob = Gzip(text);
  auto exact = Inflate(blob, {.max_output_bytes = text.size()});
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  auto over = Inflate(blob, {.input_name = "blob Y", .max_output_bytes = text.size() - 1});
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kResourceExhausted);
  EXPECT_NE(
      over.status().message().find("blob Y: decompressed data exceeds the limit of 99999 bytes"),
      std::string::npos)
      << over.status().message();
}

TEST(Decompressor, DigestsBothSidesAndReportsCounts) {
  std::string text = RandomText(50000, 10);
  std::string blob = Zstd(text);
  StringSource source(blob);
  auto d = Decompressor::Create(
      &source, {.input_digest = HashAlgorithm::kSha256, .output_digest = HashAlgorithm::kSha512});
  ASSERT_TRUE(d.ok());
  std::string out(60000, '\0');
  size_t total = 0;
  for (;;) {
    auto n = (*d)->Read(out.data() + total, out.size() - total);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == 0) break;
    total += *n;
  }
  EXPECT_EQ(total, text.size());
  EXPECT_EQ((*d)->compression(), Compression::kZstd);
  EXPECT_EQ((*d)->input_bytes(), blob.size());
  EXPECT_EQ((*d)->output_bytes(), text.size());
  EXPECT_EQ((*d)->input_digest(), Digest::Sha256Of(blob));
  EXPECT_EQ((*d)->output_digest(), Digest::Of(HashAlgorithm::kSha512, text));
}

struct StreamCase {
  bool threaded;
  DiffIdThread diff_id_thread;
};

class LayerStreams : public ::testing::TestWithParam<StreamCase> {};

TEST_P(LayerStreams, YieldsTheTarWithBlobDigestAndDiffId) {
  std::string tar = RandomText(3 << 20, 11);
  for (const std::string& blob : {Gzip(tar), Zstd(tar), tar}) {
    TricklingSource source(blob, 12);
    auto stream = LayerStream::Open(&source, {.input_name = "layer L",
                                              .threaded = GetParam().threaded,
                                              .read_ahead = {.chunk_size = 64 << 10, .chunks = 3},
                                              .diff_id_thread = GetParam().diff_id_thread});
    ASSERT_TRUE(stream.ok());
    EXPECT_TRUE((*stream)->diff_id().empty());  // not before the end
    auto out = ReadAll(stream->get());
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out == tar, true);
    EXPECT_EQ((*stream)->blob_digest(), Digest::Sha256Of(blob));
    EXPECT_EQ((*stream)->diff_id(), Digest::Sha256Of(tar));
    EXPECT_EQ((*stream)->blob_bytes(), blob.size());
    EXPECT_EQ((*stream)->tar_bytes(), tar.size());
    // Reading on after the end stays at the end.
    auto again = (*stream)->ReadChunk(10);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->empty());
  }
}

TEST_P(LayerStreams, FailsWithDataLossOnADigestMismatch) {
  std::string tar = RandomText(100000, 13);
  std::string blob = Gzip(tar);
  Digest wrong = Digest::Sha256Of("something else");
  {
    StringSource source(blob);
    auto stream = LayerStream::Open(&source, {.input_name = "layer M",
                                              .expected_blob_digest = wrong,
                                              .threaded = GetParam().threaded,
                                              .diff_id_thread = GetParam().diff_id_thread});
    ASSERT_TRUE(stream.ok());
    auto out = ReadAll(stream->get());
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), Code::kDataLoss);
    EXPECT_EQ(out.status().message(),
              StrCat("layer M: blob digest ", Digest::Sha256Of(blob).ToString(),
                     " does not match the expected ", wrong.ToString()));
  }
  {
    StringSource source(blob);
    auto stream = LayerStream::Open(&source, {.expected_blob_digest = Digest::Sha256Of(blob),
                                              .expected_diff_id = wrong,
                                              .threaded = GetParam().threaded,
                                              .diff_id_thread = GetParam().diff_id_thread});
    ASSERT_TRUE(stream.ok());
    auto out = ReadAll(stream->get());
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), Code::kDataLoss);
    EXPECT_NE(out.status().message().find("diffID"), std::string::npos);
  }
  {
    Digest sha512_tar = Digest::Of(HashAlgorithm::kSha512, tar);
    StringSource source(blob);
    auto stream = LayerStream::Open(&source, {.expected_diff_id = sha512_tar,
                                              .threaded = GetParam().threaded,
                                              .diff_id_thread = GetParam().diff_id_thread});
    ASSERT_TRUE(stream.ok());
    auto out = ReadAll(stream->get());
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ((*stream)->diff_id(), sha512_tar);
  }
}

INSTANTIATE_TEST_SUITE_P(LayerStream, LayerStreams,
                         ::testing::Values(StreamCase{true, DiffIdThread::kReader},
                                           StreamCase{true, DiffIdThread::kDecompressor},
                                           StreamCase{true, DiffIdThread::kOwnThread},
                                           StreamCase{false, DiffIdThread::kOwnThread},
                                           StreamCase{false, DiffIdThread::kReader},
                                           StreamCase{false, DiffIdThread::kDecompressor}),
                         [](const auto& info) {
                           DiffIdThread t = info.param.diff_id_thread;
                           return std::string(info.param.threaded ? "Threaded" : "Inline") +
                                  (t == DiffIdThread::kReader         ? "DiffIdOnReader"
                                   : t == DiffIdThread::kDecompressor ? "DiffIdOnDecompressor"
                                                                      : "DiffIdOnOwnThread");
                         });

TEST(LayerStream, ComputesOnlyTheDigestsAskedFor) {
  std::string tar = RandomText(200000, 23);
  for (const std::string& blob : {Gzip(tar), tar}) {
    StringSource source(blob);
    auto stream = LayerStream::Open(&source, {.compute_blob_digest = false});
    ASSERT_TRUE(stream.ok());
    ASSERT_TRUE(ReadAll(stream->get()).ok());
    EXPECT_TRUE((*stream)->blob_digest().empty());
    EXPECT_EQ((*stream)->diff_id(), Digest::Sha256Of(tar));

    StringSource source2(blob);
    stream = LayerStream::Open(&source2, {.compute_diff_id = false});
    ASSERT_TRUE(stream.ok());
    ASSERT_TRUE(ReadAll(stream->get()).ok());
    EXPECT_EQ((*stream)->blob_digest(), Digest::Sha256Of(blob));
    EXPECT_TRUE((*stream)->diff_id().empty());

    // An expected digest is checked even when not asked to compute it.
    StringSource source3(blob);
    stream = LayerStream::Open(&source3, {.expected_blob_digest = Digest::Sha256Of("x"),
                                          .expected_diff_id = Digest::Sha256Of(tar),
                                          .compute_blob_digest = false,
                                          .compute_diff_id = false});
    ASSERT_TRUE(stream.ok());
    EXPECT_EQ(ReadAll(stream->get()).status().code(), Code::kDataLoss);
  }
}

TEST(LayerStream, PassesDecompressionErrorsThrough) {
  std::string blob = Gzip(RandomText(100000, 14));
  blob.resize(blob.size() / 2);
  StringSource source(blob);
  auto stream = LayerStream::Open(&source, {.input_name = "layer T"});
  ASSERT_TRUE(stream.ok());
  auto out = ReadAll(stream->get());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(out.status().message().starts_with("layer T: gzip: stream ends inside a member"))
      << out.status().message();
}

class FailingSource : public ByteSource {
 public:
  explicit FailingSource(std::string data) : data_(std::move(data)) {}
  Result<size_t> Read(void* buf, size_t n) override {
    if (pos_ == data_.size()) return UnavailableError("connection reset");
    size_t k = std::min(n, data_.size() - pos_);
    std::memcpy(buf, data_.data() + pos_, k);
    pos_ += k;
    return k;
  }

 private:
  std::string data_;
  size_t pos_ = 0;
};

TEST(ReadAheadSource, DeliversEveryByteInOrderThenTheEnd) {
  std::string data = RandomText(1000003, 15);
  TricklingSource source(data, 16);
  ReadAheadSource ahead(&source, {.chunk_size = 4096, .chunks = 2});
  auto out = ReadAll(&ahead, 777);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), data.size());
  EXPECT_TRUE(*out == data);
}

TEST(ReadAheadSource, FillsWholeChunksSoBoundariesAreAligned) {
  std::string data = RandomText(100000, 17);
  TricklingSource source(data, 18);
  ReadAheadSource ahead(&source, {.chunk_size = 8192, .chunks = 3});
  size_t total = 0;
  for (;;) {
    auto c = ahead.ReadChunk(1 << 20);
    ASSERT_TRUE(c.ok());
    if (c->empty()) break;
    // Every view but the last is a whole chunk, although the source trickles.
    if (total + c->size() < data.size()) {
      EXPECT_EQ(c->size(), 8192u);
    }
    total += c->size();
  }
  EXPECT_EQ(total, data.size());
}

TEST(ReadAheadSource, DeliversDataBeforeTheErrorThenKeepsTheError) {
  std::string data = RandomText(10000, 19);
  FailingSource source(data);
  ReadAheadSource ahead(&source, {.chunk_size = 4096, .chunks = 2});
  std::string got;
  Status error;
  for (;;) {
    auto c = ahead.ReadChunk(100000);
    if (!c.ok()) {
      error = c.status();
      break;
    }
    ASSERT_FALSE(c->empty()) << "end of stream instead of the error";
    got.append(reinterpret_cast<const char*>(c->data()), c->size());
  }
  EXPECT_EQ(got, data);
  EXPECT_EQ(error.code(), Code::kUnavailable);
  EXPECT_EQ(ahead.ReadChunk(1).status(), error);
}

TEST(ReadAheadSource, ObserverSeesEveryByteBeforeTheEnd) {
  struct Collect : ChunkObserver {
    std::string bytes;
    void OnChunk(std::span<const uint8_t> b) override {
      bytes.append(reinterpret_cast<const char*>(b.data()), b.size());
    }
  } observed;
  std::string data = RandomText(500001, 21);
  TricklingSource source(data, 22);
  ReadAheadSource ahead(&source, {.chunk_size = 4096, .chunks = 3, .observer = &observed});
  auto out = ReadAll(&ahead, 1000);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(*out == data);
  EXPECT_TRUE(observed.bytes == data);  // complete as soon as the end was returned
}

TEST(ReadAheadSource, StopsWhenDestroyedWithBuffersFull) {
  std::string data = RandomText(1 << 20, 20);
  StringSource source(data);
  auto ahead = std::make_unique<ReadAheadSource>(&source, ReadAheadOptions{4096, 2});
  ASSERT_TRUE(ahead->ReadChunk(10).ok());
  ahead.reset();  // the producer is waiting for a free buffer: must not hang
}

TEST(ReadAheadSource, StopsAfterItsPipeIsCancelled) {
  BytePipe pipe(1024);
  auto ahead = std::make_unique<ReadAheadSource>(&pipe);
  ASSERT_TRUE(pipe.Write("abc", 3).ok());
  // The producer now blocks in pipe.Read(); cancelling the pipe releases it.
  pipe.Cancel(Status(Code::kCancelled, "stop"));
  ahead.reset();
}

}  // namespace
}  // namespace evs::tar
