// TarReader and LayerReader on archives built byte by byte: every header
// dialect, extension and numeric encoding the reader promises to handle.
// (Archives made by GNU tar itself: gnu_tar_test.cc.)
#include "evs/tar/tar_reader.h"

#include <gtest/gtest.h>

#include "evs/common/byte_stream.h"
#include "evs/tar/layer_reader.h"
#include "tar_builder.h"

namespace evs::tar {
namespace {

using testing::Base256;
using testing::EndOfArchive;
using testing::GnuLongHeader;
using testing::Header;
using testing::HeaderSpec;
using testing::Member;
using testing::PaxHeader;
using testing::PaxRecord;
using testing::ReadLayer;
using testing::ReadTar;

TEST(TarReader, ReadsUstarMembersWithOffsetsAndData) {
  std::string archive = Member({.name = "a.txt",
                                .mode = 0640,
                                .uid = 1000,
                                .gid = 100,
                                .mtime = 1700000000,
                                .uname = "alice",
                                .gname = "users"},
                               "hello") +
                        Member({.name = "dir/", .type = '5', .mode = 0755}) +
                        Member({.name = "big", .mode = 0600}, std::string(1500, 'x')) +
                        EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 3u);
  const TarHeader& a = (*entries)[0].header;
  EXPECT_EQ(a.path, "a.txt");
  EXPECT_EQ(a.type, EntryType::kRegular);
  EXPECT_EQ(a.mode, 0640u);
  EXPECT_EQ(a.uid, 1000u);
  EXPECT_EQ(a.gid, 100u);
  EXPECT_EQ(a.uname, "alice");
  EXPECT_EQ(a.gname, "users");
  EXPECT_EQ(a.mtime, 1700000000);
  EXPECT_EQ(a.size, 5u);
  EXPECT_EQ(a.header_offset, 0u);
  EXPECT_EQ(a.data_offset, 512u);
  EXPECT_EQ((*entries)[0].data, "hello");
  EXPECT_EQ((*entries)[1].header.type, EntryType::kDirectory);
  EXPECT_EQ((*entries)[1].header.header_offset, 1024u);
  EXPECT_EQ((*entries)[2].header.header_offset, 1536u);
  EXPECT_EQ((*entries)[2].header.data_offset, 2048u);
  EXPECT_EQ((*entries)[2].data, std::string(1500, 'x'));
}

TEST(TarReader, JoinsUstarPrefixAndName) {
  std::string prefix(150, 'p');
  auto entries =
      ReadTar(Member({.name = std::string(100, 'n'), .prefix = prefix}) + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ((*entries)[0].header.path, prefix + "/" + std::string(100, 'n'));
}

TEST(TarReader, GnuHeadersHaveNoPrefix) {
  // GNU keeps atime/ctime where ustar has the prefix: it must not be joined.
  HeaderSpec s{.name = "f", .prefix = "ignored", .magic = HeaderSpec::kGnu};
  std::string block = Header(s);
  auto entries = ReadTar(block + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ((*entries)[0].header.path, "f");
}

TEST(TarReader, GnuLongNameAndLongLinkName) {
  std::string name(300, 'a');
  std::string target(5000, 'b');
  std::string archive =
      GnuLongHeader('L', name) + GnuLongHeader('K', target) +
      Member(
          {.name = "short", .type = '2', .linkname = "short-target", .magic = HeaderSpec::kGnu}) +
      EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].header.path, name);
  EXPECT_EQ((*entries)[0].header.link_path, target);
  EXPECT_EQ((*entries)[0].header.type, EntryType::kSymlink);
  // The entry's own header follows the two long-name headers (2 × 512 + data).
  EXPECT_EQ((*entries)[0].header.header_offset, 512u + 512 + 512 + 5120);
}

TEST(TarReader, PaxRecordsOverrideHeaderFields) {
  std::string records = PaxRecord("path", "pax/path/é") + PaxRecord("linkpath", "pax-link") +
                        PaxRecord("uid", "4000000000") + PaxRecord("gid", "3000000") +
                        PaxRecord("uname", "bob") + PaxRecord("gname", "staff") +
                        PaxRecord("mtime", "1700000000.123456789123") + PaxRecord("atime", "1.5") +
                        PaxRecord("ctime", "2.5") + PaxRecord("SCHILY.xattr.user.b", "2") +
                        PaxRecord("SCHILY.xattr.user.a", std::string("x\0y\n=", 5)) +
                        PaxRecord("SCHILY.xattr.user.empty", "");
  std::string archive = PaxHeader(records) +
                        Member({.name = "hdr-name", .type = '1', .linkname = "hdr-link"}) +
                        EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  const TarHeader& h = (*entries)[0].header;
  EXPECT_EQ(h.path, "pax/path/é");
  EXPECT_EQ(h.link_path, "pax-link");
  EXPECT_EQ(h.uid, 4000000000u);
  EXPECT_EQ(h.gid, 3000000u);
  EXPECT_EQ(h.uname, "bob");
  EXPECT_EQ(h.gname, "staff");
  EXPECT_EQ(h.mtime, 1700000000);
  EXPECT_EQ(h.mtime_nsec, 123456789u);
  ASSERT_EQ(h.xattrs.size(), 3u);
  EXPECT_EQ(h.xattrs[0], (std::pair<std::string, std::string>("user.b", "2")));
  EXPECT_EQ(h.xattrs[1].second, std::string("x\0y\n=", 5));
  EXPECT_EQ(h.xattrs[2], (std::pair<std::string, std::string>("user.empty", "")));
}

TEST(TarReader, NegativeFractionalPaxMtimeIsFloored) {
  std::string archive =
      PaxHeader(PaxRecord("mtime", "-100000.25")) + Member({.name = "old"}) + EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ((*entries)[0].header.mtime, -100001);
  EXPECT_EQ((*entries)[0].header.mtime_nsec, 750000000u);
}

TEST(TarReader, PaxSizeOverridesHeaderSize) {
  std::string data(700, 'd');
  std::string archive = PaxHeader(PaxRecord("size", "700")) + Header({.name = "f", .size = 1}) +
                        testing::Padded(data) + Member({.name = "next"}, "n") + EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].data, data);
  EXPECT_EQ((*entries)[1].header.path, "next");
}

