// Issue 3, "What must be shown" 3: a layer converted by evs and mounted with
// user-space verification shows the same tree as the same layer converted
// without verity and mounted plainly — in full and in tar-index mode.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evs/common/byte_stream.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/verity/layer_builder.h"
#include "evs/verity/verified_block_file.h"
#include "test_util.h"
#include "verity_test_util.h"

namespace evs::verity {
namespace {

using evs::testing::ShOk;
using evs::testing::TempDir;
using evs::testing::WriteFile;

// A layer with what real layers hold: nested directories, files from empty
// to several MiB, symlinks, a hardlink, modes with setuid and sticky bits,
// an xattr, and OCI whiteouts (a deleted file and an opaque directory).
std::string MakeLayerTar(const TempDir& tmp) {
  const std::string root = tmp.Join("src");
  WriteFile(root + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
  WriteFile(root + "/usr/bin/tool", std::string(70000, 't'));
  WriteFile(root + "/usr/lib/empty", "");
  testing::WritePatternFile(root + "/usr/lib/libbig.so", (5 << 20) + 4097, 3);
  WriteFile(root + "/opaque/.wh..wh..opq", "");
  WriteFile(root + "/var/.wh.deleted", "");
  ShOk("cd '" + root + "' && chmod 4755 usr/bin/tool && mkdir -p tmp && chmod 1777 tmp && " +
       "ln -s /etc/passwd usr/passwd-link && ln usr/bin/tool usr/bin/tool2 && " +
       "setfattr -n user.note -v hello etc/passwd");
  const std::string tar = tmp.Join("layer.tar.gz");
  ShOk("tar --sort=name --numeric-owner --xattrs --xattrs-include='user.*' -C '" + root +
       "' -czf '" + tar + "' .");
  return tar;
}

Result<LayerInfo> Build(const std::string& tar, const std::string& out, erofs::Mode mode,
                        bool verity) {
  auto fd = OpenFile(tar, O_RDONLY);
  if (!fd.ok()) return fd.status();
  FdSource source(fd->get(), tar);
  LayerBuildOptions options;
  options.mode = mode;
  options.verity = verity;
  options.uuid_seed = "sha256:layer";
  return BuildLayer(LayerInput::Tar(&source), out, options);
}

TEST(ConvertedLayer, VerifiedMountShowsTheSameTreeAsAPlainMount) {
  EVS_REQUIRE_ROOT();
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";
  if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "kernel lacks erofs";
  EVS_REQUIRE_PROGRAM("getfattr");
  TempDir tmp;
  const std::string tar = MakeLayerTar(tmp);
  for (erofs::Mode mode : {erofs::Mode::kFull, erofs::Mode::kTarIndex}) {
    const std::string tag = mode == erofs::Mode::kFull ? "full" : "index";
    SCOPED_TRACE(tag);
    auto plain = Build(tar, tmp.Join(tag + "-plain.erofs"), mode, /*verity=*/false);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    auto verified = Build(tar, tmp.Join(tag + "-verity.erofs"), mode, /*verity=*/true);
    ASSERT_TRUE(verified.ok()) << verified.status().ToString();

    const std::string plain_dir = tmp.Join(tag + "-plain");
    ::mkdir(plain_dir.c_str(), 0755);
    auto plain_mount =
        MountPoint::Mount(tmp.Join(tag + "-plain.erofs"), plain_dir, "erofs", MS_RDONLY, "");
    if (!plain_mount.ok())
      GTEST_SKIP() << "kernel lacks file-backed EROFS: " << plain_mount.status().message();
    const std::string verified_dir = tmp.Join(tag + "-verified");
    ::mkdir(verified_dir.c_str(), 0755);
    auto verified_mount = VerifiedErofsMount::MountLayerFile(
        tmp.Join(tag + "-verity.erofs"), verified->verity->hash_offset,
        verified->verity->root_digest, tmp.Join(tag + ".fuse"), verified_dir);
    ASSERT_TRUE(verified_mount.ok()) << verified_mount.status().ToString();

    const std::string expected = testing::DescribeTree(plain_dir);
    // The listing saw what the layer holds (so equality means something).
    EXPECT_NE(expected.find("./usr/lib/libbig.so|f|644"), std::string::npos) << expected;
    EXPECT_NE(expected.find("./usr/bin/tool|f|4755"), std::string::npos);
    EXPECT_NE(expected.find("./var/deleted|c"), std::string::npos);  // whiteout 0:0
    EXPECT_NE(expected.find("trusted.overlay.opaque=0x79"), std::string::npos);
    EXPECT_NE(expected.find("user.note=0x68656c6c6f"), std::string::npos);
    EXPECT_EQ(testing::DescribeTree(verified_dir), expected);
    EXPECT_EQ((*verified_mount)->file().stats().failures, 0u);
  }
}

}  // namespace
}  // namespace evs::verity
