// ErofsWriter, specified through what an image holds: read back by our reader
// and checked by fsck.erofs (erofs-utils) where it can read the image.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "crc32c.h"
#include "evs/common/block_observer.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/erofs/format.h"
#include "image_builder.h"

namespace evs::testing {
namespace {

using erofs::ErofsReader;
using erofs::Inode;

void ExpectFsckAccepts(const std::string& image) {
  if (!HaveProgram("fsck.erofs")) return;
  ShOk("fsck.erofs '" + image + "'");
}

Inode MustLookup(const ErofsReader& r, const std::string& path) {
  auto i = r.Lookup(path);
  EXPECT_TRUE(i.ok()) << i.status().ToString();
  return i.ok() ? *i : Inode{};
}

std::string Bytes(const std::string& path) { return ReadFileOrDie(path); }

TEST(Crc32c, IsTheCastagnoliRegisterWithoutFinalXor) {
  // The CRC-32C check value of "123456789" is 0xE3069283 after the final
  // inversion; EROFS stores the register before it (§1.1).
  EXPECT_EQ(erofs::Crc32cUpdate(0xFFFFFFFFu, "123456789", 9), ~0xE3069283u);
}

TEST(ErofsWriter, EmptyLayerHoldsOnlyTheRoot) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->summary().inodes, 1u);
  EXPECT_EQ(b.info().image_size % 4096, 0u);
  EXPECT_EQ(b.info().block_size, 4096u);
  Inode root = MustLookup(*r, "");
  EXPECT_TRUE(root.is_dir());
  EXPECT_EQ(root.mode & 07777, 0755u);
  EXPECT_NE(root.nid, 0u) << "nid 0 would be inode number 0, which readdir(3) hides";
  auto entries = r->ReadDirectory(root);
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, ".");
  EXPECT_EQ((*entries)[1].name, "..");
  EXPECT_EQ((*entries)[1].nid, root.nid);
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, ImageSizeMatchesTheSuperblockAndTheFile) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.File("f", std::string(10000, 'x')).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  struct stat st;
  ASSERT_EQ(::stat(b.path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), b.info().image_size);
  EXPECT_EQ(r->summary().blocks * 4096, b.info().image_size);
  EXPECT_EQ(b.info().data_bytes, 10000u);
}

TEST(ErofsWriter, SameEntriesGiveSameBytes) {
  TempDir t;
  auto build = [&](const std::string& name, const std::string& seed) {
    erofs::WriterOptions o;
    o.uuid_seed = seed;
    ImageBuilder b(t.Join(name), o);
    EXPECT_TRUE(b.Dir("d", 0755, 5).ok());
    for (int i = 0; i < 300; ++i)
      EXPECT_TRUE(
          b.File("d/f" + std::to_string(i), std::string(i * 37, 'a' + i % 26), 0644, i).ok());
    EXPECT_TRUE(b.Symlink("l", "d/f1").ok());
    EXPECT_TRUE(b.Link("h", "d/f2").ok());
    EXPECT_TRUE(b.Finish().ok());
  };
  build("a", "sha256:1234");
  build("b", "sha256:1234");
  build("c", "sha256:5678");
  EXPECT_EQ(Bytes(t.Join("a")), Bytes(t.Join("b")));
  const std::string a = Bytes(t.Join("a")), c = Bytes(t.Join("c"));
  ASSERT_EQ(a.size(), c.size());
  // Only the UUID (and so the checksum) depends on the seed.
  size_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] == c[i]) continue;
    ++differing;
    EXPECT_TRUE((i >= 1024 + 0x30 && i < 1024 + 0x40) || (i >= 1028 && i < 1032)) << "byte " << i;
  }
  EXPECT_GT(differing, 0u);
}

TEST(ErofsWriter, UuidComesFromTheSeed) {
  TempDir t;
  erofs::WriterOptions o;
  o.uuid_seed = "sha256:abcd";
  ImageBuilder seeded(t.Join("a"), o);
  auto r = seeded.FinishAndOpen();
  ASSERT_TRUE(r);
  const auto& uuid = r->summary().uuid;
  EXPECT_NE(uuid, (std::array<uint8_t, 16>{}));
  EXPECT_EQ(uuid[6] >> 4, 4) << "RFC 4122 version 4 bits";
  ImageBuilder unseeded(t.Join("b"));
  auto r2 = unseeded.FinishAndOpen();
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->summary().uuid, (std::array<uint8_t, 16>{}));
}