TEST(TarReader, LibarchiveXattrsAreDecoded) {
  // libarchive: name %-encoded, value base64 (no padding).
  std::string records = PaxRecord("LIBARCHIVE.xattr.user.with%3Dequals", "aGVsbG8") +
                        PaxRecord("LIBARCHIVE.xattr.security.capability", "AQAAAg==") +
                        PaxRecord("RHT.security.selinux", "system_u:object_r:bin_t:s0");
  auto entries = ReadTar(PaxHeader(records) + Member({.name = "f"}) + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  const auto& x = (*entries)[0].header.xattrs;
  ASSERT_EQ(x.size(), 3u);
  EXPECT_EQ(x[0], (std::pair<std::string, std::string>("user.with=equals", "hello")));
  EXPECT_EQ(x[1], (std::pair<std::string, std::string>("security.capability",
                                                       std::string("\x01\x00\x00\x02", 4))));
  EXPECT_EQ(x[2].first, "security.selinux");
}

TEST(TarReader, GlobalHeadersApplyUntilReplacedAndLocalRecordsWin) {
  std::string archive =
      PaxHeader(PaxRecord("uname", "global") + PaxRecord("gid", "7"), 'g') + Member({.name = "a"}) +
      PaxHeader(PaxRecord("uname", "local")) + Member({.name = "b"}) +
      // An empty local value cancels the global one: the header
      // field stands.
      PaxHeader(PaxRecord("gid", "")) + Member({.name = "c", .gid = 9}) +
      PaxHeader(PaxRecord("gid", ""), 'g') + Member({.name = "d", .gid = 11}) + EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 4u);
  EXPECT_EQ((*entries)[0].header.uname, "global");
  EXPECT_EQ((*entries)[0].header.gid, 7u);
  EXPECT_EQ((*entries)[1].header.uname, "local");
  EXPECT_EQ((*entries)[1].header.gid, 7u);
  EXPECT_EQ((*entries)[2].header.gid, 9u);
  EXPECT_EQ((*entries)[3].header.gid, 11u);
  EXPECT_EQ((*entries)[3].header.uname, "global");
}

