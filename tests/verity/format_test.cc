// The dm-verity superblock and tree layout (reference §4.1–4.2).
#include "evs/verity/format.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "evs/common/fd.h"
#include "evs/verity/tree_builder.h"
#include "test_util.h"

namespace evs::verity {
namespace {

VerityParams SampleParams() {
  VerityParams p;
  p.data_blocks = 262144;
  p.salt = std::string("\x01\x02\x03\xff", 4);
  p.uuid = DeriveUuid("sample");
  return p;
}

TEST(TreeLayout, MatchesTheKernelDocumentationExample) {
  // Reference §4.2: 262144 × 4096 data blocks with sha256 → 3 levels of
  // 1 + 16 + 2048 hash blocks; with --no-superblock the tree starts at 0.
  VerityParams p = SampleParams();
  auto layout = TreeLayout::Compute(p, 0, /*with_superblock=*/false);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  ASSERT_EQ(layout->levels(), 3u);
  EXPECT_EQ(layout->level_blocks[2], 1u);
  EXPECT_EQ(layout->level_blocks[1], 16u);
  EXPECT_EQ(layout->level_blocks[0], 2048u);
  EXPECT_EQ(layout->level_start[2], 0u);  // top level first
  EXPECT_EQ(layout->level_start[1], 1u);
  EXPECT_EQ(layout->level_start[0], 17u);
  EXPECT_EQ(layout->hash_blocks, 2065u);
  EXPECT_EQ(layout->fanout(), 128u);
  EXPECT_EQ(layout->LevelOf(0), 2);
  EXPECT_EQ(layout->LevelOf(16), 1);
  EXPECT_EQ(layout->LevelOf(17), 0);
  EXPECT_EQ(layout->LevelOf(2065), -1);
}

TEST(TreeLayout, AppendedTreeStartsAfterTheSuperblock) {
  VerityParams p;
  p.data_block_size = 512;
  p.data_blocks = 3;  // hash_offset 1536: superblock ends at 2048, tree at 4096
  auto layout = TreeLayout::Compute(p, p.hash_offset());
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->hash_start_block, 1u);
  EXPECT_EQ(layout->levels(), 1u);
  EXPECT_EQ(layout->end_offset, 8192u);  // what veritysetup leaves (measured)

  p.data_block_size = 4096;
  p.data_blocks = 1;  // no tree at all: the root is the block's digest
  layout = TreeLayout::Compute(p, p.hash_offset());
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->levels(), 0u);
  EXPECT_EQ(layout->hash_blocks, 0u);
  EXPECT_EQ(layout->end_offset, 8192u);
}

TEST(TreeLayout, Sha512HasSixtyFourEntriesPerBlock) {
  VerityParams p;
  p.algorithm = HashAlgorithm::kSha512;
  p.data_blocks = 65;
  auto layout = TreeLayout::Compute(p, p.hash_offset());
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->fanout(), 64u);
  EXPECT_EQ(layout->digest_slot, 64u);
  ASSERT_EQ(layout->levels(), 2u);
  EXPECT_EQ(layout->level_blocks[0], 2u);
}

TEST(VeritySuperblock, RoundTrips) {
  VerityParams p = SampleParams();
  std::string sb = EncodeSuperblock(p);
  ASSERT_EQ(sb.size(), kSuperblockSize);
  EXPECT_EQ(sb.substr(0, 8), std::string("verity\0\0", 8));
  auto back = DecodeSuperblock(sb, "test");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->data_blocks, p.data_blocks);
  EXPECT_EQ(back->salt, p.salt);
  EXPECT_EQ(back->uuid, p.uuid);
  EXPECT_EQ(back->algorithm, HashAlgorithm::kSha256);
  EXPECT_EQ(back->hash_type, 1u);
  EXPECT_EQ(back->data_block_size, 4096u);
  EXPECT_EQ(back->hash_block_size, 4096u);
}

TEST(VeritySuperblock, EveryByteOutsideTheUuidIsChecked) {
  // A flipped byte anywhere but in the UUID (which nothing covers, in
  // veritysetup either) must not decode to the same parameters.
  VerityParams p = SampleParams();
  const std::string sb = EncodeSuperblock(p);
  for (size_t i = 0; i < sb.size(); ++i) {
    if (i >= 16 && i < 32) continue;  // uuid
    std::string bad = sb;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto r = DecodeSuperblock(bad, "layer x");
    if (r.ok()) {
      // Still well-formed: then it must describe a different tree.
      bool same = r->data_blocks == p.data_blocks && r->salt == p.salt &&
                  r->data_block_size == p.data_block_size &&
                  r->hash_block_size == p.hash_block_size && r->hash_type == p.hash_type &&
                  r->algorithm == p.algorithm;
      EXPECT_FALSE(same) << "flip at byte " << i << " went unnoticed";
    } else {
      EXPECT_EQ(r.status().code(), Code::kDataLoss) << i;
      EXPECT_NE(r.status().message().find("layer x"), std::string::npos);
    }
  }
}