TEST(ErofsWriter, SuperblockChecksumCoversTheFirstBlock) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.File("f", "data").ok());
  ASSERT_TRUE(b.FinishAndOpen());
  std::string bytes = Bytes(b.path());
  erofs::SuperBlock sb;
  std::memcpy(&sb, bytes.data() + 1024, sizeof sb);
  EXPECT_TRUE(sb.feature_compat & erofs::kFeatureCompatSbChksum);
  EXPECT_EQ(sb.checksum,
            erofs::SuperBlockChecksum(reinterpret_cast<const uint8_t*>(bytes.data()), 4096));
  ExpectFsckAccepts(b.path());
  // The kernel checks the checksum at mount time (fsck.erofs 1.5 does not).
  const bool kernel = IsRoot() && KernelHasFilesystem("erofs");
  if (kernel) {
    ShOk("mkdir '" + t.Join("m") + "'");
    auto m = MountPoint::Mount(b.path(), t.Join("m"), "erofs", MS_RDONLY, "");
    EXPECT_TRUE(m.ok()) << m.status().ToString();
  }
  // A flipped byte anywhere in [1024, 4096) is caught, by us and the kernel.
  bytes[4000] ^= 1;
  WriteFile(b.path(), bytes);
  auto r = ErofsReader::Open(b.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_NE(r.status().message().find("checksum"), std::string::npos) << r.status().message();
  if (kernel) {
    auto m = MountPoint::Mount(b.path(), t.Join("m"), "erofs", MS_RDONLY, "");
    EXPECT_FALSE(m.ok()) << "the kernel mounted an image with a bad checksum";
  }
}

TEST(ErofsWriter, CompactInodesWhenFieldsFitExtendedOtherwise) {
  TempDir t;
  erofs::WriterOptions o;
  o.epoch = 1000;
  ImageBuilder b(t.Join("img"), o);
  ASSERT_TRUE(b.File("at_epoch", "x", 0644, 1000).ok());
  ASSERT_TRUE(b.File("other_mtime", "x", 0644, 1001).ok());
  LayerEntry nsec = Entry("nsec", EntryType::kRegular, 0644, 1000);
  nsec.mtime_nsec = 5;
  ASSERT_TRUE(b.Add(nsec, "x").ok());
  LayerEntry big_uid = Entry("big_uid", EntryType::kRegular, 0644, 1000);
  big_uid.uid = 65536;
  ASSERT_TRUE(b.Add(big_uid, "x").ok());
  LayerEntry max_compact = Entry("max_compact", EntryType::kRegular, 0644, 1000);
  max_compact.uid = max_compact.gid = 65535;
  ASSERT_TRUE(b.Add(max_compact, "x").ok());
  LayerEntry past = Entry("past", EntryType::kRegular, 0644, -86400);
  past.mtime_nsec = 123456789;
  ASSERT_TRUE(b.Add(past, "x").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_TRUE(MustLookup(*r, "at_epoch").compact);
  EXPECT_TRUE(MustLookup(*r, "max_compact").compact);
  EXPECT_EQ(MustLookup(*r, "max_compact").uid, 65535u);
  EXPECT_FALSE(MustLookup(*r, "other_mtime").compact);
  EXPECT_FALSE(MustLookup(*r, "nsec").compact);
  Inode big = MustLookup(*r, "big_uid");
  EXPECT_FALSE(big.compact);
  EXPECT_EQ(big.uid, 65536u);
  Inode p = MustLookup(*r, "past");
  EXPECT_EQ(p.mtime, -86400);
  EXPECT_EQ(p.mtime_nsec, 123456789u);
  EXPECT_EQ(MustLookup(*r, "at_epoch").mtime, 1000);
  // The root was never given: created with the epoch as mtime.
  EXPECT_TRUE(MustLookup(*r, "").compact);
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, ExtendedInodeWhenLinksExceedSixteenBits) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.File("f", "shared").ok());
  ASSERT_TRUE(b.Dir("links").ok());
  for (int i = 0; i < 65535; ++i) ASSERT_TRUE(b.Link("links/" + std::to_string(i), "f").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode f = MustLookup(*r, "f");
  EXPECT_EQ(f.nlink, 65536u);
  EXPECT_FALSE(f.compact);
  EXPECT_EQ(MustLookup(*r, "links/65534").nid, f.nid);
}