TEST(TarReader, Base256NumericFields) {
  HeaderSpec s{.name = "b256", .magic = HeaderSpec::kGnu};
  s.raw = {{"uid", Base256(3000000000, 8)},
           {"gid", Base256(70000, 8)},
           {"mtime", Base256(-5000000000, 12)},
           {"size", Base256(3, 12)}};
  auto entries = ReadTar(Header(s) + testing::Padded("abc") + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  const TarHeader& h = (*entries)[0].header;
  EXPECT_EQ(h.uid, 3000000000u);
  EXPECT_EQ(h.gid, 70000u);
  EXPECT_EQ(h.mtime, -5000000000);
  EXPECT_EQ((*entries)[0].data, "abc");
}

TEST(TarReader, AcceptsSignedChecksums) {
  // A name with bytes ≥ 0x80 makes the signed and unsigned sums differ.
  auto entries =
      ReadTar(Member({.name = "\xc3\xa9t\xc3\xa9", .signed_checksum = true}) + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ((*entries)[0].header.path, "\xc3\xa9t\xc3\xa9");
}

TEST(TarReader, EntryKindsAndDeviceNumbers) {
  std::string archive =
      Member({.name = "reg0", .type = '0'}, "0") + Member({.name = "regnul", .type = '\0'}, "n") +
      Member({.name = "contig", .type = '7'}, "7") +
      Member({.name = "hard", .type = '1', .linkname = "reg0"}) +
      Member({.name = "sym", .type = '2', .linkname = "/abs/target"}) +
      Member({.name = "chr", .type = '3', .devmajor = 1, .devminor = 3}) +
      Member({.name = "blk", .type = '4', .devmajor = 259, .devminor = 1048575}) +
      Member({.name = "dir", .type = '5', .mode = 01777}) + Member({.name = "fifo", .type = '6'}) +
      Member({.name = "olddir/", .type = '\0', .magic = HeaderSpec::kV7}) +
      Member({.name = "suid", .mode = 06755}) + EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 11u);
  auto& e = *entries;
  EXPECT_EQ(e[0].header.type, EntryType::kRegular);
  EXPECT_EQ(e[1].header.type, EntryType::kRegular);
  EXPECT_EQ(e[1].data, "n");
  EXPECT_EQ(e[2].header.type, EntryType::kRegular);
  EXPECT_EQ(e[2].data, "7");
  EXPECT_EQ(e[3].header.type, EntryType::kHardlink);
  EXPECT_EQ(e[3].header.link_path, "reg0");
  EXPECT_EQ(e[4].header.type, EntryType::kSymlink);
  EXPECT_EQ(e[4].header.link_path, "/abs/target");
  EXPECT_EQ(e[5].header.type, EntryType::kCharDevice);
  EXPECT_EQ(e[5].header.dev_major, 1u);
  EXPECT_EQ(e[5].header.dev_minor, 3u);
  EXPECT_EQ(e[6].header.type, EntryType::kBlockDevice);
  EXPECT_EQ(e[6].header.dev_major, 259u);
  EXPECT_EQ(e[6].header.dev_minor, 1048575u);
  EXPECT_EQ(e[7].header.type, EntryType::kDirectory);
  EXPECT_EQ(e[7].header.mode, 01777u);
  EXPECT_EQ(e[8].header.type, EntryType::kFifo);
  EXPECT_EQ(e[9].header.type, EntryType::kDirectory);
  EXPECT_EQ(e[9].header.uname, "");  // v7 has no uname field
  EXPECT_EQ(e[10].header.mode, 06755u);
}

TEST(TarReader, ModeFileTypeBitsAreDropped) {
  auto entries = ReadTar(Member({.name = "f", .mode = 0100644}) + EndOfArchive());
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  EXPECT_EQ((*entries)[0].header.mode, 0644u);
}

TEST(TarReader, HeaderOnlyTypesCarryNoDataWhateverTheirSize) {
  // As Go's archive/tar reads them: the block after a symlink with size 512
  // is the next header, not data.
  for (char type : {'1', '2', '3', '4', '5', '6'}) {
    std::string archive = Header({.name = "x", .type = type, .size = 512, .linkname = "t"}) +
                          Member({.name = "next"}, "n") + EndOfArchive();
    auto entries = ReadTar(archive);
    ASSERT_TRUE(entries.ok()) << type << ": " << entries.status().ToString();
    ASSERT_EQ(entries->size(), 2u) << type;
    EXPECT_EQ((*entries)[0].header.size, 0u) << type;
    EXPECT_EQ((*entries)[1].header.path, "next") << type;
  }
}

TEST(TarReader, GnuDumpdirDataIsSkippedAndVolumeLabelsIgnored) {
  std::string archive =
      Member({.name = "label", .type = 'V', .magic = HeaderSpec::kGnu}) +
      Member({.name = "dd/", .type = 'D', .magic = HeaderSpec::kGnu}, std::string("Yfile\0\0", 7)) +
      Member({.name = "after"}, "a") + EndOfArchive();
  auto entries = ReadTar(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].header.type, EntryType::kDirectory);
  EXPECT_EQ((*entries)[1].header.path, "after");
}

