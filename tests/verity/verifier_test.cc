// Verification against a root digest: whole images (tamper tests of issue 3,
// "What must be shown" 2) and single blocks, as lazy loading will use it.
#include "evs/verity/verifier.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "evs/common/file.h"
#include "evs/verity/tree_builder.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::TempDir;
using testing::FlipByte;
using testing::WritePatternFile;

struct Formatted {
  std::string path;
  VerityDescriptor descriptor;
  TreeLayout layout;
};

// An image of `blocks` data blocks with its tree appended.
Formatted MakeImage(const TempDir& dir, uint64_t blocks, uint32_t dbs = 4096,
                    const std::string& name = "layer.img") {
  Formatted f;
  f.path = dir.Join(name);
  WritePatternFile(f.path, blocks * dbs, blocks + dbs);
  FormatOptions options;
  options.params.data_block_size = dbs;
  auto d = FormatImageFile(f.path, options);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (d.ok()) f.descriptor = *d;
  auto layout = TreeLayout::Compute(f.descriptor.params, f.descriptor.hash_offset);
  EXPECT_TRUE(layout.ok());
  if (layout.ok()) f.layout = *layout;
  return f;
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

TEST(VerifyImageFile, AcceptsAnUntouchedImage) {
  TempDir dir;
  for (uint32_t dbs : {4096u, 512u}) {
    Formatted f = MakeImage(dir, 20000, dbs);
    Status s = VerifyImageFile(f.path, f.descriptor.root_digest);
    EXPECT_TRUE(s.ok()) << s.ToString();
    VerifyOptions with_offset;
    with_offset.hash_offset = f.descriptor.hash_offset;
    with_offset.expected_salt = f.descriptor.params.salt;
    EXPECT_TRUE(VerifyImageFile(f.path, f.descriptor.root_digest, with_offset).ok());
  }
}

TEST(VerifyImageFile, RejectsAnotherRootDigest) {
  TempDir dir;
  Formatted f = MakeImage(dir, 300);
  Digest wrong = Digest::Sha256Of("not this layer");
  Status s = VerifyImageFile(f.path, wrong);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, "root digest")) << s.ToString();
  EXPECT_TRUE(Contains(s, f.path)) << s.ToString();
}

TEST(VerifyImageFile, NamesAFlippedDataBlock) {
  TempDir dir;
  for (uint32_t dbs : {4096u, 512u}) {
    Formatted f = MakeImage(dir, 1000, dbs);
    FlipByte(f.path, 777ull * dbs + 13);
    Status s = VerifyImageFile(f.path, f.descriptor.root_digest);
    EXPECT_EQ(s.code(), Code::kDataLoss);
    EXPECT_TRUE(Contains(s, "data block 777 ")) << s.ToString();
  }
}

TEST(VerifyImageFile, NamesAFlippedLevelZeroHashBlock) {
  TempDir dir;
  Formatted f = MakeImage(dir, 1000);  // 2 levels: 8 level-0 blocks under 1 top block
  ASSERT_EQ(f.layout.levels(), 2u);
  const uint64_t bad = f.layout.level_start[0] + 3;
  FlipByte(f.path, bad * 4096 + 100);
  Status s = VerifyImageFile(f.path, f.descriptor.root_digest);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, StrCat("hash block ", bad, " (level 0"))) << s.ToString();
}

TEST(VerifyImageFile, NamesAFlippedUpperHashBlock) {
  TempDir dir;
  Formatted f = MakeImage(dir, 20000);  // 3 levels
  ASSERT_EQ(f.layout.levels(), 3u);
  const uint64_t bad = f.layout.level_start[1] + 1;
  FlipByte(f.path, bad * 4096 + 5);
  Status s = VerifyImageFile(f.path, f.descriptor.root_digest);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, StrCat("hash block ", bad, " (level 1"))) << s.ToString();

  Formatted g = MakeImage(dir, 20000, 4096, "top.img");
  const uint64_t top = g.layout.level_start[2];
  FlipByte(g.path, top * 4096 + 4095);  // in the zero padding of the top block
  s = VerifyImageFile(g.path, g.descriptor.root_digest);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, StrCat("hash block ", top, " (top level 2"))) << s.ToString();
}

