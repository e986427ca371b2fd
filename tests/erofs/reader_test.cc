// ErofsReader against images from another implementation: mkfs.erofs
// (erofs-utils) builds images of a tree, and the reader must see that tree.
// And the directory walk: AddDirectory then the reader must see the source.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "evs/erofs/dir_source.h"
#include "image_builder.h"

namespace evs::testing {
namespace {

// A tree any user can make: files of many sizes, a directory spanning
// blocks, symlinks, hardlinks, UTF-8 names, user xattrs (if the filesystem
// takes them).
std::string MakePlainTree(const TempDir& t) {
  const std::string src = t.Join("src");
  ShOk("mkdir -p '" + src + "/wide' '" + src + "/sub/deeper'");
  uint32_t seed = 10;
  for (uint64_t size : {0, 1, 100, 4095, 4096, 4097, 12289, 70000})
    WriteRandomFile(src + "/f" + std::to_string(size), size, seed++);
  for (int i = 0; i < 1500; ++i)
    WriteFile(src + "/wide/entry" + std::to_string(i) + std::string(i % 40, 'z'), "");
  WriteFile(src + "/sub/deeper/\xc3\xa9t\xc3\xa9", "utf-8");
  ShOk("cd '" + src +
       "' && ln -s f100 rel && ln -s /nowhere abs && ln f4097 sub/hard && chmod 4755 f1");
  ::setxattr((src + "/f100").c_str(), "user.note", "hello", 5, 0);
  ShOk("touch -h -d @1234567890 '" + src + "/rel' && touch -d @-5000 '" + src + "/f0'");
  return src;
}

TEST(ErofsReader, ReadsMkfsImagesAsTheirSourceTree) {
  EVS_REQUIRE_PROGRAM("mkfs.erofs");
  TempDir t;
  const std::string src = MakePlainTree(t);
  const TreeSnapshot expected = SnapshotTree(src);
  // Inline tails (default), no inlining, chunked files (4-byte block maps).
  for (const std::string flags : {"", "-Enoinline_data", "--chunksize=8192", "-x1"}) {
    ShOk("rm -f '" + t.Join("img") + "' && mkfs.erofs " + flags + " '" + t.Join("img") + "' '" +
         src + "' >/dev/null");
    auto reader = erofs::ErofsReader::Open(t.Join("img"));
    ASSERT_TRUE(reader.ok()) << flags << ": " << reader.status().ToString();
    EXPECT_EQ(DiffSnapshots(expected, SnapshotWithReader(**reader)), "") << "mkfs.erofs " << flags;
  }
}

TEST(ErofsReader, LookupFollowsNoSymlinksAndNamesWhatIsMissing) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  ASSERT_TRUE(b.Dir("d").ok());
  ASSERT_TRUE(b.File("d/f", "x").ok());
  ASSERT_TRUE(b.Symlink("link", "d").ok());
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->Lookup("/d/f").ok());
  EXPECT_TRUE(r->Lookup("d//f").ok());
  EXPECT_TRUE(r->Lookup("/").ok());
  auto missing = r->Lookup("d/nothing");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("d/nothing"), std::string::npos);
  EXPECT_EQ(r->Lookup("link/f").status().code(), Code::kNotFound);
  EXPECT_EQ(r->Lookup("d/f/x").status().code(), Code::kNotFound);
}

