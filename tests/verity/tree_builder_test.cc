// Hash trees built by evs are the ones veritysetup builds (issue 3, "What
// must be shown" 1): same root digest, same bytes, and `veritysetup verify`
// accepts our files.
#include "evs/verity/tree_builder.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::TempDir;
using testing::VeritysetupFormat;
using testing::VeritysetupVerify;
using testing::WritePatternFile;

const std::string kSalt =
    std::string("\x5e\xa1\x7c\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc", 16) +
    std::string("\xdd\xee\xff\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d", 16);

struct InteropCase {
  uint64_t blocks;
  uint32_t data_block_size;
  bool salted;
};

std::string CaseName(const ::testing::TestParamInfo<InteropCase>& info) {
  return StrCat(info.param.blocks, "Blocks_", info.param.data_block_size, "_",
                info.param.salted ? "Salted" : "NoSalt");
}

// Formats one copy with evs and one with veritysetup and compares them.
void ExpectSameAsVeritysetup(const VerityParams& params, uint64_t seed) {
  TempDir dir("evs-verity-interop");
  const std::string ours = dir.Join("ours.img");
  const std::string theirs = dir.Join("theirs.img");
  const uint64_t size = params.data_blocks * params.data_block_size;
  WritePatternFile(ours, size, seed);
  WritePatternFile(theirs, size, seed);

  FormatOptions options;
  options.params = params;
  options.random_salt = false;
  auto descriptor = FormatImageFile(ours, options);
  ASSERT_TRUE(descriptor.ok()) << descriptor.status().ToString();
  EXPECT_EQ(descriptor->hash_offset, size);

  auto layout = TreeLayout::Compute(params, size);
  ASSERT_TRUE(layout.ok());
  if (layout->hash_blocks == 0 && size % layout->hash_block_size != 0) {
    // veritysetup 2.6.1 writes its header with direct I/O and fails when the
    // file ends at the header (one 512-byte block); give it the room it
    // would otherwise create.
    ASSERT_EQ(::truncate(theirs.c_str(), static_cast<off_t>(layout->end_offset)), 0);
  }
  std::string root = VeritysetupFormat(theirs, params);
  ASSERT_FALSE(root.empty());
  EXPECT_EQ(descriptor->root_digest.hex(), root);
  EXPECT_EQ(descriptor->root_digest.algorithm(), params.algorithm);

  struct stat a, b;
  ASSERT_EQ(::stat(ours.c_str(), &a), 0);
  ASSERT_EQ(::stat(theirs.c_str(), &b), 0);
  EXPECT_EQ(a.st_size, b.st_size);
  EXPECT_EQ(static_cast<uint64_t>(a.st_size), layout->end_offset);
  // Byte-for-byte, superblock included (same UUID given to both).
  EXPECT_EQ(evs::testing::Sh(StrCat("cmp '", ours, "' '", theirs, "'")).exit_code, 0)
      << "tree bytes differ from veritysetup's";
  EXPECT_TRUE(VeritysetupVerify(ours, size, root)) << "veritysetup verify rejects our file";
}

class VeritysetupInterop : public ::testing::TestWithParam<InteropCase> {};

TEST_P(VeritysetupInterop, SameRootSameBytesAndVerifyAccepts) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  const InteropCase& c = GetParam();
  VerityParams params;
  params.data_blocks = c.blocks;
  params.data_block_size = c.data_block_size;
  params.salt = c.salted ? kSalt : "";
  params.uuid = DeriveUuid(CaseName({c, 0}));
  ExpectSameAsVeritysetup(params, c.blocks * 7 + c.data_block_size);
}