TEST(VerifyImageFile, DetectsAFlippedSuperblockByte) {
  TempDir dir;
  // Field by field: salt, data block count, algorithm name, padding.
  struct Flip {
    size_t offset;
    const char* expect;
  } flips[] = {{88 + 3, "root digest"},
               {72, "superblock"},
               {33, "superblock"},
               {400, "superblock"},
               {0, "superblock"}};
  for (const Flip& flip : flips) {
    Formatted f = MakeImage(dir, 300);
    FlipByte(f.path, f.descriptor.hash_offset + flip.offset);
    VerifyOptions options;
    options.hash_offset = f.descriptor.hash_offset;  // as metadata.db records it
    Status s = VerifyImageFile(f.path, f.descriptor.root_digest, options);
    EXPECT_EQ(s.code(), Code::kDataLoss) << flip.offset;
    EXPECT_TRUE(Contains(s, flip.expect)) << flip.offset << ": " << s.ToString();
  }
  // With the recorded salt, a changed salt is named as such.
  Formatted f = MakeImage(dir, 300);
  FlipByte(f.path, f.descriptor.hash_offset + 88);
  VerifyOptions options;
  options.expected_salt = f.descriptor.params.salt;
  Status s = VerifyImageFile(f.path, f.descriptor.root_digest, options);
  EXPECT_TRUE(Contains(s, "salt")) << s.ToString();
}

TEST(VerifyImageFile, RejectsBytesAppendedAfterTheTree) {
  TempDir dir;
  Formatted f = MakeImage(dir, 300);
  ASSERT_EQ(evs::testing::Sh("printf x >> '" + f.path + "'").exit_code, 0);
  VerifyOptions options;
  options.hash_offset = f.descriptor.hash_offset;
  Status s = VerifyImageFile(f.path, f.descriptor.root_digest, options);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, "after the verity tree")) << s.ToString();
}

TEST(VerifyImageFile, HostileSuperblockSizesAreErrorsNotCrashes) {
  TempDir dir;
  Formatted f = MakeImage(dir, 300);
  // Claim 2^60 data blocks: the tree would be far larger than the file.
  auto fd = OpenFile(f.path, O_RDWR);
  ASSERT_TRUE(fd.ok());
  uint64_t huge = uint64_t{1} << 60;
  ASSERT_TRUE(
      PwriteAll(fd->get(), &huge, 8, static_cast<off_t>(f.descriptor.hash_offset + 72), "x").ok());
  VerifyOptions options;
  options.hash_offset = f.descriptor.hash_offset;
  Status s = VerifyImageFile(f.path, f.descriptor.root_digest, options);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  // A hash offset past the end of the file.
  options.hash_offset = uint64_t{1} << 40;
  EXPECT_EQ(VerifyImageFile(f.path, f.descriptor.root_digest, options).code(), Code::kDataLoss);
}

// Reads go through an interface: this source counts them and can fail.
class CountingSource : public LayerBlockSource {
 public:
  explicit CountingSource(std::unique_ptr<FileBlockSource> file) : file_(std::move(file)) {}
  Status ReadAt(uint64_t offset, void* buf, size_t n) override {
    reads_.fetch_add(1);
    if (unavailable_.load()) return UnavailableError("registry unreachable");
    return file_->ReadAt(offset, buf, n);
  }
  bool IsLocal(uint64_t, uint64_t) const override { return !unavailable_.load(); }
  uint64_t size() const override { return file_->size(); }
  const std::string& name() const override { return file_->name(); }

  std::atomic<uint64_t> reads_{0};
  std::atomic<bool> unavailable_{false};

 private:
  std::unique_ptr<FileBlockSource> file_;
};

