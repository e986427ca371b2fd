// `evs image inspect|pull|push` as a user runs them, against a real
// registry; skopeo and umoci read what evs writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include "evs/common/file.h"
#include "evs/oci/image_layout.h"
#include "evs/oci/media_types.h"
#include "local_registry.h"
#include "test_image.h"
#include "test_util.h"

namespace evs {
namespace {

using evs::testing::LocalRegistry;
using evs::testing::Sh;
using evs::testing::TempDir;
using evs::testing::TestImage;

std::string Evs() { return evs::testing::BuildDir() + "/src/cli/evs"; }

class ImageCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::HaveLocalRegistry() || !evs::testing::HaveProgram("skopeo")) return;
    dir_ = new TempDir("evs-cli-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    auto image = evs::testing::BuildTestImage(dir_->path(), {"linux/amd64", "linux/arm64/v8"}, 3,
                                              200 << 10, "v1");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    image_ = new TestImage(std::move(*image));
    ASSERT_TRUE(evs::testing::SkopeoPush(*image_, registry_->host() + "/cli/app:v1").ok());
  }
  static void TearDownTestSuite() {
    delete image_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_PROGRAM("skopeo");
    if (::access(Evs().c_str(), X_OK) != 0) GTEST_SKIP() << "evs CLI not built at " << Evs();
    ASSERT_NE(image_, nullptr);
    ref_ = registry_->host() + "/cli/app:v1";
  }
  SubprocessResult Run(const std::string& args) {
    return Sh(StrCat("'", Evs(), "' ", args, " --hosts-dir /nonexistent 2>'", work_.Join("stderr"),
                     "'"));
  }
  std::string Stderr() { return evs::testing::ReadFileOrDie(work_.Join("stderr")); }

  static TempDir* dir_;
  static LocalRegistry* registry_;
  static TestImage* image_;
  TempDir work_;
  std::string ref_;
};
TempDir* ImageCli::dir_ = nullptr;
LocalRegistry* ImageCli::registry_ = nullptr;
TestImage* ImageCli::image_ = nullptr;

TEST_F(ImageCli, InspectShowsDigestPlatformsAndLayers) {
  auto r = Run("image inspect " + ref_ + " --platform linux/arm64");
  ASSERT_EQ(r.exit_code, 0) << Stderr();
  const std::string& out = r.stdout_data;
  EXPECT_NE(out.find("digest:    " + image_->index.digest.ToString()), std::string::npos) << out;
  EXPECT_NE(out.find("linux/amd64"), std::string::npos);
  EXPECT_NE(out.find(image_->manifests["linux/arm64/v8"].digest.ToString() + "  (selected)"),
            std::string::npos)
      << out;
  for (const auto& layer : image_->layers["linux/arm64/v8"]) {
    EXPECT_NE(out.find(layer.digest.ToString() + "  " + std::string(oci::kOciLayerTarGzip)),
              std::string::npos)
        << out;
  }
  EXPECT_NE(out.find("in 3 layers"), std::string::npos);
}

TEST_F(ImageCli, PullWritesALayoutThatSkopeoAndUmociRead) {
  std::string layout = work_.Join("pulled");
  auto r = Run("image pull " + ref_ + " --oci-layout " + layout + " --platform linux/amd64");
  ASSERT_EQ(r.exit_code, 0) << Stderr();
  EXPECT_NE(r.stdout_data.find("pulled " + ref_), std::string::npos) << r.stdout_data;
  auto raw = Sh("skopeo inspect --raw oci:" + layout + ":v1");
  ASSERT_EQ(raw.exit_code, 0) << raw.stderr_data;
  EXPECT_EQ(raw.stdout_data, image_->blobs.at(image_->manifests["linux/amd64"].digest));
  for (const auto& layer : image_->layers["linux/amd64"]) {
    EXPECT_EQ(evs::testing::ReadFileOrDie(layout + "/blobs/sha256/" + layer.digest.hex()),
              image_->blobs.at(layer.digest));
  }
  if (evs::testing::HaveProgram("umoci") && evs::testing::IsRoot()) {
    // umoci checks every layer against the config's diff_ids as it unpacks.
    auto unpack = Sh("umoci unpack --image " + layout + ":v1 " + work_.Join("bundle") + " 2>&1");
    EXPECT_EQ(unpack.exit_code, 0) << unpack.stdout_data;
    EXPECT_EQ(evs::testing::ReadFileOrDie(work_.Join("bundle/rootfs/base.txt")), "hello\n");
  }
  // Pulling again finds every blob in place.
  auto again = Run("image pull " + ref_ + " --oci-layout " + layout + " --platform linux/amd64");
  ASSERT_EQ(again.exit_code, 0) << Stderr();
  EXPECT_NE(again.stdout_data.find(": 0 blobs"), std::string::npos) << again.stdout_data;
}