TEST(ErofsReader, RefusesFilesThatAreNotEROFS) {
  TempDir t;
  WriteFile(t.Join("zeros"), std::string(8192, '\0'));
  auto r = erofs::ErofsReader::Open(t.Join("zeros"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_NE(r.status().message().find("zeros"), std::string::npos);
  EXPECT_EQ(erofs::ErofsReader::Open(t.Join("absent")).status().code(), Code::kNotFound);
}

TEST(ErofsReader, ModeStringMatchesLs) {
  EXPECT_EQ(erofs::ModeString(S_IFDIR | 0755), "drwxr-xr-x");
  EXPECT_EQ(erofs::ModeString(S_IFREG | 04755), "-rwsr-xr-x");
  EXPECT_EQ(erofs::ModeString(S_IFREG | 02644), "-rw-r-Sr--");
  EXPECT_EQ(erofs::ModeString(S_IFDIR | 01777), "drwxrwxrwt");
  EXPECT_EQ(erofs::ModeString(S_IFCHR), "c---------");
}

TEST(DirSource, ImageHoldsTheSourceTree) {
  TempDir t;
  const std::string src = MakePlainTree(t);
  ImageBuilder b(t.Join("img"));
  Status s = erofs::AddDirectory(src, b.writer());
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(DiffSnapshots(SnapshotTree(src), SnapshotWithReader(*r)), "");
  EXPECT_EQ(r->Lookup("sub/hard")->nid, r->Lookup("f4097")->nid);
  if (HaveProgram("fsck.erofs")) ShOk("fsck.erofs '" + b.path() + "'");
}

TEST(DirSource, SameTreeGivesSameBytes) {
  TempDir t;
  const std::string src = MakePlainTree(t);
  for (const char* name : {"a", "b"}) {
    ImageBuilder b(t.Join(name));
    ASSERT_TRUE(erofs::AddDirectory(src, b.writer()).ok());
    ASSERT_TRUE(b.Finish().ok());
  }
  EXPECT_EQ(ReadFileOrDie(t.Join("a")), ReadFileOrDie(t.Join("b")));
}

TEST(DirSource, OverlayBookkeepingXattrsAreDroppedOpaqueKept) {
  TempDir t;
  const std::string src = t.Join("upper");
  ShOk("mkdir -p '" + src + "/opaque' '" + src + "/moved'");
  WriteFile(src + "/file", "f");
  auto set = [](const std::string& path, const char* name, const std::string& value) {
    return ::setxattr(path.c_str(), name, value.data(), value.size(), 0) == 0;
  };
  // user.overlay.* is what overlayfs writes with the userxattr option; the
  // same rules apply to trusted.overlay.* (root only).
  if (!set(src + "/opaque", "user.overlay.opaque", "y"))
    GTEST_SKIP() << "no user xattrs on " << t.path();
  ASSERT_TRUE(set(src + "/opaque", "user.overlay.origin", "handle"));
  ASSERT_TRUE(set(src + "/file", "user.overlay.impure", "y"));
  ASSERT_TRUE(set(src + "/file", "user.kept", "1"));
  ImageBuilder b(t.Join("img"));
  Status s = erofs::AddDirectory(src, b.writer());
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto r = b.FinishAndOpen();
  ASSERT_TRUE(r);
  EXPECT_EQ(*r->ReadXattrs(*r->Lookup("opaque")), (erofs::Xattrs{{"user.overlay.opaque", "y"}}));
  EXPECT_EQ(*r->ReadXattrs(*r->Lookup("file")), (erofs::Xattrs{{"user.kept", "1"}}));

  // A metacopy or redirect only means something over the lower layers.
  ASSERT_TRUE(set(src + "/moved", "user.overlay.redirect", "/elsewhere"));
  ImageBuilder b2(t.Join("img2"));
  s = erofs::AddDirectory(src, b2.writer());
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("moved"), std::string::npos) << s.message();
}

TEST(DirSource, AFileThatShrinksDuringTheWalkIsAnError) {
  // The walk takes a file's size from stat and the writer reads exactly that
  // much; a file truncated in between must not give a short file silently.
  TempDir t;
  const std::string src = t.Join("src");
  WriteFile(src + "/f", "0123456789");
  ImageBuilder b(t.Join("img"));
  LayerEntry e = Entry("f", EntryType::kRegular);
  e.size = 20;  // what stat said a moment ago
  auto fd = OpenFile(src + "/f", O_RDONLY);
  ASSERT_TRUE(fd.ok());
  FdSource data(fd->get(), src + "/f");
  Status s = b.writer()->Add(e, &data);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("after 10 of 20 bytes"), std::string::npos) << s.message();
}

TEST(DirSource, MissingDirectoryIsNotFound) {
  TempDir t;
  ImageBuilder b(t.Join("img"));
  Status s = erofs::AddDirectory(t.Join("nope"), b.writer());
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_NE(s.message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace evs::testing