TEST(VerityTree, ChecksEachHashBlockOnceAndRemembersIt) {
  TempDir dir;
  Formatted f = MakeImage(dir, 20000);
  auto file = FileBlockSource::Open(f.path, "layer sha256:test");
  ASSERT_TRUE(file.ok());
  std::string data = evs::testing::ReadFileOrDie(f.path);
  CountingSource source(std::move(*file));
  auto tree = VerityTree::Open(&source, f.descriptor.hash_offset, f.descriptor.root_digest);
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  // Two threads verify every block, twice, one block per call.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 2; ++round) {
        for (uint64_t b = t; b < 20000; b += 2) {
          if (!(*tree)->VerifyDataBlocks(b, bytes + b * 4096, 1).ok()) failures++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto st = (*tree)->stats();
  EXPECT_EQ(st.data_blocks_verified, 40000u);
  // Every hash block read once: two threads wanting the same block at the
  // same moment share one read.
  EXPECT_EQ(st.hash_blocks_read, f.layout.hash_blocks);
}

TEST(VerityTree, SmallCacheStillVerifiesEverything) {
  TempDir dir;
  Formatted f = MakeImage(dir, 5000, 512);
  auto file = FileBlockSource::Open(f.path);
  ASSERT_TRUE(file.ok());
  std::string data = evs::testing::ReadFileOrDie(f.path);
  VerityTreeOptions options;
  options.cache_bytes = 4096;  // one level-0 block at a time
  auto tree =
      VerityTree::Open(file->get(), f.descriptor.hash_offset, f.descriptor.root_digest, options);
  ASSERT_TRUE(tree.ok());
  const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
  for (uint64_t b = 0; b < 5000; b += 37) {
    EXPECT_TRUE((*tree)->VerifyDataBlocks(b, bytes + b * 512, 1).ok()) << b;
  }
  std::string bad(data, 4999 * 512, 512);
  bad[0] ^= 1;
  Status s = (*tree)->VerifyDataBlocks(4999, reinterpret_cast<const uint8_t*>(bad.data()), 1);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_TRUE(Contains(s, "data block 4999 ")) << s.ToString();
  EXPECT_EQ((*tree)->stats().failures, 1u);
}

TEST(VerityTree, UnavailableSourceIsUnavailableNotCorrupt) {
  TempDir dir;
  Formatted f = MakeImage(dir, 300);
  auto file = FileBlockSource::Open(f.path);
  ASSERT_TRUE(file.ok());
  std::string data = evs::testing::ReadFileOrDie(f.path);
  CountingSource source(std::move(*file));
  auto tree = VerityTree::Open(&source, f.descriptor.hash_offset, f.descriptor.root_digest);
  ASSERT_TRUE(tree.ok());
  source.unavailable_ = true;
  Status s =
      (*tree)->VerifyDataBlocks(5, reinterpret_cast<const uint8_t*>(data.data()) + 5 * 4096, 1);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  source.unavailable_ = false;  // the block is fetched later: now it verifies
  s = (*tree)->VerifyDataBlocks(5, reinterpret_cast<const uint8_t*>(data.data()) + 5 * 4096, 1);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(VerityTree, SingleBlockImageIsCheckedAgainstTheRoot) {
  TempDir dir;
  Formatted f = MakeImage(dir, 1);
  auto file = FileBlockSource::Open(f.path);
  ASSERT_TRUE(file.ok());
  auto tree = VerityTree::Open(file->get(), f.descriptor.hash_offset, f.descriptor.root_digest);
  ASSERT_TRUE(tree.ok());
  std::string data = evs::testing::ReadFileOrDie(f.path).substr(0, 4096);
  EXPECT_TRUE((*tree)->VerifyDataBlocks(0, reinterpret_cast<const uint8_t*>(data.data()), 1).ok());
  data[9] ^= 1;
  EXPECT_EQ((*tree)->VerifyDataBlocks(0, reinterpret_cast<const uint8_t*>(data.data()), 1).code(),
            Code::kDataLoss);
  EXPECT_EQ((*tree)->VerifyDataBlocks(1, reinterpret_cast<const uint8_t*>(data.data()), 1).code(),
            Code::kOutOfRange);
}

TEST(VerityTree, OpenRejectsAMismatchedAlgorithmAndOffset) {
  TempDir dir;
  Formatted f = MakeImage(dir, 10);
  auto file = FileBlockSource::Open(f.path);
  ASSERT_TRUE(file.ok());
  Digest sha512 = Digest::Of(HashAlgorithm::kSha512, "x");
  EXPECT_EQ(VerityTree::Open(file->get(), f.descriptor.hash_offset, sha512).status().code(),
            Code::kDataLoss);
  EXPECT_EQ(VerityTree::Open(file->get(), 4096, f.descriptor.root_digest).status().code(),
            Code::kDataLoss);
}

}  // namespace
}  // namespace evs::verity