TEST(ErofsWriter, FileDataIsBlockAlignedAndContiguous) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  std::string data(3 * 4096 + 100, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(b.File("first", "tiny").ok());
  ASSERT_TRUE(b.File("f", data).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode f = MustLookup(*r, "f");
  EXPECT_EQ(f.data_layout, erofs::kFlatInline);
  EXPECT_EQ(ReadAll(*r, f), data);
  // The three whole blocks sit at raw_u, block-aligned, in order.
  const std::string image = Bytes(b.path());
  ASSERT_GE(image.size(), (f.raw_u + 3) * 4096ull);
  EXPECT_EQ(image.substr(f.raw_u * 4096ull, 3 * 4096), data.substr(0, 3 * 4096));
}

TEST(ErofsWriter, TailsGoInlineWhenTheyFitAndIntoABlockOtherwise) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.File("small", std::string(100, 's')).ok());
  ASSERT_TRUE(b.File("large_tail", std::string(4096 + 4000, 'l')).ok());
  ASSERT_TRUE(b.File("whole_blocks", std::string(8192, 'w')).ok());
  LayerEntry fat = Entry("fat_xattrs", EntryType::kRegular);
  fat.xattrs = {{"user.big", std::string(3000, 'v')}};
  ASSERT_TRUE(b.Add(fat, std::string(4000, 'f')).ok());
  LayerEntry almost = Entry("almost_full", EntryType::kRegular);
  ASSERT_TRUE(b.Add(almost, std::string(4096 - 64, 'a')).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(MustLookup(*r, "small").data_layout, erofs::kFlatInline);
  EXPECT_EQ(MustLookup(*r, "large_tail").data_layout, erofs::kFlatInline);
  EXPECT_EQ(MustLookup(*r, "whole_blocks").data_layout, erofs::kFlatPlain);
  EXPECT_EQ(MustLookup(*r, "fat_xattrs").data_layout, erofs::kFlatPlain);
  EXPECT_EQ(MustLookup(*r, "almost_full").data_layout, erofs::kFlatInline);
  for (const char* name : {"small", "large_tail", "whole_blocks", "fat_xattrs", "almost_full"}) {
    Inode i = MustLookup(*r, name);
    std::string content = ReadAll(*r, i);
    EXPECT_EQ(content.size(), i.size) << name;
    EXPECT_EQ(content.find_first_not_of(content[0]), std::string::npos) << name;
    // An inline tail never crosses a block boundary (the reader checks it
    // too; this states the rule).
    if (i.data_layout == erofs::kFlatInline) {
      const uint64_t at = i.offset + i.inode_size() + i.xattr_size;
      EXPECT_LE(at % 4096 + i.size % 4096, 4096u) << name;
    }
  }
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, TailsSpillToAScratchFileBeyondTheMemoryLimit) {
  TempDir t;
  erofs::WriterOptions o;
  o.tail_memory_limit = 1000;
  o.scratch_dir = t.path();
  ImageBuilder b(t.Join("img"), o);
  std::map<std::string, std::string> files;
  for (int i = 0; i < 2000; ++i) {
    const std::string name = StrCat("f", i);  // not "f" + …: GCC 12 -O3 warns falsely (-Wrestrict)
    files[name] = std::string(1 + i % 4000, static_cast<char>('a' + i % 26)) + name;
    ASSERT_TRUE(b.File(name, files[name]).ok());
  }
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  for (auto& [name, content] : files) ASSERT_EQ(ReadAll(*r, MustLookup(*r, name)), content) << name;
  // The scratch file was unlinked: nothing is left beside the image.
  EXPECT_EQ(ShOk("ls -A '" + t.path() + "'"), "img\n");
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, AnUnusableScratchDirectoryIsAnError) {
  TempDir t;
  erofs::WriterOptions o;
  o.tail_memory_limit = 10;
  o.scratch_dir = t.Join("missing");
  ImageBuilder b(t.Join("img"), o);
  Status s = b.File("a", std::string(20, 'x'));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing"), std::string::npos) << s.message();
}