TEST(VeritySuperblock, RejectsHostileFields) {
  VerityParams p = SampleParams();
  auto patched = [&](size_t off, std::string bytes) {
    std::string sb = EncodeSuperblock(p);
    sb.replace(off, bytes.size(), bytes);
    return DecodeSuperblock(sb, "x");
  };
  EXPECT_FALSE(patched(80, std::string("\x01\x01", 2)).ok());          // salt size 257
  EXPECT_FALSE(patched(64, std::string("\x00\x20\x00\x00", 4)).ok());  // 8192-byte blocks
  EXPECT_FALSE(patched(64, std::string("\x00\x03\x00\x00", 4)).ok());  // 768: not a power of 2
  EXPECT_FALSE(patched(72, std::string(8, '\0')).ok());                // zero data blocks
  EXPECT_FALSE(patched(32, "md5\0\0\0").ok());                         // unknown algorithm
  EXPECT_FALSE(patched(32, std::string(32, 'a')).ok());                // unterminated name
  EXPECT_FALSE(patched(12, std::string("\x02\0\0\0", 4)).ok());        // hash type 2
  EXPECT_FALSE(DecodeSuperblock("verity", "x").ok());                  // truncated
}

TEST(VerityParams, ValidateNamesTheField) {
  VerityParams p;
  p.data_blocks = 1;
  p.data_block_size = 8192;
  Status s = p.Validate("layer y");
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_NE(s.message().find("layer y"), std::string::npos);
  EXPECT_NE(s.message().find("data block size 8192"), std::string::npos);
  p.data_block_size = 4096;
  p.salt.assign(257, 'x');
  EXPECT_FALSE(p.Validate("x").ok());
  p.salt.clear();
  p.data_blocks = uint64_t{1} << 60;  // 4 ZiB: offsets would overflow
  EXPECT_FALSE(p.Validate("x").ok());
  p.data_blocks = uint64_t{1} << 50;  // 4 EiB: fine
  EXPECT_TRUE(p.Validate("x").ok());
}

TEST(Salt, HexRoundTripsAndDashMeansNone) {
  EXPECT_EQ(SaltHex(""), "-");
  EXPECT_EQ(SaltHex(std::string("\x00\xff", 2)), "00ff");
  EXPECT_EQ(*ParseSaltHex("-"), "");
  EXPECT_EQ(*ParseSaltHex("00ff"), std::string("\x00\xff", 2));
  EXPECT_FALSE(ParseSaltHex("zz").ok());
  EXPECT_FALSE(ParseSaltHex(std::string(514, 'a')).ok());
  auto salt = RandomSalt();
  ASSERT_TRUE(salt.ok());
  EXPECT_EQ(salt->size(), 32u);
  EXPECT_NE(*salt, *RandomSalt());
}

TEST(Uuid, IsDerivedFromTheSeedAndPrintsLikeVeritysetup) {
  auto a = DeriveUuid("layer a");
  EXPECT_EQ(a, DeriveUuid("layer a"));
  EXPECT_NE(a, DeriveUuid("layer b"));
  std::string text = UuidToString(a);
  ASSERT_EQ(text.size(), 36u);
  EXPECT_EQ(text[8], '-');
  EXPECT_EQ(text[14], '4');  // version 4
}

TEST(LocateTree, FindsTheSuperblockFromTheFileSizeAlone) {
  testing::TempDir dir;
  for (uint32_t dbs : {4096u, 512u}) {
    for (uint64_t blocks : {1u, 8u, 129u, 1000u}) {
      std::string path = dir.Join("img");
      testing::WriteFile(path, std::string(blocks * dbs, 'x'));
      FormatOptions options;
      options.params.data_block_size = dbs;
      auto d = FormatImageFile(path, options);
      ASSERT_TRUE(d.ok()) << d.status().ToString();
      auto fd = OpenFile(path, O_RDONLY);
      ASSERT_TRUE(fd.ok());
      auto at = LocateTree(fd->get(), path);
      ASSERT_TRUE(at.ok()) << dbs << " " << blocks << ": " << at.status().ToString();
      EXPECT_EQ(*at, blocks * dbs);
    }
  }
}

TEST(LocateTree, SaysNotFoundForAPlainFile) {
  testing::TempDir dir;
  std::string path = dir.Join("plain");
  testing::WriteFile(path, std::string(1 << 20, 'p'));
  auto fd = OpenFile(path, O_RDONLY);
  ASSERT_TRUE(fd.ok());
  auto at = LocateTree(fd->get(), path);
  EXPECT_EQ(at.status().code(), Code::kNotFound);
  EXPECT_NE(at.status().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace evs::verity