TEST(TarReader, EndsAtOneZeroBlockOrAtEndOfStream) {
  // GNU tar stops at the first zero block; what follows is read (for the
  // digests) but not parsed.
  std::string one_zero = Member({.name = "a"}) + std::string(512, '\0') + "garbage after";
  auto a = ReadTar(one_zero);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->size(), 1u);
  auto b = ReadTar(Member({.name = "a"}));  // no end marker at all
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->size(), 1u);
  auto empty = ReadTar("");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());
}

TEST(TarReader, TeeSeesEveryByteIncludingPaddingAfterTheEnd) {
  std::string archive = Member({.name = "a"}, "data") +
                        Member({.name = "b"}, std::string(3000, 'b')) + EndOfArchive() +
                        std::string(8192, '\0');
  StringSource source(archive);
  std::string teed;
  struct StringSink : ByteSink {
    std::string* out;
    Status Write(const void* d, size_t n) override {
      out->append(static_cast<const char*>(d), n);
      return OkStatus();
    }
  } sink;
  sink.out = &teed;
  TarReader reader(&source, {.tee = &sink});
  char buf[10];
  auto h = reader.Next();
  ASSERT_TRUE(h.ok() && *h);
  ASSERT_TRUE(reader.ReadData(buf, 2).ok());  // part of the data, then skip
  while (true) {
    auto n = reader.Next();
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    if (*n == nullptr) break;
  }
  EXPECT_EQ(teed, archive);
  EXPECT_EQ(reader.offset(), archive.size());
}

TEST(TarReader, DataIsLentWithoutCopyingFromAChunkSource) {
  std::string archive = Member({.name = "f"}, std::string(100000, 'q')) + EndOfArchive();
  StringSource inner(archive);
  BufferedChunkSource chunks(&inner, 1 << 20);
  TarReader reader(&chunks, {});
  auto h = reader.Next();
  ASSERT_TRUE(h.ok() && *h);
  auto c = reader.ReadDataChunk(1 << 20);
  ASSERT_TRUE(c.ok());
  // The whole file came in one view into the source's buffer.
  EXPECT_EQ(c->size(), 100000u);
  EXPECT_EQ(c->front(), 'q');
  auto end = reader.ReadDataChunk(1 << 20);
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->empty());
}