TEST(ErofsWriter, DirectoryOfHundredThousandEntriesSpansBlocksInByteOrder) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.Dir("wide").ok());
  std::set<std::string> names;
  for (int i = 0; i < 100000; ++i) {
    // Names of 1 to 255 bytes, so that block boundaries fall everywhere.
    std::string name = std::to_string(i * 7919 % 100000) + std::string(i % 250, 'n');
    names.insert(name);
    ASSERT_TRUE(b.Add(Entry("wide/" + name, EntryType::kFifo)).ok());
  }
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode wide = MustLookup(*r, "wide");
  EXPECT_GT(wide.size, 1000u * 4096);
  auto entries = r->ReadDirectory(wide);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), names.size() + 2);
  std::vector<std::string> got;
  for (auto& e : *entries)
    if (e.name != "." && e.name != "..") got.push_back(e.name);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), names.begin()));
  // Lookups binary-search; spot-check both ends and the middle.
  EXPECT_TRUE(r->Lookup("wide/" + *names.begin()).ok());
  EXPECT_TRUE(r->Lookup("wide/" + *names.rbegin()).ok());
  EXPECT_TRUE(r->Lookup("wide/" + got[got.size() / 2]).ok());
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, NamesSortByteWiseAroundTheDotEntries) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  const std::vector<std::string> names = {
      "\xff\xfe", "-", "!", ".a", "..b", "a", "Z", "\xc3\xa9t\xc3\xa9", std::string(255, 'x'), "~"};
  for (const auto& n : names) ASSERT_TRUE(b.File(n, n).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  auto entries = r->ReadDirectory(MustLookup(*r, ""));
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  std::vector<std::string> got;
  for (auto& e : *entries) got.push_back(e.name);
  std::vector<std::string> want = names;
  want.push_back(".");
  want.push_back("..");
  std::sort(want.begin(), want.end());  // unsigned byte order
  EXPECT_EQ(got, want);
  for (const auto& n : names) EXPECT_EQ(ReadAll(*r, MustLookup(*r, n)), n);
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, HardlinksShareOneInode) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.Dir("a").ok());
  ASSERT_TRUE(b.Dir("b").ok());
  ASSERT_TRUE(b.File("a/orig", "content").ok());
  ASSERT_TRUE(b.Link("a/same_dir", "a/orig").ok());
  ASSERT_TRUE(b.Link("b/other_dir", "a/orig").ok());
  ASSERT_TRUE(b.Add(Entry("a/fifo", EntryType::kFifo)).ok());
  ASSERT_TRUE(b.Link("b/fifo", "a/fifo").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode orig = MustLookup(*r, "a/orig");
  EXPECT_EQ(orig.nlink, 3u);
  EXPECT_EQ(MustLookup(*r, "a/same_dir").nid, orig.nid);
  EXPECT_EQ(MustLookup(*r, "b/other_dir").nid, orig.nid);
  EXPECT_EQ(MustLookup(*r, "b/fifo").nid, MustLookup(*r, "a/fifo").nid);
  EXPECT_EQ(MustLookup(*r, "a/fifo").nlink, 2u);
  EXPECT_EQ(r->summary().inodes, 5u);  // root, a, b, orig, fifo
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, LaterEntriesReplaceEarlierOnes) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.File("file", "first").ok());
  ASSERT_TRUE(b.File("file", "second").ok());
  ASSERT_TRUE(b.Dir("dir_kept", 0755).ok());
  ASSERT_TRUE(b.File("dir_kept/child", "c").ok());
  ASSERT_TRUE(
      b.Dir("dir_kept", 0700, 42).ok());  // a directory replaced by a directory keeps its children
  ASSERT_TRUE(b.Dir("dir_lost").ok());
  ASSERT_TRUE(b.Dir("dir_lost/sub").ok());
  ASSERT_TRUE(b.File("dir_lost/sub/x", "x").ok());
  ASSERT_TRUE(b.File("dir_lost", "now a file").ok());  // … and loses them to anything else
  ASSERT_TRUE(b.File("became_dir", "f").ok());
  ASSERT_TRUE(b.Dir("became_dir").ok());
  ASSERT_TRUE(b.File("linked", "old").ok());
  ASSERT_TRUE(b.Link("keeps_old", "linked").ok());
  ASSERT_TRUE(b.File("linked", "new").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(ReadAll(*r, MustLookup(*r, "file")), "second");
  Inode kept = MustLookup(*r, "dir_kept");
  EXPECT_EQ(kept.mode & 07777, 0700u);
  EXPECT_EQ(kept.mtime, 42);
  EXPECT_TRUE(r->Lookup("dir_kept/child").ok());
  EXPECT_EQ(ReadAll(*r, MustLookup(*r, "dir_lost")), "now a file");
  EXPECT_EQ(r->Lookup("dir_lost/sub/x").status().code(), Code::kNotFound);
  EXPECT_TRUE(MustLookup(*r, "became_dir").is_dir());
  EXPECT_EQ(ReadAll(*r, MustLookup(*r, "keeps_old")), "old");
  EXPECT_EQ(MustLookup(*r, "keeps_old").nlink, 1u);
  EXPECT_EQ(ReadAll(*r, MustLookup(*r, "linked")), "new");
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, MissingParentsAreCreatedRootOwned0755AtTheEpoch) {
  TempDir t;
  erofs::WriterOptions o;
  o.epoch = 777;
  ImageBuilder b(t.Join("img"), o);
  LayerEntry f = Entry("p/q/r", EntryType::kRegular, 0600, 5);
  f.uid = f.gid = 1000;
  ASSERT_TRUE(b.Add(f, "deep").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  for (const char* dir : {"p", "p/q"}) {
    Inode d = MustLookup(*r, dir);
    EXPECT_TRUE(d.is_dir()) << dir;
    EXPECT_EQ(d.mode & 07777, 0755u) << dir;
    EXPECT_EQ(d.uid, 0u) << dir;
    EXPECT_EQ(d.mtime, 777) << dir;
  }
  EXPECT_EQ(MustLookup(*r, "p/q/r").uid, 1000u);
  EXPECT_EQ(MustLookup(*r, "p/q").nlink, 2u);
  EXPECT_EQ(MustLookup(*r, "p").nlink, 3u);
}

TEST(ErofsWriter, RepeatedXattrValuesAreSharedOthersInline) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  const std::string cap(20, '\x07');
  for (int i = 0; i < 5; ++i) {
    LayerEntry e = Entry("cap" + std::to_string(i), EntryType::kRegular);
    e.xattrs = {{"security.capability", cap}, {"user.own", "value" + std::to_string(i)}};
    ASSERT_TRUE(b.Add(e, "x").ok());
  }
  LayerEntry twice = Entry("twice_a", EntryType::kRegular);
  twice.xattrs = {{"trusted.pair", "v"}};
  ASSERT_TRUE(b.Add(twice, "x").ok());
  twice.path = "twice_b";
  ASSERT_TRUE(b.Add(twice, "x").ok());
  LayerEntry acl = Entry("acl", EntryType::kDirectory, 0755);
  acl.xattrs = {{"system.posix_acl_access", std::string("\x02\x00\x00\x00", 4)},
                {"system.posix_acl_default", std::string("\x02\x00\x00\x00", 4)}};
  ASSERT_TRUE(b.Add(acl).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_NE(r->summary().xattr_blkaddr, 0u);
  for (int i = 0; i < 5; ++i) {
    Inode inode = MustLookup(*r, "cap" + std::to_string(i));
    auto x = r->ReadXattrs(inode);
    ASSERT_TRUE(x.ok()) << x.status().ToString();
    erofs::Xattrs want = {{"security.capability", cap}, {"user.own", "value" + std::to_string(i)}};
    erofs::Xattrs got = *x;
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want);
    // Shared: the area holds header + one id + the inline user.own entry.
    EXPECT_EQ(inode.xattr_size, 12u + 4u + erofs::XattrAlign(4 + 3 + 6)) << i;
  }
  Inode a = MustLookup(*r, "twice_a");
  EXPECT_EQ(a.xattr_size, 12u + erofs::XattrAlign(4 + 4 + 1)) << "two users: inline";
  auto acls = r->ReadXattrs(MustLookup(*r, "acl"));
  ASSERT_TRUE(acls.ok());
  EXPECT_EQ(acls->size(), 2u);
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, WhiteoutsAndOpaqueDirectoriesTakeOverlayForm) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.Dir("d").ok());
  LayerEntry wh = Entry("d/gone", EntryType::kCharDevice, 0);
  ASSERT_TRUE(wh.IsWhiteout());
  ASSERT_TRUE(b.Add(wh).ok());
  ASSERT_TRUE(b.Add(Entry("d", EntryType::kOpaqueMarker)).ok());
  ASSERT_TRUE(b.Add(Entry("new/opaque", EntryType::kOpaqueMarker)).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode gone = MustLookup(*r, "d/gone");
  EXPECT_TRUE(S_ISCHR(gone.mode));
  EXPECT_EQ(gone.rdev_major, 0u);
  EXPECT_EQ(gone.rdev_minor, 0u);
  for (const char* dir : {"d", "new/opaque"}) {
    auto x = r->ReadXattrs(MustLookup(*r, dir));
    ASSERT_TRUE(x.ok());
    EXPECT_EQ(*x, (erofs::Xattrs{{"trusted.overlay.opaque", "y"}})) << dir;
  }
  ExpectFsckAccepts(b.path());
}