std::vector<InteropCase> AllInteropCases() {
  std::vector<InteropCase> cases;
  for (uint64_t blocks : {1u, 2u, 127u, 128u, 129u, 100000u}) {
    for (uint32_t dbs : {4096u, 512u}) {
      for (bool salted : {false, true}) cases.push_back({blocks, dbs, salted});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, VeritysetupInterop, ::testing::ValuesIn(AllInteropCases()),
                         CaseName);

TEST(VeritysetupInteropExtra, FormatVersionZeroMatches) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  for (uint64_t blocks : {1u, 129u, 16385u}) {
    VerityParams params;
    params.hash_type = 0;
    params.data_blocks = blocks;
    params.salt = kSalt;
    params.uuid = DeriveUuid("v0");
    SCOPED_TRACE(blocks);
    ExpectSameAsVeritysetup(params, blocks);
  }
}

TEST(VeritysetupInteropExtra, Sha512Matches) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  for (uint64_t blocks : {2u, 65u, 4097u}) {
    VerityParams params;
    params.algorithm = HashAlgorithm::kSha512;
    params.data_blocks = blocks;
    params.data_block_size = 512;
    params.salt = kSalt.substr(0, 7);
    params.uuid = DeriveUuid("sha512");
    SCOPED_TRACE(blocks);
    ExpectSameAsVeritysetup(params, blocks + 1);
  }
}

// Builds a tree through the BlockObserver interface, handing blocks over in
// the given batches, and returns the file.
std::string BuildThroughObserver(const std::string& image, const VerityParams& params,
                                 const std::vector<std::pair<uint64_t, uint64_t>>& batches,
                                 TreeBuildOptions options, Digest* root) {
  std::string data = ReadFileOrDie(image);
  auto builder = VerityTreeBuilder::Create(params, options);
  EXPECT_TRUE(builder.ok()) << builder.status().ToString();
  if (!builder.ok()) return "";
  for (auto [first, count] : batches) {
    (*builder)->OnBlocks(
        first, reinterpret_cast<const uint8_t*>(data.data()) + first * params.data_block_size,
        count);
  }
  std::string out = image + ".observer";
  auto fd = OpenFile(out, O_RDWR | O_CREAT | O_TRUNC);
  EXPECT_TRUE(fd.ok());
  EXPECT_TRUE(WriteAll(fd->get(), data.data(), data.size(), out).ok());
  auto d = (*builder)->Finish(fd->get(), data.size() / params.data_block_size);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (d.ok()) *root = d->root_digest;
  return ReadFileOrDie(out);
}

TEST(VerityTreeBuilder, BlocksInAnyOrderGiveTheSameTreeAsFormattingTheFile) {
  TempDir dir;
  const std::string image = dir.Join("img");
  const uint64_t blocks = 3000;
  WritePatternFile(image, blocks * 4096, 42);
  VerityParams params;
  params.salt = kSalt;
  params.uuid = DeriveUuid("order");

  // As an EROFS writer does: data in runs of varying size, block 0 last.
  std::vector<std::pair<uint64_t, uint64_t>> batches;
  std::mt19937 rng(7);
  for (uint64_t b = 1; b < blocks;) {
    uint64_t n = std::min<uint64_t>(blocks - b, 1 + rng() % 600);
    batches.push_back({b, n});
    b += n;
  }
  std::shuffle(batches.begin(), batches.end(), rng);
  batches.push_back({0, 1});

  // Hashing on the caller's thread, and queued to the builder's own.
  Digest root_sync, root_async;
  TreeBuildOptions build;
  build.threads = 2;
  std::string observed = BuildThroughObserver(image, params, batches, build, &root_sync);
  build.async_bytes = 1 << 20;  // smaller than some batches: back-pressure
  std::string queued = BuildThroughObserver(image, params, batches, build, &root_async);

  FormatOptions options;
  options.params = params;
  auto formatted = FormatImageFile(image, options);
  ASSERT_TRUE(formatted.ok()) << formatted.status().ToString();
  EXPECT_EQ(root_sync, formatted->root_digest);
  EXPECT_EQ(root_async, formatted->root_digest);
  std::string expected = ReadFileOrDie(image);
  EXPECT_TRUE(observed == expected) << "observer-built file differs";
  EXPECT_TRUE(queued == expected) << "file built with queued hashing differs";
}