TEST(TarReader, RejectsGnuSparseFiles) {
  auto old_sparse =
      ReadTar(Member({.name = "sp", .type = 'S', .magic = HeaderSpec::kGnu}) + EndOfArchive());
  ASSERT_FALSE(old_sparse.ok());
  EXPECT_NE(old_sparse.status().message().find("GNU sparse file (old GNU format, type 'S')"),
            std::string::npos)
      << old_sparse.status().message();
  EXPECT_NE(old_sparse.status().message().find("\"sp\" at offset 0"), std::string::npos);

  struct Case {
    std::string records;
    std::string version;
  } cases[] = {
      {PaxRecord("GNU.sparse.size", "10") + PaxRecord("GNU.sparse.numblocks", "1") +
           PaxRecord("GNU.sparse.offset", "0") + PaxRecord("GNU.sparse.numbytes", "10"),
       "0.0"},
      {PaxRecord("GNU.sparse.size", "10") + PaxRecord("GNU.sparse.map", "0,10"), "0.1"},
      {PaxRecord("GNU.sparse.major", "1") + PaxRecord("GNU.sparse.minor", "0") +
           PaxRecord("GNU.sparse.name", "real") + PaxRecord("GNU.sparse.realsize", "10"),
       "1.0"},
  };
  for (const Case& c : cases) {
    auto r = ReadTar(PaxHeader(c.records) + Member({.name = "GNUSparseFile.0/real"}, "x") +
                     EndOfArchive());
    ASSERT_FALSE(r.ok()) << c.version;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find("GNU sparse file (pax format " + c.version),
              std::string::npos)
        << r.status().message();
  }
}

TEST(TarReader, RejectsUnknownEntryTypes) {
  auto r = ReadTar(Member({.name = "weird", .type = 'Q'}) + EndOfArchive());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unsupported entry type 'Q'"), std::string::npos)
      << r.status().message();
}