TEST(ErofsWriter, DevicesFifosSocketsAndSymlinks) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  LayerEntry chr = Entry("chr", EntryType::kCharDevice, 0600);
  chr.rdev_major = 4095;
  chr.rdev_minor = 1048575;
  ASSERT_TRUE(b.Add(chr).ok());
  LayerEntry blk = Entry("blk", EntryType::kBlockDevice, 0660);
  blk.rdev_major = 8;
  blk.rdev_minor = 300;
  ASSERT_TRUE(b.Add(blk).ok());
  ASSERT_TRUE(b.Add(Entry("fifo", EntryType::kFifo)).ok());
  ASSERT_TRUE(b.Add(Entry("sock", EntryType::kSocket, 0755)).ok());
  ASSERT_TRUE(b.Symlink("abs", "/etc/passwd").ok());
  ASSERT_TRUE(b.Symlink("dangling", "no/such/thing").ok());
  ASSERT_TRUE(b.Symlink("long", std::string(4095, 'x')).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  Inode c = MustLookup(*r, "chr");
  EXPECT_TRUE(S_ISCHR(c.mode));
  EXPECT_EQ(c.rdev_major, 4095u);
  EXPECT_EQ(c.rdev_minor, 1048575u);
  Inode bl = MustLookup(*r, "blk");
  EXPECT_TRUE(S_ISBLK(bl.mode));
  EXPECT_EQ(bl.rdev_minor, 300u);
  EXPECT_TRUE(S_ISFIFO(MustLookup(*r, "fifo").mode));
  EXPECT_TRUE(S_ISSOCK(MustLookup(*r, "sock").mode));
  EXPECT_EQ(*r->ReadSymlink(MustLookup(*r, "abs")), "/etc/passwd");
  EXPECT_EQ(*r->ReadSymlink(MustLookup(*r, "dangling")), "no/such/thing");
  Inode l = MustLookup(*r, "long");
  EXPECT_EQ(l.data_layout, erofs::kFlatPlain) << "4095 bytes cannot be inline after an inode";
  EXPECT_EQ(*r->ReadSymlink(l), std::string(4095, 'x'));
  ExpectFsckAccepts(b.path());
}

