// User-space verification through FUSE (issue 3, "What must be shown" 2 and
// 3): a VerifiedBlockFile serves exactly the layer's bytes, fails reads of
// tampered blocks with EIO and nothing else, and an EROFS image mounted on
// it shows the same tree as a plain mount.
#include "evs/verity/verified_block_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::ShOk;
using evs::testing::TempDir;
using evs::testing::WriteFile;
using testing::DescribeTree;
using testing::FindUnique;
using testing::FlipByte;
using testing::FormatExisting;
using testing::FormattedImage;
using testing::MakeFormattedImage;

#define REQUIRE_FUSE()                                                              \
  do {                                                                              \
    EVS_REQUIRE_ROOT();                                                             \
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse"; \
  } while (0)

#define REQUIRE_EROFS()                                                                    \
  do {                                                                                     \
    REQUIRE_FUSE();                                                                        \
    if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "kernel lacks erofs"; \
    EVS_REQUIRE_PROGRAM("mkfs.erofs");                                                     \
  } while (0)

// Reads `n` bytes at `offset`; returns the errno of a failed read, 0 if all
// bytes came back (then into *out).
int PreadErrno(const std::string& path, uint64_t offset, size_t n, std::string* out = nullptr) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  std::string buf(n, '\0');
  ssize_t got = ::pread(fd.get(), buf.data(), n, static_cast<off_t>(offset));
  if (got < 0) return errno;
  buf.resize(static_cast<size_t>(got));
  if (out) *out = buf;
  return static_cast<size_t>(got) == n ? 0 : -1;
}

std::unique_ptr<VerifiedBlockFile> MountFile(const FormattedImage& f, const std::string& at,
                                             VerifiedBlockFileOptions options = {}) {
  WriteFile(at, "");
  auto source = FileBlockSource::Open(f.path, "layer sha256:test");
  EXPECT_TRUE(source.ok()) << source.status().ToString();
  if (!source.ok()) return nullptr;
  auto file = VerifiedBlockFile::Mount(std::move(*source), f.descriptor.hash_offset,
                                       f.descriptor.root_digest, at, options);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  return file.ok() ? std::move(*file) : nullptr;
}

TEST(VerifiedBlockFile, ServesTheDataRegionByteForByte) {
  REQUIRE_FUSE();
  TempDir dir;
  for (uint32_t dbs : {4096u, 512u}) {
    FormattedImage f = MakeFormattedImage(dir.Join(StrCat("layer", dbs)), 3000, dbs);
    std::string expected = ReadFileOrDie(f.path).substr(0, f.descriptor.hash_offset);
    for (bool direct_io : {true, false}) {
      VerifiedBlockFileOptions options;
      options.direct_io = direct_io;
      auto file = MountFile(f, dir.Join("verified"), options);
      ASSERT_NE(file, nullptr);
      struct stat st;
      ASSERT_EQ(::stat(file->path().c_str(), &st), 0);
      EXPECT_TRUE(S_ISREG(st.st_mode));
      EXPECT_EQ(static_cast<uint64_t>(st.st_size), f.descriptor.hash_offset);
      EXPECT_TRUE(ReadFileOrDie(file->path()) == expected);
      // An unaligned read in the middle of a block.
      std::string part;
      EXPECT_EQ(PreadErrno(file->path(), 1000 * dbs + 77, 5000, &part), 0);
      EXPECT_EQ(part, expected.substr(1000 * dbs + 77, 5000));
      EXPECT_EQ(file->stats().blocks_verified, 3000u);
      EXPECT_EQ(file->stats().failures, 0u);
      EXPECT_TRUE(file->Unmount().ok());
      EXPECT_FALSE(IsMountPoint(dir.Join("verified")));
    }
  }
}

