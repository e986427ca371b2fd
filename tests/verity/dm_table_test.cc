// The dm-verity table evs loads (reference §4.3, VDOC verity.rst).
#include <gtest/gtest.h>

#include "evs/verity/dm_verity.h"

namespace evs::verity {
namespace {

const std::string kRoot = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076";

VerityDescriptor Descriptor(uint64_t blocks, uint32_t dbs, std::string salt, uint64_t offset) {
  VerityDescriptor d;
  d.params.data_blocks = blocks;
  d.params.data_block_size = dbs;
  d.params.salt = std::move(salt);
  d.hash_offset = offset;
  d.root_digest = *Digest::Parse("sha256:" + kRoot);
  return d;
}

TEST(DmVerityTable, MatchesTheKernelDocumentationExample) {
  // verity.rst: "0 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1
  // sha256 <root> <salt>" — a separate hash device whose superblock is at 0.
  auto t =
      DmVerityTable::ForLayer(Descriptor(262144, 4096, std::string("\x12\x34", 2), 0), "/dev/sda1");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  t->hash_device = "/dev/sda2";
  EXPECT_EQ(t->ToString(),
            "0 2097152 verity 1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 " + kRoot + " 1234");
}

TEST(DmVerityTable, AppendedTreeStartsAfterTheSuperblock) {
  // 1000 blocks of 4096: superblock at 4096000, tree at hash block 1001.
  auto t = DmVerityTable::ForLayer(Descriptor(1000, 4096, "", 4096000), "/dev/loop3");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ToString(),
            "0 8000 verity 1 /dev/loop3 /dev/loop3 4096 4096 1000 1001 sha256 " + kRoot + " -");
  // A tar-index image: 512-byte data blocks (reference §0.4), 4096-byte hash
  // blocks; 3 data blocks end at 1536, the superblock at 2048, the tree at
  // the next 4096 boundary.
  t = DmVerityTable::ForLayer(Descriptor(3, 512, "", 1536), "/dev/loop3");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->ToString(),
            "0 3 verity 1 /dev/loop3 /dev/loop3 512 4096 3 1 sha256 " + kRoot + " -");
}

TEST(DmVerityTable, OptionalArgumentsOnlyWhenAsked) {
  DmVerityOptions o;
  o.on_corruption = CorruptionPolicy::kRestart;
  auto t = DmVerityTable::ForLayer(Descriptor(8, 4096, "", 32768), "/dev/loop0", o);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->ToString().ends_with(" - 1 restart_on_corruption")) << t->ToString();
  o.on_corruption = CorruptionPolicy::kIgnore;
  o.check_at_most_once = true;
  t = DmVerityTable::ForLayer(Descriptor(8, 4096, "", 32768), "/dev/loop0", o);
  EXPECT_TRUE(t->ToString().ends_with(" - 2 ignore_corruption check_at_most_once"))
      << t->ToString();
  EXPECT_EQ(*ParseCorruptionPolicy("eio"), CorruptionPolicy::kFailRead);
  EXPECT_EQ(*ParseCorruptionPolicy("panic"), CorruptionPolicy::kPanic);
  EXPECT_FALSE(ParseCorruptionPolicy("reboot").ok());
}

TEST(DmVerityTable, NamesDevicesAfterTheRootDigest) {
  Digest root = *Digest::Parse("sha256:" + kRoot);
  EXPECT_EQ(DmVerityDeviceName(root), "evs-verity-" + kRoot);
  EXPECT_LT(DmVerityDeviceName(root).size(), 128u);  // DM_NAME_LEN
}

}  // namespace
}  // namespace evs::verity