TEST(VerityTreeBuilder, SpillingLevelZeroToDiskGivesTheSameTree) {
  TempDir dir;
  const std::string image = dir.Join("img");
  const uint64_t blocks = 5000;
  WritePatternFile(image, blocks * 512, 3);
  VerityParams params;
  params.data_block_size = 512;
  params.salt = kSalt;
  std::vector<std::pair<uint64_t, uint64_t>> batches;
  for (uint64_t b = 0; b < blocks; b += 1000) batches.push_back({b, 1000});
  std::reverse(batches.begin(), batches.end());

  Digest in_memory, spilled;
  TreeBuildOptions a;
  std::string first = BuildThroughObserver(image, params, batches, a, &in_memory);
  TreeBuildOptions b;
  b.memory_limit = 4096;  // 128 digests, then the spill file
  b.spill_dir = dir.path();
  std::string second = BuildThroughObserver(image, params, batches, b, &spilled);
  EXPECT_EQ(in_memory, spilled);
  EXPECT_TRUE(first == second);
  b.async_bytes = 8 << 20;
  std::string third = BuildThroughObserver(image, params, batches, b, &spilled);
  EXPECT_EQ(in_memory, spilled);
  EXPECT_TRUE(first == third);
  // The spill file was unlinked from the start: nothing is left behind.
  EXPECT_EQ(evs::testing::ShOk(StrCat("ls -A '", dir.path(), "' | wc -l")), "2\n");
}

TEST(VerityTreeBuilder, FinishRefusesAnImageWithMissingBlocks) {
  VerityParams params;
  auto builder = VerityTreeBuilder::Create(params);
  ASSERT_TRUE(builder.ok());
  std::vector<uint8_t> block(4096, 1);
  (*builder)->OnBlocks(1, block.data(), 1);
  TempDir dir;
  auto fd = OpenFile(dir.Join("x"), O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  auto d = (*builder)->Finish(fd->get(), 2);
  EXPECT_EQ(d.status().code(), Code::kInternal);
  EXPECT_NE(d.status().message().find("saw 1 blocks"), std::string::npos);
}

TEST(VerityTreeBuilder, RejectsBadParameters) {
  VerityParams params;
  params.data_block_size = 1000;
  EXPECT_EQ(VerityTreeBuilder::Create(params).status().code(), Code::kInvalidArgument);
}

TEST(FormatImageFile, PadsAPartialLastBlockWithZeros) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  TempDir dir;
  const std::string image = dir.Join("img");
  WritePatternFile(image, 4096 * 5 + 100, 9);
  FormatOptions options;
  auto d = FormatImageFile(image, options);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->hash_offset, 4096u * 6);
  EXPECT_EQ(d->params.salt.size(), 32u);  // random salt by default
  EXPECT_TRUE(VeritysetupVerify(image, d->hash_offset, d->root_digest.hex()));
  std::string data = ReadFileOrDie(image);
  EXPECT_EQ(data.substr(4096 * 5 + 100, 4096 - 100), std::string(4096 - 100, '\0'));
}

TEST(FormatImageFile, RefusesToFormatTwice) {
  TempDir dir;
  const std::string image = dir.Join("img");
  WritePatternFile(image, 4096 * 3, 1);
  ASSERT_TRUE(FormatImageFile(image, {}).ok());
  struct stat before;
  ASSERT_EQ(::stat(image.c_str(), &before), 0);
  auto again = FormatImageFile(image, {});
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_NE(again.status().message().find(image), std::string::npos);
  struct stat after;
  ASSERT_EQ(::stat(image.c_str(), &after), 0);
  EXPECT_EQ(before.st_size, after.st_size);
}

TEST(FormatImageFile, FailureLeavesTheImageAsItWas) {
  TempDir dir;
  const std::string image = dir.Join("img");
  WritePatternFile(image, 4096 * 3 + 5, 1);
  std::string before = ReadFileOrDie(image);
  FormatOptions options;
  options.random_salt = false;
  options.build.memory_limit = 0;                 // forces the spill file …
  options.build.spill_dir = dir.Join("missing");  // … into a directory that does not exist
  auto d = FormatImageFile(image, options);
  EXPECT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("missing"), std::string::npos) << d.status().ToString();
  EXPECT_TRUE(ReadFileOrDie(image) == before);
}

TEST(FormatImageFile, NamesAMissingFile) {
  auto d = FormatImageFile("/nonexistent/evs.img", {});
  EXPECT_EQ(d.status().code(), Code::kNotFound);
  EXPECT_NE(d.status().message().find("/nonexistent/evs.img"), std::string::npos);
}

}  // namespace
}  // namespace evs::verity