TEST(VerifiedBlockFile, FlippedDataBlockFailsOnlyReadsOfThatBlock) {
  REQUIRE_FUSE();
  TempDir dir;
  FormattedImage f = MakeFormattedImage(dir.Join("layer"), 3000);
  FlipByte(f.path, 1234 * 4096 + 100);
  auto file = MountFile(f, dir.Join("verified"));
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(PreadErrno(file->path(), 1234 * 4096, 4096), EIO);
  EXPECT_EQ(PreadErrno(file->path(), 1234 * 4096 + 4000, 10), EIO);
  EXPECT_EQ(PreadErrno(file->path(), 1233 * 4096, 4096), 0);
  EXPECT_EQ(PreadErrno(file->path(), 1235 * 4096, 4096), 0);
  EXPECT_EQ(PreadErrno(file->path(), 0, 4096), 0);
  // Still failing on a second try: a bad block is never marked verified.
  EXPECT_EQ(PreadErrno(file->path(), 1234 * 4096, 4096), EIO);
  EXPECT_GE(file->stats().failures, 3u);
}

TEST(VerifiedBlockFile, FlippedHashBlocksFailTheBlocksTheyCover) {
  REQUIRE_FUSE();
  TempDir dir;
  // 20000 blocks: 3 levels; level-0 block k covers data 128k..128k+127,
  // level-1 block j covers data 16384j..16384j+16383.
  FormattedImage f = MakeFormattedImage(dir.Join("layer"), 20000);
  ASSERT_EQ(f.layout.levels(), 3u);
  FlipByte(f.path, (f.layout.level_start[0] + 3) * 4096 + 17);  // level 0, block 3
  FlipByte(f.path, (f.layout.level_start[1] + 1) * 4096 + 9);   // level 1, block 1
  auto file = MountFile(f, dir.Join("verified"));
  ASSERT_NE(file, nullptr);
  const std::string& p = file->path();
  EXPECT_EQ(PreadErrno(p, 3 * 128 * 4096, 4096), EIO);
  EXPECT_EQ(PreadErrno(p, (4 * 128 - 1) * 4096, 4096), EIO);
  EXPECT_EQ(PreadErrno(p, 16384ull * 4096, 4096), EIO);
  EXPECT_EQ(PreadErrno(p, 19999ull * 4096, 4096), EIO);
  EXPECT_EQ(PreadErrno(p, (3 * 128 - 1) * 4096, 4096), 0);
  EXPECT_EQ(PreadErrno(p, 4 * 128 * 4096, 4096), 0);
  EXPECT_EQ(PreadErrno(p, 16383ull * 4096, 4096), 0);
}

// A source that can be switched off, like a registry that went away.
class SwitchableSource : public LayerBlockSource {
 public:
  explicit SwitchableSource(std::unique_ptr<FileBlockSource> file) : file_(std::move(file)) {}
  Status ReadAt(uint64_t offset, void* buf, size_t n) override {
    if (offset < data_end_ && !available_->load()) return UnavailableError("registry unreachable");
    return file_->ReadAt(offset, buf, n);
  }
  bool IsLocal(uint64_t, uint64_t) const override { return available_->load(); }
  uint64_t size() const override { return file_->size(); }
  const std::string& name() const override { return file_->name(); }

  std::shared_ptr<std::atomic<bool>> available_ = std::make_shared<std::atomic<bool>>(true);
  uint64_t data_end_ = 0;

 private:
  std::unique_ptr<FileBlockSource> file_;
};

TEST(VerifiedBlockFile, UnavailableSourceGivesEioNeverZerosNorAHang) {
  REQUIRE_FUSE();
  TempDir dir;
  FormattedImage f = MakeFormattedImage(dir.Join("layer"), 300);
  auto file_source = FileBlockSource::Open(f.path);
  ASSERT_TRUE(file_source.ok());
  auto source = std::make_unique<SwitchableSource>(std::move(*file_source));
  source->data_end_ = f.descriptor.hash_offset;
  auto available = source->available_;
  const std::string at = dir.Join("verified");
  WriteFile(at, "");
  auto file = VerifiedBlockFile::Mount(std::move(source), f.descriptor.hash_offset,
                                       f.descriptor.root_digest, at);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  available->store(false);
  EXPECT_EQ(PreadErrno(at, 10 * 4096, 8192), EIO);
  available->store(true);
  std::string got;
  EXPECT_EQ(PreadErrno(at, 10 * 4096, 8192, &got), 0);
  EXPECT_EQ(got, ReadFileOrDie(f.path).substr(10 * 4096, 8192));
}

