// `evs verity …` and `evs layer convert --verity`, run as a user would run
// them. Tamper tests of issue 3 ("What must be shown" 2): each flipped byte
// is detected by `evs verity verify`, which names the block.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evs/common/file.h"
#include "evs/verity/format.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::Sh;
using evs::testing::ShOk;
using evs::testing::TempDir;

std::string Evs() { return evs::testing::BuildDir() + "/src/cli/evs"; }

#define REQUIRE_EVS()                                                                     \
  do {                                                                                    \
    if (::access(Evs().c_str(), X_OK) != 0) GTEST_SKIP() << "build the evs target first"; \
  } while (0)

std::string LastLine(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s.substr(s.rfind('\n') == std::string::npos ? 0 : s.rfind('\n') + 1);
}

struct Formatted {
  std::string image;
  std::string root;
  uint64_t hash_offset = 0;
  TreeLayout layout;
};

// `evs verity format` on a fresh image of `blocks` 4 KiB blocks.
Formatted FormatWithCli(const TempDir& dir, const std::string& name, uint64_t blocks) {
  Formatted f;
  f.image = dir.Join(name);
  testing::WritePatternFile(f.image, blocks * 4096, blocks);
  std::string out = ShOk(Evs() + " verity format '" + f.image + "'");
  f.root = LastLine(out);
  EXPECT_EQ(f.root.size(), 64u) << out;
  EXPECT_NE(out.find("hash offset: " + std::to_string(blocks * 4096)), std::string::npos) << out;
  EXPECT_NE(out.find("salt:        "), std::string::npos) << out;
  f.hash_offset = blocks * 4096;
  VerityParams p;
  p.data_blocks = blocks;
  f.layout = *TreeLayout::Compute(p, f.hash_offset);
  return f;
}

// Runs `evs verity verify`; returns its stderr, and whether it succeeded.
bool Verify(const Formatted& f, std::string* err) {
  auto r = Sh(Evs() + " verity verify '" + f.image + "' --root-digest " + f.root);
  *err = r.stderr_data;
  return r.exit_code == 0;
}

TEST(EvsVerityCli, FormatThenVerifyAccepts) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 2000);
  std::string err;
  EXPECT_TRUE(Verify(f, &err)) << err;
  EXPECT_TRUE(testing::VeritysetupVerify(f.image, f.hash_offset, f.root));
  // sha256:-prefixed digests work too; a wrong one fails.
  EXPECT_EQ(Sh(Evs() + " verity verify '" + f.image + "' --root-digest sha256:" + f.root).exit_code,
            0);
  std::string wrong(64, '0');
  auto r = Sh(Evs() + " verity verify '" + f.image + "' --root-digest " + wrong);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("root digest"), std::string::npos) << r.stderr_data;
}

TEST(EvsVerityCli, VerifyNamesAFlippedDataBlock) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 2000);
  testing::FlipByte(f.image, 1500 * 4096 + 4095);
  std::string err;
  EXPECT_FALSE(Verify(f, &err));
  EXPECT_NE(err.find("data block 1500 "), std::string::npos) << err;
  EXPECT_NE(err.find(f.image), std::string::npos) << err;  // the layer is named
}

TEST(EvsVerityCli, VerifyNamesAFlippedLevelZeroHashBlock) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 2000);
  const uint64_t block = f.layout.level_start[0] + 7;
  testing::FlipByte(f.image, block * 4096 + 31);
  std::string err;
  EXPECT_FALSE(Verify(f, &err));
  EXPECT_NE(err.find(StrCat("hash block ", block, " (level 0")), std::string::npos) << err;
}

TEST(EvsVerityCli, VerifyNamesAFlippedUpperHashBlock) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 20000);
  ASSERT_EQ(f.layout.levels(), 3u);
  const uint64_t block = f.layout.level_start[1];
  testing::FlipByte(f.image, block * 4096);
  std::string err;
  EXPECT_FALSE(Verify(f, &err));
  EXPECT_NE(err.find(StrCat("hash block ", block, " (level 1")), std::string::npos) << err;
}

TEST(EvsVerityCli, VerifyDetectsAFlippedSuperblockByte) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 300);
  testing::FlipByte(f.image, f.hash_offset + 72);  // data block count
  auto r = Sh(StrCat(Evs(), " verity verify '", f.image, "' --hash-offset ", f.hash_offset,
                     " --root-digest ", f.root));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("superblock"), std::string::npos) << r.stderr_data;

  Formatted g = FormatWithCli(dir, "b.img", 300);
  std::string salt = ShOk(Evs() + " verity dump '" + g.image + "' | sed -n 's/^salt: *//p'");
  salt.pop_back();
  testing::FlipByte(g.image, g.hash_offset + 88);  // first salt byte
  r = Sh(StrCat(Evs(), " verity verify '", g.image, "' --salt ", salt, " --root-digest ", g.root));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("superblock salt"), std::string::npos) << r.stderr_data;
}

TEST(EvsVerityCli, DumpPrintsTheLayout) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 20000);
  std::string out = ShOk(Evs() + " verity dump '" + f.image + "'");
  EXPECT_NE(out.find("data blocks:     20000"), std::string::npos) << out;
  EXPECT_NE(out.find(StrCat("hash offset:     ", f.hash_offset)), std::string::npos) << out;
  EXPECT_NE(out.find("levels:          3"), std::string::npos) << out;
  EXPECT_NE(out.find("  level 0:       157 blocks"), std::string::npos) << out;
}

TEST(EvsVerityCli, FormatRefusesAFormattedImage) {
  REQUIRE_EVS();
  TempDir dir;
  Formatted f = FormatWithCli(dir, "a.img", 10);
  auto r = Sh(Evs() + " verity format '" + f.image + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.stderr_data.find("already"), std::string::npos) << r.stderr_data;
}

TEST(EvsLayerConvertCli, VerityFlagPrintsTheRootDigestLast) {
  REQUIRE_EVS();
  EVS_REQUIRE_PROGRAM("veritysetup");
  TempDir dir;
  evs::testing::WriteFile(dir.Join("src/etc/hostname"), "evs\n");
  testing::WritePatternFile(dir.Join("src/usr/lib/big"), 1 << 20, 1);
  ShOk("tar -C '" + dir.Join("src") + "' -czf '" + dir.Join("layer.tar.gz") + "' .");
  for (std::string mode : {"full", "index"}) {
    std::string out_img = dir.Join(mode + ".erofs");
    std::string out = ShOk(Evs() + " layer convert --verity --mode " + mode + " '" +
                           dir.Join("layer.tar.gz") + "' '" + out_img + "'");
    std::string root = LastLine(out);
    ASSERT_EQ(root.size(), 64u) << out;
    std::string offset = ShOk("echo '" + out + "' | sed -n 's/^hash offset: //p'");
    offset.pop_back();
    EXPECT_TRUE(testing::VeritysetupVerify(out_img, std::stoull(offset), root)) << mode;
    EXPECT_EQ(Sh(Evs() + " verity verify '" + out_img + "' --root-digest " + root).exit_code, 0);
  }
}

}  // namespace
}  // namespace evs::verity