struct BadEntryCase {
  const char* what;
  std::function<Status(ImageBuilder&)> add;
  const char* message;
};

TEST(ErofsWriter, RefusesWhatTheImageCannotHoldNamingTheEntry) {
  LayerEntry dev = Entry("dev", EntryType::kCharDevice);
  dev.rdev_major = 4096;
  LayerEntry bad_xattr = Entry("x", EntryType::kRegular);
  bad_xattr.xattrs = {{"system.nfs4_acl", "v"}};
  LayerEntry big_value = Entry("v", EntryType::kRegular);
  big_value.xattrs = {{"user.v", std::string(65536, 'v')}};
  LayerEntry short_data = Entry("short", EntryType::kRegular);
  const std::vector<BadEntryCase> cases = {
      {"hardlink to missing", [](ImageBuilder& b) { return b.Link("h", "nothing"); }, "\"h\""},
      {"hardlink to dir",
       [](ImageBuilder& b) {
         EXPECT_TRUE(b.Dir("d").ok());
         return b.Link("h", "d");
       },
       "directory"},
      {"parent is a file",
       [](ImageBuilder& b) {
         EXPECT_TRUE(b.File("f", "x").ok());
         return b.File("f/child", "y");
       },
       "f/child"},
      {"root not a dir", [](ImageBuilder& b) { return b.File("", "x"); }, "root"},
      {"leading slash", [](ImageBuilder& b) { return b.File("/a", "x"); }, "normalised"},
      {"dot component", [](ImageBuilder& b) { return b.File("a/./b", "x"); }, "normalised"},
      {"dotdot component", [](ImageBuilder& b) { return b.File("a/../b", "x"); }, "normalised"},
      {"empty component", [](ImageBuilder& b) { return b.File("a//b", "x"); }, "normalised"},
      {"name too long", [](ImageBuilder& b) { return b.File(std::string(256, 'n'), "x"); },
       "normalised"},
      {"empty symlink", [](ImageBuilder& b) { return b.Symlink("s", ""); }, "empty"},
      {"long symlink", [](ImageBuilder& b) { return b.Symlink("s", std::string(4096, 't')); },
       "4096"},
      {"device number", [dev](ImageBuilder& b) { return b.Add(dev); }, "4096:0"},
      {"xattr namespace", [bad_xattr](ImageBuilder& b) { return b.Add(bad_xattr, "x"); },
       "system.nfs4_acl"},
      {"xattr value", [big_value](ImageBuilder& b) { return b.Add(big_value, "x"); }, "65536"},
      {"short data",
       [short_data](ImageBuilder& b) {
         LayerEntry e = short_data;
         e.size = 10;
         StringSource five("12345");
         return b.writer()->Add(e, &five);
       },
       "after 5 of 10 bytes"},
  };
  for (const auto& c : cases) {
    TempDir t;
    ImageBuilder b(t.Join("img"));
    Status s = c.add(b);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << c.what << ": " << s.ToString();
    EXPECT_NE(s.message().find(c.message), std::string::npos) << c.what << ": " << s.message();
  }
}

