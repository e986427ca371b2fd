// BuildLayer: EROFS image and verity tree in one pass, atomically.
#include "evs/verity/layer_builder.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evs/common/byte_stream.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/verity/tree_builder.h"
#include "evs/verity/verifier.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::ShOk;
using evs::testing::TempDir;
using evs::testing::WriteFile;

// A small layer: files of several sizes (inline tails, whole blocks, a
// multi-block file), a symlink, a hardlink, an empty directory.
void MakeTree(const std::string& root) {
  WriteFile(root + "/etc/hostname", "evs\n");
  WriteFile(root + "/usr/share/doc/a.txt", std::string(10000, 'a'));
  WriteFile(root + "/usr/share/doc/b.txt", std::string(4096, 'b'));
  testing::WritePatternFile(root + "/usr/lib/libbig.so", (3 << 20) + 123, 11);
  ShOk("cd '" + root + "' && ln -s ../etc/hostname usr/hostname && ln usr/share/doc/a.txt " +
       "usr/a-link && mkdir -p var/empty");
}

// Tars `root` (sorted, numeric owners) to `out`, compressed by `filter`
// ("" | "gzip" | "zstd").
void MakeTar(const std::string& root, const std::string& out, const std::string& filter) {
  ASSERT_TRUE(MakeDirs(Dirname(out)).ok());
  std::string cmd = "tar --sort=name --numeric-owner -C '" + root + "' -cf - .";
  if (!filter.empty()) cmd += " | " + filter + " -c";
  ShOk(cmd + " > '" + out + "'");
}

Result<LayerInfo> BuildFromFile(const std::string& blob, const std::string& out,
                                LayerBuildOptions options) {
  auto fd = OpenFile(blob, O_RDONLY);
  if (!fd.ok()) return fd.status();
  FdSource source(fd->get(), blob);
  return BuildLayer(LayerInput::Tar(&source), out, options);
}

std::string Sha256Hex(const std::string& path) {
  return ShOk("sha256sum '" + path + "' | cut -c1-64").substr(0, 64);
}

TEST(BuildLayer, GzipTarGivesAVerifiableImageAndTheLayerDigests) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  TempDir dir;
  MakeTree(dir.Join("src"));
  MakeTar(dir.Join("src"), dir.Join("layer.tar"), "");
  MakeTar(dir.Join("src"), dir.Join("layer.tar.gz"), "gzip");
  LayerBuildOptions options;
  options.name = "layer sha256:test";
  options.compute_digests = true;
  ASSERT_TRUE(MakeDirs(dir.Join("out")).ok());
  auto info = BuildFromFile(dir.Join("layer.tar.gz"), dir.Join("out/layer.erofs"), options);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_TRUE(info->verity.has_value());
  const VerityDescriptor& v = *info->verity;
  EXPECT_EQ(info->compression, tar::Compression::kGzip);
  ASSERT_TRUE(info->diff_id.has_value());
  ASSERT_TRUE(info->blob_digest.has_value());
  EXPECT_EQ(info->diff_id->hex(), Sha256Hex(dir.Join("layer.tar")));
  EXPECT_EQ(info->blob_digest->hex(), Sha256Hex(dir.Join("layer.tar.gz")));
  EXPECT_EQ(v.hash_offset, info->image.image_size);
  EXPECT_EQ(v.params.data_block_size, 4096u);
  EXPECT_EQ(v.params.salt.size(), 32u);
  struct stat st;
  ASSERT_EQ(::stat(dir.Join("out/layer.erofs").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), info->file_size);
  EXPECT_TRUE(VerifyImageFile(dir.Join("out/layer.erofs"), v.root_digest).ok());
  EXPECT_TRUE(
      testing::VeritysetupVerify(dir.Join("out/layer.erofs"), v.hash_offset, v.root_digest.hex()));
  // Nothing but the layer file in its directory.
  EXPECT_EQ(ShOk("ls -A '" + dir.Join("out") + "'"), "layer.erofs\n");
}

TEST(BuildLayer, OnePassTreeEqualsFormattingTheImageAfterwards) {
  TempDir dir;
  MakeTree(dir.Join("src"));
  MakeTar(dir.Join("src"), dir.Join("layer.tar.zst"), "zstd");
  LayerBuildOptions options;
  options.uuid_seed = "sha256:seed";
  options.salt = "0123456789abcdef";
  auto with = BuildFromFile(dir.Join("layer.tar.zst"), dir.Join("with.erofs"), options);
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  options.verity = false;
  auto without = BuildFromFile(dir.Join("layer.tar.zst"), dir.Join("without.erofs"), options);
  ASSERT_TRUE(without.ok()) << without.status().ToString();
  EXPECT_FALSE(without->verity.has_value());
  // The EROFS part is the same image; formatting it in place gives the
  // same file as building the tree while writing.
  FormatOptions format;
  format.params.salt = options.salt;
  format.params.uuid = DeriveUuid(options.uuid_seed);
  auto formatted = FormatImageFile(dir.Join("without.erofs"), format);
  ASSERT_TRUE(formatted.ok()) << formatted.status().ToString();
  EXPECT_EQ(formatted->root_digest, with->verity->root_digest);
  EXPECT_TRUE(ReadFileOrDie(dir.Join("with.erofs")) == ReadFileOrDie(dir.Join("without.erofs")));
}