TEST(VerifiedBlockFile, IsReadOnly) {
  REQUIRE_FUSE();
  TempDir dir;
  FormattedImage f = MakeFormattedImage(dir.Join("layer"), 10);
  auto file = MountFile(f, dir.Join("verified"));
  ASSERT_NE(file, nullptr);
  int fd = ::open(file->path().c_str(), O_RDWR);
  EXPECT_LT(fd, 0);
  if (fd >= 0) ::close(fd);
}

TEST(VerifiedBlockFile, RefusesABadSuperblockBeforeMounting) {
  REQUIRE_FUSE();
  TempDir dir;
  FormattedImage f = MakeFormattedImage(dir.Join("layer"), 10);
  FlipByte(f.path, f.descriptor.hash_offset + 64);  // data block size
  WriteFile(dir.Join("verified"), "");
  auto source = FileBlockSource::Open(f.path);
  ASSERT_TRUE(source.ok());
  auto file = VerifiedBlockFile::Mount(std::move(*source), f.descriptor.hash_offset,
                                       f.descriptor.root_digest, dir.Join("verified"));
  EXPECT_EQ(file.status().code(), Code::kDataLoss);
  EXPECT_FALSE(IsMountPoint(dir.Join("verified")));
}

// --- EROFS on the verified file -------------------------------------------

// A directory with the kinds of entries a layer has, and three marked files
// whose data blocks the tamper tests locate by their markers.
void MakeLayerDir(const std::string& root, uint64_t filler_bytes) {
  auto marked = [](const std::string& tag) {
    std::string s = "EVS-MARKER-" + tag + "-";
    while (s.size() < 16384) s += static_cast<char>('a' + s.size() % 26);
    return s;
  };
  WriteFile(root + "/first.bin", marked("FIRST"));
  WriteFile(root + "/etc/os-release", "ID=evs\n");
  WriteFile(root + "/usr/lib/empty", "");
  testing::WritePatternFile(root + "/usr/lib/filler.bin", filler_bytes, 5);
  WriteFile(root + "/zz/last.bin", marked("LAST"));
  ShOk("cd '" + root + "' && ln -s ../etc/os-release usr/os-release && ln zz/last.bin zz/hard" +
       " && mkdir -p var/empty && chmod 1777 var/empty && chmod 0600 etc/os-release" +
       " && setfattr -n user.evs -v layer usr/lib/empty && mkfifo usr/fifo");
}

// Builds an EROFS image of `dir` with mkfs.erofs (file data block-aligned, not
// inlined, so a file's bytes sit in its own blocks).
std::string MakeErofs(const TempDir& tmp, const std::string& dir, const std::string& name) {
  std::string img = tmp.Join(name);
  ShOk("mkfs.erofs --quiet -Enoinline_data -T0 '" + img + "' '" + dir + "'");
  return img;
}

bool FileBackedErofsWorks(const TempDir& tmp, const std::string& img) {
  std::string mnt = tmp.Join("probe");
  ::mkdir(mnt.c_str(), 0755);
  auto m = MountPoint::Mount(img, mnt, "erofs", MS_RDONLY, "");
  return m.ok();
}

struct VerifiedLayer {
  std::string image;
  FormattedImage formatted;
  std::unique_ptr<VerifiedErofsMount> mount;
};