TEST_F(ImageCli, PullAllPlatformsKeepsTheIndexAndPushRoundTrips) {
  std::string layout = work_.Join("all");
  auto r = Run("image pull " + ref_ + " --oci-layout " + layout + " --all-platforms");
  ASSERT_EQ(r.exit_code, 0) << Stderr();
  auto index = oci::ImageLayout::Open(layout)->ReadIndex();
  ASSERT_TRUE(index.ok());
  ASSERT_EQ(index->manifests.size(), 1u);
  EXPECT_EQ(index->manifests[0].digest, image_->index.digest);
  for (const auto& [digest, bytes] : image_->blobs) {
    EXPECT_EQ(evs::testing::ReadFileOrDie(layout + "/blobs/sha256/" + digest.hex()), bytes);
  }
  std::string dest = registry_->host() + "/cli/copy:v9";
  // 1 shared base layer + 2 platforms × 2 own layers + 2 configs.
  auto pushed = Run("image push " + layout + " " + dest + " --chunk-size 100000");
  ASSERT_EQ(pushed.exit_code, 0) << Stderr();
  EXPECT_NE(pushed.stdout_data.find("7 blobs uploaded"), std::string::npos) << pushed.stdout_data;
  auto raw = Sh("skopeo inspect --raw --tls-verify=false docker://" + dest);
  ASSERT_EQ(raw.exit_code, 0) << raw.stderr_data;
  EXPECT_EQ(raw.stdout_data, image_->blobs.at(image_->index.digest));
  auto again = Run("image push " + layout + " " + dest);
  ASSERT_EQ(again.exit_code, 0) << Stderr();
  EXPECT_NE(again.stdout_data.find("0 blobs uploaded"), std::string::npos) << again.stdout_data;
  EXPECT_NE(again.stdout_data.find("7 already there"), std::string::npos) << again.stdout_data;
}

TEST_F(ImageCli, PushNeedsANameWhenTheLayoutHoldsSeveral) {
  std::string layout = image_->layout_dir;
  auto layout_copy = work_.Join("several");
  evs::testing::ShOk("cp -r '" + layout + "' '" + layout_copy + "'");
  auto l = oci::ImageLayout::Open(layout_copy);
  ASSERT_TRUE(l.ok());
  ASSERT_TRUE(l->AddToIndex(image_->manifests["linux/amd64"], "amd64-only").ok());
  auto r = Run("image push " + layout_copy + " " + registry_->host() + "/cli/several:v1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(Stderr().find("choose one with --name"), std::string::npos) << Stderr();
  EXPECT_NE(Stderr().find("amd64-only"), std::string::npos) << Stderr();
  auto named = Run("image push " + layout_copy + " " + registry_->host() +
                   "/cli/several:v1 --name amd64-only");
  EXPECT_EQ(named.exit_code, 0) << Stderr();
}

TEST_F(ImageCli, CorruptedPullFailsAndLeavesNoBlob) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  auto proxy = evs::testing::FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","fault":"corrupt","after_bytes":1000}])");
  ASSERT_TRUE(proxy.ok());
  std::string layout = work_.Join("corrupt");
  auto r = Run("image pull " + (*proxy)->host() + "/cli/app:v1 --oci-layout " + layout +
               " --platform linux/amd64 --jobs 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(Stderr().find("hashes to"), std::string::npos) << Stderr();
  // No layer (each was altered in flight) and no temporary file: nothing
  // half-written. The config, shorter than the altered offset, verified and
  // may stay (a later pull reuses it).
  for (const auto& layer : image_->layers["linux/amd64"]) {
    EXPECT_FALSE(oci::ImageLayout::Open(layout)->HasBlob(layer.digest, layer.size));
  }
  auto temps = Sh("find '" + layout + "' -name '*.tmp*'");
  EXPECT_EQ(temps.stdout_data, "") << temps.stdout_data;
  EXPECT_EQ(oci::ImageLayout::Open(layout)->ReadIndex()->manifests.size(), 0u);
}

}  // namespace
}  // namespace evs