TEST(BuildLayer, TarIndexModeUses512ByteDataBlocks) {
  EVS_REQUIRE_PROGRAM("veritysetup");
  TempDir dir;
  MakeTree(dir.Join("src"));
  MakeTar(dir.Join("src"), dir.Join("layer.tar"), "");
  LayerBuildOptions options;
  options.mode = erofs::Mode::kTarIndex;
  auto info = BuildFromFile(dir.Join("layer.tar"), dir.Join("index.erofs"), options);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->image.block_size, 512u);
  EXPECT_EQ(info->verity->params.data_block_size, 512u);
  EXPECT_EQ(info->verity->params.hash_block_size, 4096u);
  EXPECT_TRUE(VerifyImageFile(dir.Join("index.erofs"), info->verity->root_digest).ok());
  EXPECT_TRUE(testing::VeritysetupVerify(dir.Join("index.erofs"), info->verity->hash_offset,
                                         info->verity->root_digest.hex()));
  // The embedded tar is still the layer's tar (its diffID is checkable).
  std::string image = ReadFileOrDie(dir.Join("index.erofs"));
  EXPECT_TRUE(image.substr(info->image.tar_offset, info->image.tar_size) ==
              ReadFileOrDie(dir.Join("layer.tar")));
}

TEST(BuildLayer, DirectoryInputGivesAVerifiableImage) {
  TempDir dir;
  MakeTree(dir.Join("src"));
  LayerBuildOptions options;
  options.random_salt = false;
  auto info = BuildLayer(LayerInput::Directory(dir.Join("src")), dir.Join("dir.erofs"), options);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_FALSE(info->diff_id.has_value());
  EXPECT_TRUE(info->verity->params.salt.empty());
  EXPECT_TRUE(VerifyImageFile(dir.Join("dir.erofs"), info->verity->root_digest).ok());
}

TEST(BuildLayer, CorruptInputLeavesNothingBehind) {
  TempDir dir;
  MakeTree(dir.Join("src"));
  MakeTar(dir.Join("src"), dir.Join("layer.tar.gz"), "gzip");
  // Cut the gzip stream in the middle.
  std::string blob = ReadFileOrDie(dir.Join("layer.tar.gz"));
  WriteFile(dir.Join("out/cut.tar.gz"), blob.substr(0, blob.size() / 2));
  auto info = BuildFromFile(dir.Join("out/cut.tar.gz"), dir.Join("out/layer.erofs"), {});
  EXPECT_FALSE(info.ok());
  EXPECT_EQ(ShOk("ls -A '" + dir.Join("out") + "'"), "cut.tar.gz\n");
}

TEST(BuildLayer, WrongDiffIdIsDataLossAndLeavesNothing) {
  TempDir dir;
  MakeTree(dir.Join("src"));
  MakeTar(dir.Join("src"), dir.Join("out/layer.tar"), "");
  LayerBuildOptions options;
  options.expected_diff_id = Digest::Sha256Of("something else");
  auto info = BuildFromFile(dir.Join("out/layer.tar"), dir.Join("out/layer.erofs"), options);
  EXPECT_EQ(info.status().code(), Code::kDataLoss) << info.status().ToString();
  EXPECT_EQ(ShOk("ls -A '" + dir.Join("out") + "'"), "layer.tar\n");
}

TEST(BuildLayer, RefusesToReplaceUnlessAsked) {
  TempDir dir;
  MakeTree(dir.Join("src"));
  WriteFile(dir.Join("layer.erofs"), "old");
  auto info = BuildLayer(LayerInput::Directory(dir.Join("src")), dir.Join("layer.erofs"), {});
  EXPECT_EQ(info.status().code(), Code::kAlreadyExists);
  EXPECT_EQ(ReadFileOrDie(dir.Join("layer.erofs")), "old");
  LayerBuildOptions options;
  options.replace = true;
  info = BuildLayer(LayerInput::Directory(dir.Join("src")), dir.Join("layer.erofs"), options);
  EXPECT_TRUE(info.ok()) << info.status().ToString();
}

TEST(BuildLayer, RejectsAmbiguousInput) {
  StringSource source("");
  LayerInput both = LayerInput::Tar(&source);
  both.directory = "/tmp";
  EXPECT_EQ(BuildLayer(both, "/tmp/x.erofs", {}).status().code(), Code::kInvalidArgument);
  LayerBuildOptions index;
  index.mode = erofs::Mode::kTarIndex;
  EXPECT_EQ(BuildLayer(LayerInput::Directory("/tmp"), "/tmp/x.erofs", index).status().code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace evs::verity