std::unique_ptr<VerifiedErofsMount> MountVerified(const TempDir& tmp, const FormattedImage& f,
                                                  const std::string& name, Status* status) {
  std::string target = tmp.Join(name);
  ::mkdir(target.c_str(), 0755);
  auto m = VerifiedErofsMount::MountLayerFile(
      f.path, f.descriptor.hash_offset, f.descriptor.root_digest, tmp.Join(name + ".fuse"), target);
  *status = m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

TEST(VerifiedErofsMount, ShowsTheSameTreeAsAPlainMount) {
  REQUIRE_EROFS();
  TempDir tmp;
  MakeLayerDir(tmp.Join("src"), 3 << 20);
  std::string plain_img = MakeErofs(tmp, tmp.Join("src"), "plain.erofs");
  if (!FileBackedErofsWorks(tmp, plain_img)) GTEST_SKIP() << "kernel lacks file-backed EROFS";
  std::string plain_dir = tmp.Join("plain");
  ::mkdir(plain_dir.c_str(), 0755);
  auto plain = MountPoint::Mount(plain_img, plain_dir, "erofs", MS_RDONLY, "");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  const std::string expected = DescribeTree(plain_dir);
  ASSERT_NE(expected.find("./zz/last.bin"), std::string::npos);
  ASSERT_NE(expected.find("user.evs"), std::string::npos);

  for (uint32_t dbs : {4096u, 512u}) {
    std::string img = tmp.Join(StrCat("verified", dbs, ".erofs"));
    ShOk("cp '" + plain_img + "' '" + img + "'");
    FormattedImage f = FormatExisting(img, dbs);
    Status st;
    auto mount = MountVerified(tmp, f, StrCat("v", dbs), &st);
    ASSERT_NE(mount, nullptr) << st.ToString();
    EXPECT_EQ(DescribeTree(mount->target()), expected) << "data block size " << dbs;
    EXPECT_EQ(mount->file().stats().failures, 0u);
    EXPECT_GT(mount->file().stats().blocks_verified, 0u);
    EXPECT_TRUE(mount->Unmount().ok());
    EXPECT_FALSE(IsMountPoint(mount->target()));
    EXPECT_FALSE(IsMountPoint(tmp.Join(StrCat("v", dbs, ".fuse"))));
  }
}

// Offsets of the marked files' first block in an image.
struct Marks {
  uint64_t first;
  uint64_t last;
};
Marks FindMarks(const std::string& img) {
  return {FindUnique(img, "EVS-MARKER-FIRST-"), FindUnique(img, "EVS-MARKER-LAST-")};
}

std::string ReadOrErrno(const std::string& path, int* err) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  *err = 0;
  if (!fd.valid()) {
    *err = errno;
    return "";
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      *err = errno;
      return out;
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

class VerifiedErofsTamper : public ::testing::Test {
 protected:
  // An image with first.bin near the start, 10 MiB of filler, last.bin
  // after it; verity with 512-byte data blocks so that 3 levels exist and a
  // level-1 block covers 8 MiB.
  void SetUp() override {
    REQUIRE_EROFS();
    MakeLayerDir(tmp_.Join("src"), 10 << 20);
    image_ = MakeErofs(tmp_, tmp_.Join("src"), "layer.erofs");
    if (!FileBackedErofsWorks(tmp_, image_)) GTEST_SKIP() << "kernel lacks file-backed EROFS";
    int err = 0;
    first_ = ReadOrErrno(tmp_.Join("src/first.bin"), &err);
    last_ = ReadOrErrno(tmp_.Join("src/zz/last.bin"), &err);
    marks_ = FindMarks(image_);
    f_ = FormatExisting(image_, 512);
    ASSERT_EQ(f_.layout.levels(), 3u);
    const uint64_t per1 = 128 * 128;  // data blocks per level-1 hash block
    // The tests rely on this placement; say so if mkfs.erofs changes it.
    ASSERT_EQ(marks_.first / 512 / per1, 0u) << "first.bin not in the first 8 MiB";
    ASSERT_GE(marks_.last / 512 / per1, 1u) << "last.bin not beyond the first 8 MiB";
  }

  // Mounts, reads both files, and expects last.bin to fail with EIO while
  // first.bin and the directory listing are intact.
  void ExpectLastFailsFirstReads() {
    Status st;
    auto mount = MountVerified(tmp_, f_, "mnt", &st);
    ASSERT_NE(mount, nullptr) << st.ToString();
    int err = 0;
    std::string first = ReadOrErrno(mount->target() + "/first.bin", &err);
    EXPECT_EQ(err, 0);
    EXPECT_TRUE(first == first_) << "first.bin differs";
    ReadOrErrno(mount->target() + "/zz/last.bin", &err);
    EXPECT_EQ(err, EIO);
    ReadOrErrno(mount->target() + "/zz/hard", &err);  // same inode
    EXPECT_EQ(err, EIO);
    EXPECT_NE(ShOk("ls -la '" + mount->target() + "/etc'").find("os-release"), std::string::npos);
    EXPECT_GT(mount->file().stats().failures, 0u);
  }

  TempDir tmp_;
  std::string image_;
  std::string first_, last_;
  Marks marks_{};
  FormattedImage f_;
};

TEST_F(VerifiedErofsTamper, UntouchedImageReadsBothFiles) {
  Status st;
  auto mount = MountVerified(tmp_, f_, "mnt", &st);
  ASSERT_NE(mount, nullptr) << st.ToString();
  int err = 0;
  EXPECT_TRUE(ReadOrErrno(mount->target() + "/zz/last.bin", &err) == last_);
  EXPECT_EQ(err, 0);
}

TEST_F(VerifiedErofsTamper, FlippedDataByteFailsThatFileOnly) {
  FlipByte(image_, marks_.last + 3);
  ExpectLastFailsFirstReads();
}

TEST_F(VerifiedErofsTamper, FlippedLevelZeroHashBlockFailsTheFilesUnderIt) {
  const uint64_t block = marks_.last / 512;
  FlipByte(image_, (f_.layout.level_start[0] + block / 128) * 4096 + (block % 128) * 32);
  ExpectLastFailsFirstReads();
}

TEST_F(VerifiedErofsTamper, FlippedUpperHashBlockFailsTheFilesUnderIt) {
  const uint64_t block = marks_.last / 512;
  FlipByte(image_, (f_.layout.level_start[1] + block / (128 * 128)) * 4096 + 1);
  ExpectLastFailsFirstReads();
}

TEST_F(VerifiedErofsTamper, FlippedSuperblockSaltFailsTheWholeLayer) {
  // The salt enters every digest: nothing of the layer can be trusted, so
  // not even the EROFS superblock is served and the mount fails with EIO.
  FlipByte(image_, f_.descriptor.hash_offset + 88);
  Status st;
  auto mount = MountVerified(tmp_, f_, "mnt", &st);
  EXPECT_EQ(mount, nullptr);
  EXPECT_NE(st.message().find("Input/output error"), std::string::npos) << st.ToString();
  EXPECT_FALSE(IsMountPoint(tmp_.Join("mnt")));
  EXPECT_FALSE(IsMountPoint(tmp_.Join("mnt.fuse")));
}

TEST_F(VerifiedErofsTamper, BusyMountIsRefusedAndDestroyingItNeverHangs) {
  Status st;
  auto mount = MountVerified(tmp_, f_, "mnt", &st);
  ASSERT_NE(mount, nullptr) << st.ToString();
  std::string big = mount->target() + "/usr/lib/filler.bin";
  UniqueFd fd(::open(big.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  Status busy = mount->Unmount();
  EXPECT_EQ(busy.code(), Code::kFailedPrecondition) << busy.ToString();
  char c;
  EXPECT_EQ(::pread(fd.get(), &c, 1, 0), 1);  // still served

  mount.reset();  // detaches both and ends the FUSE connection
  EXPECT_FALSE(IsMountPoint(tmp_.Join("mnt")));
  // Drop what EROFS cached, then read: an error, not a hang (ctest's
  // timeout would catch a hang).
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  char buf[4096];
  EXPECT_LT(::pread(fd.get(), buf, sizeof buf, 8 << 20), 0);
}

}  // namespace
}  // namespace evs::verity
