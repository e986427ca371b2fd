// Hostile input for the tar module (label `hostile`; scripts/test.sh also runs
// these under AddressSanitizer + UBSan). Every malformed input must fail with
// an error naming the input, the entry (when one is known) and the offset —
// never crash, never read out of bounds, never loop without end.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "evs/common/byte_stream.h"
#include "evs/tar/decompress.h"
#include "evs/tar/layer_reader.h"
#include "evs/tar/tar_reader.h"
#include "tar_builder.h"

namespace evs::tar {
namespace {

using testing::Base256;
using testing::EndOfArchive;
using testing::GnuLongHeader;
using testing::Gzip;
using testing::Header;
using testing::HeaderSpec;
using testing::Member;
using testing::PaxHeader;
using testing::PaxRecord;
using testing::ReadLayer;
using testing::ReadTar;

constexpr const char* kLayer = "layer sha256:hostile";

// A well-formed archive touching every header kind, to cut and corrupt.
std::string SampleArchive() {
  return Member({.name = "./", .type = '5', .mode = 0755}) +
         PaxHeader(PaxRecord("path", "pax/" + std::string(150, 'p')) +
                   PaxRecord("SCHILY.xattr.user.k", "v")) +
         Member({.name = "ignored"}, std::string(1000, 'a')) +
         GnuLongHeader('L', std::string(200, 'L')) +
         Member({.name = "x", .magic = HeaderSpec::kGnu}, std::string(513, 'b')) +
         Member({.name = "file2"}, std::string(5000, 'c')) +
         Member({.name = "sym", .type = '2', .linkname = "file2"}) + EndOfArchive();
}

Status LayerStatus(std::string archive) {
  return ReadLayer(std::move(archive), {.input_name = kLayer}).status();
}

void ExpectNamesInputAndOffset(const Status& s) {
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.message().starts_with(std::string(kLayer) + ": ")) << s.message();
  EXPECT_NE(s.message().find(" at offset "), std::string::npos) << s.message();
}

TEST(TarHostile, TruncatedArchivesFailNamingEntryAndOffset) {
  std::string archive = SampleArchive();
  ASSERT_TRUE(LayerStatus(archive).ok());
  size_t failures = 0;
  // Up to the end of the first zero block (after it the archive has ended:
  // GNU tar stops at one zero block too).
  for (size_t cut = 1; cut < archive.size() - 512; cut += 61) {
    Status s = LayerStatus(archive.substr(0, cut));
    if (cut % 512 == 0 && s.ok()) continue;  // ends between members: a valid (short) archive
    ++failures;
    ExpectNamesInputAndOffset(s);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.message();
  }
  EXPECT_GT(failures, 100u);
  // Cut inside file2's data: the message says which entry and how much is missing.
  size_t file2_data = archive.find(std::string(5000, 'c'));
  Status s = LayerStatus(archive.substr(0, file2_data + 100));
  EXPECT_EQ(s.message(), StrCat(kLayer, ": tar entry \"file2\" at offset ", file2_data - 512,
                                ": archive ends inside the entry's data (4900 of 5000 bytes "
                                "missing)"));
  // Cut inside a header.
  s = LayerStatus(archive.substr(0, file2_data - 300));
  EXPECT_EQ(s.message(), StrCat(kLayer, ": tar header at offset ", file2_data - 512,
                                ": archive ends inside a header (212 of 512 bytes)"));
}

TEST(TarHostile, TruncatedCompressedStreamsFail) {
  std::string blob = Gzip(SampleArchive());
  StringSource source(blob.substr(0, blob.size() - 10));
  auto stream = LayerStream::Open(&source, {.input_name = kLayer});
  ASSERT_TRUE(stream.ok());
  LayerReader reader(stream->get(), {.input_name = kLayer});
  Status s;
  for (;;) {
    auto e = reader.Next();
    if (!e.ok()) {
      s = e.status();
      break;
    }
    ASSERT_NE(*e, nullptr) << "a truncated gzip stream read as complete";
  }
  EXPECT_TRUE(s.message().starts_with(StrCat(kLayer, ": gzip: stream ends inside a member")))
      << s.message();
}

TEST(TarHostile, BadChecksumsNameTheHeader) {
  std::string archive = SampleArchive();
  size_t file2 = archive.find("file2");
  archive[file2 + 4] = '3';  // "file3": the stored sum no longer matches
  Status s = LayerStatus(archive);
  EXPECT_EQ(s.message(),
            StrCat(kLayer, ": tar entry \"file3\" at offset ", file2, ": bad header checksum"));
  s = LayerStatus(Member({.name = "off-by-one", .checksum_delta = 1}) + EndOfArchive());
  EXPECT_EQ(s.message(),
            StrCat(kLayer, ": tar entry \"off-by-one\" at offset 0: bad header checksum"));
  HeaderSpec bad_field{.name = "sum"};
  std::string block = Header(bad_field);
  std::memcpy(block.data() + 148, "12x4567", 7);
  s = LayerStatus(block + EndOfArchive());
  EXPECT_NE(s.message().find("\"sum\" at offset 0: checksum field: invalid character 0x78"),
            std::string::npos)
      << s.message();
}

TEST(TarHostile, GarbageNeverCrashes) {
  std::mt19937 rng(42);
  for (int i = 0; i < 300; ++i) {
    std::string garbage(1 + rng() % 4000, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    Status s = LayerStatus(garbage);
    ExpectNamesInputAndOffset(s);
  }
}

TEST(TarHostile, MutatedHeadersWithValidChecksumsNeverCrash) {
  // Corrupt header bytes, then make the checksum right again, so the parser
  // past the checksum sees hostile fields.
  std::string archive = SampleArchive();
  std::vector<size_t> headers;
  for (size_t off = 0; off + 512 <= archive.size(); off += 512) {
    // A header block: its checksum matches (data blocks' almost never do).
    std::string block = archive.substr(off, 512);
    if (block == std::string(512, '\0')) continue;
    int64_t sum = 0;
    for (size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : (unsigned char)block[i];
    if (std::strtol(block.substr(148, 8).c_str(), nullptr, 8) == sum) headers.push_back(off);
  }
  ASSERT_GE(headers.size(), 6u);
  std::mt19937 rng(7);
  int ok = 0, failed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string mutated = archive;
    size_t off = headers[rng() % headers.size()];
    int flips = 1 + rng() % 8;
    for (int f = 0; f < flips; ++f) {
      size_t pos = rng() % 512;
      if (pos >= 148 && pos < 156) continue;
      mutated[off + pos] = static_cast<char>(rng());
    }
    int64_t sum = 0;
    for (size_t k = 0; k < 512; ++k) {
      sum += (k >= 148 && k < 156) ? ' ' : (unsigned char)mutated[off + k];
    }
    char buf[24];
    std::snprintf(buf, sizeof buf, "%06llo", static_cast<unsigned long long>(sum));
    std::memcpy(mutated.data() + off + 148, buf, 6);
    Status s = LayerStatus(mutated);
    if (s.ok()) {
      ++ok;
    } else {
      ++failed;
      ExpectNamesInputAndOffset(s);
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(ok, 0);
}

TEST(TarHostile, NumericFieldsThatOverflowAreErrors) {
  struct Case {
    std::string archive;
    std::string expected;
  } cases[] = {
      {Header({.name = "s", .raw = {{"size", std::string("\x80") + std::string(11, '\xff')}}}) +
           EndOfArchive(),
       "tar entry \"s\" at offset 0: size field: base-256 number overflows 64 bits"},
      {Header({.name = "u", .raw = {{"uid", Base256(int64_t{1} << 40, 8)}}}) + EndOfArchive(),
       "tar entry \"u\" at offset 0: uid 1099511627776 out of range"},
      {Header({.name = "g", .raw = {{"gid", Base256(-1, 8)}}}) + EndOfArchive(),
       "tar entry \"g\" at offset 0: gid -1 out of range"},
      {Header({.name = "n", .raw = {{"size", Base256(-1, 12)}}}) + EndOfArchive(),
       "tar entry \"n\" at offset 0: negative size -1"},
      {Header({.name = "m", .raw = {{"mtime", "0000000009"}}}) + EndOfArchive(),
       "tar entry \"m\" at offset 0: mtime field: invalid character 0x39 in an octal number"},
      {Header({.name = "d", .type = '3', .raw = {{"devmajor", Base256(int64_t{1} << 33, 8)}}}) +
           EndOfArchive(),
       "tar entry \"d\" at offset 0: device number 8589934592:0 out of range"},
      {PaxHeader(PaxRecord("size", "99999999999999999999")) + Member({.name = "ps"}) +
           EndOfArchive(),
       "tar entry \"ps\" at offset 1024: pax record size=\"99999999999999999999\": number out "
       "of range"},
      {PaxHeader(PaxRecord("uid", "4294967296")) + Member({.name = "pu"}) + EndOfArchive(),
       "tar entry \"pu\" at offset 1024: pax record uid=\"4294967296\": number out of range"},
      {PaxHeader(PaxRecord("mtime", "99999999999999999999.5")) + Member({.name = "pm"}) +
           EndOfArchive(),
       "tar entry \"pm\" at offset 1024: pax record mtime=\"99999999999999999999.5\": number out "
       "of range"},
      {PaxHeader(PaxRecord("mtime", "12x")) + Member({.name = "pt"}) + EndOfArchive(),
       "tar entry \"pt\" at offset 1024: pax record mtime=\"12x\": not a decimal number"},
      {PaxHeader(PaxRecord("size", "-5")) + Member({.name = "pn"}) + EndOfArchive(),
       "tar entry \"pn\" at offset 1024: pax record size=\"-5\": not a decimal number"},
      // A size far beyond the stream: the data runs out, no huge allocation.
      {Header({.name = "huge", .raw = {{"size", "77777777777"}}}) + "abc",
       "tar entry \"huge\" at offset 0: archive ends inside the entry's data (8589934588 of "
       "8589934591 bytes missing)"},
  };
  for (const Case& c : cases) {
    Status s = LayerStatus(c.archive);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << c.expected;
    EXPECT_EQ(s.message(), StrCat(kLayer, ": ", c.expected));
  }
}

TEST(TarHostile, PaxRecordsWhoseLengthsLieAreErrors) {
  struct Case {
    std::string records;
    std::string reason;
  } cases[] = {
      {"50 path=x\n",
       "malformed pax record at offset 512: length \"50\" is not a number within "
       "the header"},
      {"3 path=abc\n", "malformed pax record at offset 512: length 3 is too short"},
      {"0 path=x\n", "malformed pax record at offset 512: length 0 is too short"},
      {"12 path=abcdefgh\n",
       "malformed pax record at offset 512: length 12 does not end at a "
       "newline"},
      {"11 pathxyz\n", "malformed pax record at offset 512: no keyword=value"},
      {"9 =value\n", "malformed pax record at offset 512: no keyword=value"},
      {"x2 path=a\n",
       "malformed pax record at offset 512: length \"x2\" is not a number within "
       "the header"},
      {"-5 path=x\n",
       "malformed pax record at offset 512: length \"-5\" is not a number within "
       "the header"},
      {"path=x\n", "malformed pax record at offset 512: no length"},
      {PaxRecord("uid", "1") + "99999999999999999999999 a=b\n",
       "malformed pax record at offset 520: no length"},
  };
  for (const Case& c : cases) {
    Status s = LayerStatus(PaxHeader(c.records) + Member({.name = "f"}) + EndOfArchive());
    EXPECT_EQ(s.message(),
              StrCat(kLayer, ": tar header at offset 0: pax extended header: ", c.reason))
        << c.records;
  }
}

TEST(TarHostile, ExtensionHeadersAreBoundedInSizeAndCount) {
  // One header bigger than the limit: refused before anything is read.
  HeaderSpec big{
      .name = "././@LongLink", .type = 'L', .size = uint64_t{1} << 30, .magic = HeaderSpec::kGnu};
  Status s = LayerStatus(Header(big) + EndOfArchive());
  EXPECT_EQ(s.message(), StrCat(kLayer,
                                ": tar header at offset 0: GNU long name headers add up "
                                "to 1073741824 bytes, more than the limit of 8388608 "
                                "bytes"));
  // Many small ones for one entry add up.
  std::string many;
  for (int i = 0; i < 40; ++i) many += PaxHeader(PaxRecord("comment", std::string(300, 'c')));
  many += Member({.name = "f"}) + EndOfArchive();
  auto r = ReadLayer(many, {.input_name = kLayer, .max_extension_bytes = 4096});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pax extended headers add up to"), std::string::npos)
      << r.status().message();
  // Global records with ever new keywords add up too.
  std::string globals;
  for (int i = 0; i < 40; ++i) {
    globals += PaxHeader(PaxRecord(StrCat("SCHILY.xattr.user.", i), std::string(300, 'g')), 'g');
  }
  r = ReadLayer(globals + Member({.name = "f"}) + EndOfArchive(),
                {.input_name = kLayer, .max_extension_bytes = 4096});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pax global headers add up to"), std::string::npos)
      << r.status().message();
  // An extension header with no entry after it.
  s = LayerStatus(PaxHeader(PaxRecord("path", "dangling")) + EndOfArchive());
  EXPECT_EQ(s.message(), StrCat(kLayer,
                                ": tar header at offset 0: extension header is not "
                                "followed by an entry"));
}

TEST(TarHostile, PathsThatLeaveTheRootAreErrors) {
  struct Case {
    std::string archive;
    std::string expected;
  } cases[] = {
      {Member({.name = "../etc/passwd"}, "x") + EndOfArchive(),
       "tar entry \"../etc/passwd\" at offset 0: path leaves the layer root"},
      {Member({.name = "a/../../x"}) + EndOfArchive(),
       "tar entry \"a/../../x\" at offset 0: path leaves the layer root"},
      {Member({.name = "/../x"}) + EndOfArchive(),
       "tar entry \"/../x\" at offset 0: path leaves the layer root"},
      {Member({.name = "ok"}) + PaxHeader(PaxRecord("path", "./x/../../../root/.ssh/a")) +
           Member({.name = "innocent"}) + EndOfArchive(),
       "tar entry \"./x/../../../root/.ssh/a\" at offset 1536: path leaves the layer root"},
      {GnuLongHeader('L', std::string(150, 'd') + "/" + std::string(150, 'e') + "/../../../y") +
           Member({.name = "z", .magic = HeaderSpec::kGnu}) + EndOfArchive(),
       "tar entry \"" + std::string(150, 'd') + "/" + std::string(150, 'e') +
           "/../../../y\" at offset 1024: path leaves the layer root"},
      {Member({.name = "hl", .type = '1', .linkname = "../../etc/shadow"}) + EndOfArchive(),
       "tar entry \"hl\" at offset 0: hardlink target: path leaves the layer root"},
      {Member({.name = "hl", .type = '1', .linkname = "./"}) + EndOfArchive(),
       "tar entry \"hl\" at offset 0: hardlink to the layer root"},
      {PaxHeader(PaxRecord("path", std::string("a\0b", 3))) + Member({.name = "n"}) +
           EndOfArchive(),
       "tar entry \"a\\x00b\" at offset 1024: path contains a NUL byte"},
      {Member({.name = "dir/.wh..."}) + EndOfArchive(),
       "tar entry \"dir/.wh...\" at offset 0: whiteout names no file"},
  };
  for (const Case& c : cases) {
    Status s = LayerStatus(c.archive);
    EXPECT_EQ(s.code(), Code::kInvalidArgument);
    // Long names are shortened in messages; compare what is shown.
    if (c.expected.size() < 300) {
      EXPECT_EQ(s.message(), StrCat(kLayer, ": ", c.expected));
    } else {
      EXPECT_NE(s.message().find("path leaves the layer root"), std::string::npos);
      EXPECT_NE(s.message().find("at offset 1024"), std::string::npos) << s.message();
    }
  }
}

// An endless gzip stream: member after member of zeros, forever.
class EndlessGzip : public ByteSource {
 public:
  EndlessGzip() : member_(Gzip(std::string(1 << 20, '\0'), 9)) {}
  Result<size_t> Read(void* buf, size_t n) override {
    size_t k = std::min(n, member_.size() - pos_);
    std::memcpy(buf, member_.data() + pos_, k);
    pos_ = (pos_ + k) % member_.size();
    return k;
  }

 private:
  std::string member_;
  size_t pos_ = 0;
};

TEST(TarHostile, AGzipStreamThatExpandsWithoutEndHitsTheCap) {
  // Zeros parse as the end of the archive; the reader then drains the rest
  // of the stream for the digests — which never ends, until the cap.
  EndlessGzip blob;
  auto stream = LayerStream::Open(&blob, {.input_name = kLayer, .max_tar_bytes = 64 << 20});
  ASSERT_TRUE(stream.ok());
  LayerReader reader(stream->get(), {.input_name = kLayer});
  auto e = reader.Next();
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Code::kResourceExhausted);
  EXPECT_TRUE(e.status().message().starts_with(
      StrCat(kLayer, ": decompressed data exceeds the limit of 67108864 bytes")))
      << e.status().message();
  // Sticky.
  EXPECT_EQ(reader.Next().status(), e.status());
}

TEST(TarHostile, AnEntryClaimingMoreDataThanTheCapAllowsFails) {
  // A 1 TiB file whose "data" is an endless stream of zeros.
  class Endless : public ByteSource {
   public:
    Result<size_t> Read(void* buf, size_t n) override {
      if (!header_sent_) {
        std::string h = Header({.name = "bomb", .raw = {{"size", Base256(int64_t{1} << 40, 12)}}});
        size_t k = std::min(n, h.size() - pos_);
        std::memcpy(buf, h.data() + pos_, k);
        pos_ += k;
        header_sent_ = pos_ == h.size();
        return k;
      }
      std::memset(buf, 0, n);
      return n;
    }

   private:
    bool header_sent_ = false;
    size_t pos_ = 0;
  } endless;
  auto d = Decompressor::Create(&endless, {.input_name = kLayer, .max_output_bytes = 32 << 20});
  ASSERT_TRUE(d.ok());
  LayerReader reader(d->get(), {.input_name = kLayer});
  auto e = reader.Next();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_NE(*e, nullptr);
  EXPECT_EQ((*e)->size, uint64_t{1} << 40);
  auto next = reader.Next();  // skips the data: runs into the cap
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), Code::kResourceExhausted);
}

}  // namespace
}  // namespace evs::tar