TEST(ErofsWriter, ErrorsAreSticky) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  Status first = b.Link("h", "missing");
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(b.File("fine", "x"), first);
  auto info = b.Finish();
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status(), first);
}

// Records every block it is shown, and checks it against the file later.
class RecordingObserver : public BlockObserver {
 public:
  explicit RecordingObserver(uint32_t block_size) : bs_(block_size) {}
  void OnBlocks(uint64_t first, const uint8_t* data, size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      auto [it, inserted] = blocks_.emplace(
          first + i, std::string(reinterpret_cast<const char*>(data) + i * bs_, bs_));
      if (!inserted) ++duplicates_;
    }
    calls_.push_back(first);
  }
  void ExpectMatches(const std::string& image) {
    EXPECT_EQ(duplicates_, 0u);
    ASSERT_EQ(image.size() % bs_, 0u);
    ASSERT_EQ(blocks_.size(), image.size() / bs_);
    for (auto& [index, bytes] : blocks_) {
      ASSERT_LT(index * bs_, image.size());
      EXPECT_EQ(bytes, image.substr(index * bs_, bs_)) << "block " << index;
    }
    ASSERT_FALSE(calls_.empty());
    EXPECT_EQ(calls_.back(), 0u) << "the superblock's block comes last";
  }

 private:
  uint32_t bs_;
  std::map<uint64_t, std::string> blocks_;
  std::vector<uint64_t> calls_;  // first block of each call
  size_t duplicates_ = 0;
};

TEST(ErofsWriter, EveryBlockReachesTheObserverExactlyOnce) {
  TempDir t;
  RecordingObserver observer(4096);
  erofs::WriterOptions o;
  o.observer = &observer;
  ImageBuilder b(t.Join("img"), o);
  ASSERT_TRUE(b.Dir("d").ok());
  for (int i = 0; i < 500; ++i)
    ASSERT_TRUE(b.File("d/f" + std::to_string(i), std::string(i * 31, 'q')).ok());
  ASSERT_TRUE(b.File("big", std::string(3 << 20, 'b')).ok());
  LayerEntry x = Entry("x", EntryType::kRegular);
  x.xattrs = {{"user.a", "1"}};
  for (int i = 0; i < 4; ++i) {
    x.path = "x" + std::to_string(i);
    ASSERT_TRUE(b.Add(x, "x").ok());
  }
  ASSERT_TRUE(b.Finish().ok());
  observer.ExpectMatches(Bytes(b.path()));
}