TEST(LayerReader, NormalizesPaths) {
  struct Case {
    const char* in;
    const char* out;
  } cases[] = {{"./", ""},       {"/", ""},           {".", ""},
               {"./a/b", "a/b"}, {"/abs/x", "abs/x"}, {"a//b///c/", "a/b/c"},
               {"a/./b", "a/b"}, {"a/../b", "b"},     {"a/b/../../c", "c"},
               {"./a/..", ""}};
  for (const Case& c : cases) {
    auto r = NormalizeLayerPath(c.in);
    ASSERT_TRUE(r.ok()) << c.in << ": " << r.status().ToString();
    EXPECT_EQ(*r, c.out) << c.in;
  }
  for (const char* bad : {"..", "../x", "a/../../x", "/../x", "./..", "a/b/../../../c"}) {
    auto r = NormalizeLayerPath(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_FALSE(NormalizeLayerPath(std::string("a\0b", 3)).ok());
  EXPECT_TRUE(NormalizeLayerPath(std::string(255, 'n')).ok());
  EXPECT_FALSE(NormalizeLayerPath(std::string(256, 'n')).ok());
}

TEST(LayerReader, WhiteoutsBecomeCharDevicesAndOpaqueMarkers) {
  std::string archive =
      Member({.name = "./etc/", .type = '5', .mode = 0755}) +
      Member({.name = "./etc/.wh.passwd", .mode = 0644, .uid = 5, .gid = 6, .mtime = 1234}) +
      Member({.name = "./.wh.toplevel"}) + Member({.name = "./var/lib/.wh..wh..opq"}) +
      Member({.name = ".wh..wh..opq"}) + Member({.name = "usr/.wh..wh.plnk", .type = '5'}) +
      Member({.name = "usr/.wh..wh.plnk/123.4"}, "aufs hardlink store") + EndOfArchive();
  auto entries = ReadLayer(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 5u);
  auto& e = *entries;
  EXPECT_EQ(e[0].entry.path, "etc");
  EXPECT_EQ(e[1].entry.path, "etc/passwd");
  EXPECT_EQ(e[1].entry.type, EntryType::kCharDevice);
  EXPECT_TRUE(e[1].entry.IsWhiteout());
  EXPECT_EQ(e[1].entry.mode, 0u);
  EXPECT_EQ(e[1].entry.uid, 5u);
  EXPECT_EQ(e[1].entry.gid, 6u);
  EXPECT_EQ(e[1].entry.mtime, 1234);
  EXPECT_EQ(e[2].entry.path, "toplevel");
  EXPECT_TRUE(e[2].entry.IsWhiteout());
  EXPECT_EQ(e[3].entry.path, "var/lib");
  EXPECT_EQ(e[3].entry.type, EntryType::kOpaqueMarker);
  EXPECT_EQ(e[4].entry.path, "");
  EXPECT_EQ(e[4].entry.type, EntryType::kOpaqueMarker);
  // ".wh..wh.plnk" (aufs's hardlink directory) and everything under it are
  // aufs metadata, dropped.
}

TEST(LayerReader, RejectsWhiteoutsOfNothing) {
  for (const char* name : {"a/.wh.", "a/.wh..", "a/.wh..."}) {
    auto r = ReadLayer(Member({.name = name}) + EndOfArchive());
    EXPECT_FALSE(r.ok()) << name;
  }
}

TEST(LayerReader, EntriesCarryLayerFieldsAndSortedXattrs) {
  std::string records =
      PaxRecord("SCHILY.xattr.user.z", "1") + PaxRecord("SCHILY.xattr.security.capability", "c") +
      PaxRecord("SCHILY.xattr.trusted.t", "2") + PaxRecord("mtime", "4102444800.5");
  std::string archive =
      Member({.name = "./", .type = '5'}) + PaxHeader(records) +
      Member({.name = "./bin/tool", .mode = 04755, .uid = 70000, .gid = 80000}, "#!/bin/sh\n") +
      Member({.name = "./bin/hl", .type = '1', .linkname = "./bin/../bin/tool"}) +
      Member({.name = "dev/null", .type = '3', .devmajor = 1, .devminor = 3}) +
      Member({.name = "link", .type = '2', .linkname = "../../outside"}) + EndOfArchive();
  auto entries = ReadLayer(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 5u);
  auto& e = *entries;
  EXPECT_EQ(e[0].entry.path, "");
  EXPECT_EQ(e[0].entry.type, EntryType::kDirectory);
  const LayerEntry& tool = e[1].entry;
  EXPECT_EQ(tool.path, "bin/tool");
  EXPECT_EQ(tool.mode, 04755u);
  EXPECT_EQ(tool.uid, 70000u);
  EXPECT_EQ(tool.size, 10u);
  EXPECT_EQ(tool.mtime, 4102444800);
  EXPECT_EQ(tool.mtime_nsec, 500000000u);
  EXPECT_EQ(e[1].data, "#!/bin/sh\n");
  EXPECT_EQ(tool.data_offset % 512, 0u);
  ASSERT_EQ(tool.xattrs.size(), 3u);
  EXPECT_EQ(tool.xattrs[0].first, "security.capability");
  EXPECT_EQ(tool.xattrs[1].first, "trusted.t");
  EXPECT_EQ(tool.xattrs[2].first, "user.z");
  EXPECT_EQ(e[2].entry.type, EntryType::kHardlink);
  EXPECT_EQ(e[2].entry.link_target, "bin/tool");
  EXPECT_EQ(e[2].entry.size, 0u);
  EXPECT_EQ(e[3].entry.rdev_major, 1u);
  EXPECT_EQ(e[3].entry.rdev_minor, 3u);
  // Symlink targets are kept as stored: the kernel resolves them inside the
  // mount, so "../../outside" escapes nothing.
  EXPECT_EQ(e[4].entry.link_target, "../../outside");
}

TEST(LayerReader, RootEntryMustBeADirectory) {
  auto ok = ReadLayer(Member({.name = "./", .type = '5', .mode = 0700}) + EndOfArchive());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)[0].entry.path, "");
  EXPECT_EQ((*ok)[0].entry.mode, 0700u);
  auto bad = ReadLayer(Member({.name = "./", .type = '2', .linkname = "x"}) + EndOfArchive());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot replace the layer root"), std::string::npos);
}

TEST(LayerReader, DataIsOnlyReadableForRegularFiles) {
  // A directory with a dumpdir listing: the listing is not content.
  std::string archive = Member({.name = "dd/", .type = 'D', .magic = HeaderSpec::kGnu}, "Yx\0") +
                        Member({.name = "f"}, "content") + EndOfArchive();
  auto entries = ReadLayer(archive);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].data, "");
  EXPECT_EQ((*entries)[0].entry.size, 0u);
  EXPECT_EQ((*entries)[1].data, "content");
}

TEST(LayerReader, RejectsEmptySymlinkTargets) {
  auto r = ReadLayer(Member({.name = "s", .type = '2'}) + EndOfArchive());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("empty target"), std::string::npos);
}

}  // namespace
}  // namespace evs::tar