// Tar-index mode: a fake "tar" (any bytes) and entries that point into it.
TEST(ErofsWriterTarIndex, FilesAreChunkIndexesIntoTheEmbeddedTar) {
  TempDir t;
  RecordingObserver observer(512);
  erofs::WriterOptions o;
  o.mode = erofs::Mode::kTarIndex;
  o.observer = &observer;
  ImageBuilder b(t.Join("img"), o);
  std::string tar(20 * 512 + 1000000, '\0');
  for (size_t i = 0; i < tar.size(); ++i) tar[i] = static_cast<char>(i * 13 + i / 512);
  // Feed the tar in odd pieces, as a reader would.
  for (size_t pos = 0; pos < tar.size();) {
    size_t n = std::min<size_t>(tar.size() - pos, 777 + pos % 5000);
    ASSERT_TRUE(b.writer()->AddTarBytes(tar.data() + pos, n).ok());
    pos += n;
  }
  auto file = [&](const std::string& path, uint64_t offset, uint64_t size) {
    LayerEntry e = Entry(path, EntryType::kRegular);
    e.data_offset = offset;
    e.size = size;
    return b.writer()->Add(e, nullptr);
  };
  ASSERT_TRUE(file("a", 512, 100).ok());
  ASSERT_TRUE(file("dir/b", 1024, 700000).ok());
  ASSERT_TRUE(file("empty", 2048, 0).ok());
  ASSERT_TRUE(b.Symlink("link", std::string(1500, 'l')).ok());  // longer than a 512-byte block
  ASSERT_TRUE(b.Dir("wide").ok());
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(file("wide/" + std::string(200, 'w') + std::to_string(i), 0, 512).ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(b.info().block_size, 512u);
  EXPECT_EQ(b.info().tar_offset, 4096u);
  EXPECT_EQ(b.info().tar_size, tar.size());
  const std::string image = Bytes(b.path());
  EXPECT_EQ(image.substr(4096, tar.size()), tar) << "the tar is embedded as it is";
  EXPECT_EQ(r->summary().feature_incompat,
            erofs::kFeatureIncompatChunkedFile | erofs::kFeatureIncompatDeviceTable);
  ASSERT_EQ(r->summary().devices.size(), 1u);
  EXPECT_EQ(r->summary().devices[0].uniaddr, 8u);
  Inode a = MustLookup(*r, "a");
  EXPECT_EQ(a.data_layout, erofs::kChunkBased);
  EXPECT_EQ(ReadAll(*r, a), tar.substr(512, 100));
  EXPECT_EQ(ReadAll(*r, MustLookup(*r, "dir/b")), tar.substr(1024, 700000));
  EXPECT_EQ(MustLookup(*r, "empty").size, 0u);
  EXPECT_EQ(*r->ReadSymlink(MustLookup(*r, "link")), std::string(1500, 'l'));
  auto wide = r->ReadDirectory(MustLookup(*r, "wide"));
  ASSERT_TRUE(wide.ok()) << wide.status().ToString();
  EXPECT_EQ(wide->size(), 102u);
  observer.ExpectMatches(image);
}

TEST(ErofsWriterTarIndex, DataBeyondTheTarIsAnError) {
  TempDir t;
  erofs::WriterOptions o;
  o.mode = erofs::Mode::kTarIndex;
  ImageBuilder b(t.Join("img"), o);
  std::string tar(4096, 't');
  ASSERT_TRUE(b.writer()->AddTarBytes(tar.data(), tar.size()).ok());
  LayerEntry e = Entry("late", EntryType::kRegular);
  e.data_offset = 3584;
  e.size = 1000;
  e.header_offset = 3072;
  ASSERT_TRUE(b.writer()->Add(e, nullptr).ok());
  auto info = b.Finish();
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("\"late\" at offset 3072"), std::string::npos)
      << info.status().message();
  LayerEntry odd = Entry("odd", EntryType::kRegular);
  odd.data_offset = 100;
  odd.size = 1;
  ImageBuilder b2(t.Join("img2"), o);
  EXPECT_EQ(b2.writer()->Add(odd, nullptr).code(), Code::kInvalidArgument);
}

TEST(ErofsWriterTarIndex, AddTarBytesOutsideTarIndexModeIsAnError) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  EXPECT_EQ(b.writer()->AddTarBytes("x", 1).code(), Code::kFailedPrecondition);
}

}  // namespace
}  // namespace evs::testing
