// `evs image convert` (issue 6, "Converting images") against a real
// registry: every layer becomes an EROFS image with its dm-verity tree
// appended, named by the annotations DESIGN.md §4 lists; the config's
// diff_ids name the new layers; converting twice gives the same digests;
// what the destination has is not pushed (or converted) again.
#include <fcntl.h>
#include <gtest/gtest.h>

#include "evs/common/byte_stream.h"
#include "evs/common/file.h"
#include "evs/erofs/reader.h"
#include "evs/lazy/annotations.h"
#include "evs/lazy/image_converter.h"
#include "evs/oci/media_types.h"
#include "evs/verity/verifier.h"
#include "lazy_test_util.h"
#include "local_registry.h"
#include "test_util.h"

namespace evs::lazy {
namespace {

using evs::testing::FaultProxy;
using evs::testing::LocalRegistry;
using evs::testing::TempDir;
using testing::FileMap;
using testing::NewClient;
using testing::PatternBytes;
using testing::Ref;

FileMap BaseFiles() {
  FileMap f;
  f["etc/os-release"] = "NAME=evs-test\n";
  f["usr/lib/libbig.so"] = PatternBytes(700 << 10, 1);
  for (int i = 0; i < 30; ++i)
    f[StrCat("usr/share/doc/f", i, ".txt")] = PatternBytes(100 + i * 97, 100 + i);
  f["bin/sh"] = "->busybox";
  f["bin/busybox"] = PatternBytes(90 << 10, 2);
  return f;
}
FileMap AppFiles() {
  FileMap f;
  f["app/main.py"] = "print('hello')\n";
  f["app/data.bin"] = PatternBytes(300 << 10, 3);
  return f;
}
FileMap OtherFiles() { return {{"other/readme", "another app\n"}}; }
FileMap ArmFiles() { return {{"arch", "arm64\n"}}; }

class ImageConvert : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::HaveLocalRegistry()) return;
    dir_ = new TempDir("evs-convert-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    client_ = NewClient().release();
    testing::WriteTree(dir_->Join("base"), BaseFiles());
    testing::WriteTree(dir_->Join("app"), AppFiles());
    testing::WriteTree(dir_->Join("other"), OtherFiles());
    testing::WriteTree(dir_->Join("arm"), ArmFiles());
    const std::string h = registry_->host();
    auto app = testing::PushImage(*client_, Ref(h + "/src/app:v1"),
                                  {dir_->Join("base"), dir_->Join("app")}, dir_->path());
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = new testing::PushedImage(*app);
    auto other = testing::PushImage(*client_, Ref(h + "/src/other:v1"),
                                    {dir_->Join("base"), dir_->Join("other")}, dir_->path());
    ASSERT_TRUE(other.ok()) << other.status().ToString();
    auto multi = testing::PushIndex(
        *client_, Ref(h + "/src/multi:v1"),
        {{"linux/amd64", dir_->Join("app")}, {"linux/arm64/v8", dir_->Join("arm")}}, dir_->path());
    ASSERT_TRUE(multi.ok()) << multi.status().ToString();
  }
  static void TearDownTestSuite() {
    delete app_;
    delete client_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    ASSERT_NE(registry_, nullptr);
  }
  std::string Host() const { return registry_->host(); }

  // The blob `d` of `repo`, stored in `path`.
  void FetchToFile(const oci::Reference& repo, const oci::Descriptor& d, const std::string& path) {
    auto fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd.ok());
    FdSink sink(fd->get(), path);
    ASSERT_TRUE(client_->FetchBlob(repo, d, &sink).ok());
  }

  // The files of `files` as the EROFS layer file at `path` holds them.
  std::string CompareLayer(const std::string& path, const FileMap& files) {
    auto reader = erofs::ErofsReader::Open(path);
    if (!reader.ok()) return reader.status().ToString();
    for (const auto& [name, content] : files) {
      auto inode = (*reader)->Lookup(name);
      if (!inode.ok()) return inode.status().ToString();
      if (content.rfind("->", 0) == 0) {
        auto target = (*reader)->ReadSymlink(*inode);
        if (!target.ok() || *target != content.substr(2)) return name + ": symlink differs";
        continue;
      }
      std::string got(content.size(), '\0');
      auto n = (*reader)->ReadData(*inode, 0, got.data(), got.size());
      if (!n.ok() || *n != content.size() || got != content) return name + ": content differs";
    }
    return "";
  }

  static TempDir* dir_;
  static LocalRegistry* registry_;
  static registry::RegistryClient* client_;
  static testing::PushedImage* app_;
};
TempDir* ImageConvert::dir_ = nullptr;
LocalRegistry* ImageConvert::registry_ = nullptr;
registry::RegistryClient* ImageConvert::client_ = nullptr;
testing::PushedImage* ImageConvert::app_ = nullptr;

TEST_F(ImageConvert, CliTurnsEveryLayerIntoAVerifiableErofsLayer) {
  const std::string evs = evs::testing::BuildDir() + "/src/cli/evs";
  if (::access(evs.c_str(), X_OK) != 0) GTEST_SKIP() << "the evs binary is not built";
  auto run = evs::testing::Sh(evs + " image convert --platform linux/amd64 " + Host() +
                              "/src/app:v1 " + Host() + "/conv/cli:v1");
  ASSERT_EQ(run.exit_code, 0) << run.stderr_data;
  std::string printed = run.stdout_data;
  while (!printed.empty() && printed.back() == '\n') printed.pop_back();
  const oci::Reference dst = Ref(printed);
  ASSERT_FALSE(dst.digest.empty()) << "prints DST@digest, got: " << printed;
  EXPECT_EQ(dst.tag, "v1");

  auto fetched = client_->FetchManifest(dst);
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  auto manifest = oci::ImageManifest::Parse(fetched->bytes);
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->media_type, oci::kOciManifest);
  EXPECT_EQ(manifest->annotations.at(std::string(kSourceImageAnnotation)),
            Ref(Host() + "/src/app:v1").WithDigest(app_->top.digest).ToString());
  EXPECT_EQ(manifest->annotations.at(std::string(kSourceManifestAnnotation)),
            app_->top.digest.ToString());
  ASSERT_EQ(manifest->layers.size(), 2u);

  // The config: the source's, with diff_ids naming the EROFS layer files.
  auto config_bytes = client_->FetchSmallBlob(dst, manifest->config);
  ASSERT_TRUE(config_bytes.ok());
  auto config = oci::ImageConfig::Parse(*config_bytes);
  ASSERT_TRUE(config.ok());
  EXPECT_NE(config_bytes->find("PATH=/usr/bin:/bin"), std::string::npos) << *config_bytes;
  ASSERT_EQ(config->diff_ids.size(), 2u);

  const FileMap contents[] = {BaseFiles(), AppFiles()};
  for (size_t i = 0; i < 2; ++i) {
    const oci::Descriptor& layer = manifest->layers[i];
    SCOPED_TRACE(StrCat("layer ", i));
    EXPECT_EQ(layer.media_type, oci::kErofsLayer);
    EXPECT_EQ(config->diff_ids[i].ToString(), layer.digest.ToString())
        << "an EROFS layer's diffID is its digest";
    EXPECT_EQ(layer.annotations.at(std::string(kSourceLayerAnnotation)),
              app_->layers[i].digest.ToString());
    // Both key sets, with the same values.
    for (auto key : {kRootDigestAnnotation, kHashOffsetAnnotation, kBlockSizeAnnotation}) {
      ASSERT_EQ(layer.annotations.count(std::string(key)), 1u) << key;
      EXPECT_EQ(layer.annotations.at(std::string(key)),
                layer.annotations.at(StrCat(kEvsLabelPrefix, key)))
          << key;
    }
    auto verity = ParseLayerVerity(layer.annotations, "layer");
    ASSERT_TRUE(verity.ok()) << verity.status().ToString();
    EXPECT_EQ(verity->block_size, 4096u);
    EXPECT_EQ(LayerFileSize(*verity).value(), static_cast<uint64_t>(layer.size))
        << "the size follows from the annotations (Prepare's labels carry no size)";

    // The blob is a layer file `evs verity verify` accepts with the
    // annotated root, and holds the source layer's files.
    const std::string path = dir_->Join(StrCat("cli-layer", i));
    FetchToFile(dst, layer, path);
    verity::VerifyOptions verify;
    verify.hash_offset = verity->hash_offset;
    EXPECT_TRUE(verity::VerifyImageFile(path, verity->root_digest, verify).ok());
    EXPECT_EQ(CompareLayer(path, contents[i]), "");
  }
}

TEST_F(ImageConvert, ConvertingTwiceGivesTheSameDigests) {
  auto first =
      ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/twice-a:v1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second =
      ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/twice-b:v1"));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(first->top.digest.ToString(), second->top.digest.ToString());
  ASSERT_EQ(first->manifests.size(), 1u);
  ASSERT_EQ(second->manifests.size(), 1u);
  EXPECT_EQ(first->manifests[0].config.digest.ToString(),
            second->manifests[0].config.digest.ToString());
  ASSERT_EQ(first->manifests[0].layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(first->manifests[0].layers[i].converted.digest.ToString(),
              second->manifests[0].layers[i].converted.digest.ToString());
    EXPECT_TRUE(second->manifests[0].layers[i].converted_now) << "another repository: built again";
  }
}

TEST_F(ImageConvert, WhatTheDestinationHasIsNotPushedOrConvertedAgain) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  auto first = ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/app:v1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->layers_pushed, 2u);

  // Again, through a proxy that records every request.
  auto proxy = FaultProxy::Start(Host());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  const std::string p = (*proxy)->host();
  auto again = ConvertImage(*client_, Ref(p + "/src/app:v1"), Ref(p + "/conv/app:v1"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  // (The manifest differs: its source annotation names the proxy's host.)
  EXPECT_EQ(again->manifests[0].config.digest.ToString(),
            first->manifests[0].config.digest.ToString());
  EXPECT_EQ(again->layers_converted, 0u) << "the tag's manifest names both conversions";
  EXPECT_EQ(again->layers_pushed, 0u);
  for (const auto& r : (*proxy)->Requests()) {
    EXPECT_FALSE(r.at("method") == "POST" || r.at("method") == "PATCH" ||
                 (r.at("method") == "PUT" && r.at("path").find("/blobs/") != std::string::npos))
        << "uploaded again: " << r.at("method") << " " << r.at("path");
    if (r.at("method") == "GET" && r.at("path").find("/blobs/") != std::string::npos) {
      EXPECT_EQ(r.at("path").find(app_->layers[0].digest.hex()), std::string::npos)
          << "a source layer was downloaded again";
    }
  }

  // Another image sharing the base layer, under another tag of the same
  // repository: the base is built again (not in that tag) but not pushed.
  auto other = ConvertImage(*client_, Ref(p + "/src/other:v1"), Ref(p + "/conv/app:other"));
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  ASSERT_EQ(other->manifests[0].layers.size(), 2u);
  EXPECT_FALSE(other->manifests[0].layers[0].pushed);
  EXPECT_EQ(other->manifests[0].layers[0].converted.digest.ToString(),
            first->manifests[0].layers[0].converted.digest.ToString());
  EXPECT_TRUE(other->manifests[0].layers[1].pushed);
  EXPECT_EQ(other->layers_pushed, 1u);
}

TEST_F(ImageConvert, AllPlatformsGivesAnIndexOfConvertedManifests) {
  ImageConvertOptions options;
  options.all_platforms = true;
  auto r = ConvertImage(*client_, Ref(Host() + "/src/multi:v1"), Ref(Host() + "/conv/multi:v1"),
                        options);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->top.media_type, oci::kOciIndex);
  auto fetched = client_->FetchManifest(r->destination);
  ASSERT_TRUE(fetched.ok());
  auto index = oci::ImageIndex::Parse(fetched->bytes);
  ASSERT_TRUE(index.ok());
  ASSERT_EQ(index->manifests.size(), 2u);
  std::set<std::string> platforms;
  for (const auto& d : index->manifests) {
    ASSERT_TRUE(d.platform.has_value());
    platforms.insert(oci::Normalize(*d.platform).ToString());
    auto m = client_->FetchManifest(r->destination, d);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    auto parsed = oci::ImageManifest::Parse(m->bytes);
    ASSERT_TRUE(parsed.ok());
    ASSERT_EQ(parsed->layers.size(), 1u);
    EXPECT_EQ(parsed->layers[0].media_type, oci::kErofsLayer);
  }
  EXPECT_EQ(platforms, (std::set<std::string>{"linux/amd64", "linux/arm64/v8"}));
  EXPECT_EQ(index->annotations.count(std::string(kSourceImageAnnotation)), 1u);

  // One platform asked for: a manifest, from that platform's layer.
  ImageConvertOptions arm;
  arm.platforms = {*oci::Platform::Parse("linux/arm64")};
  auto one =
      ConvertImage(*client_, Ref(Host() + "/src/multi:v1"), Ref(Host() + "/conv/multi:arm"), arm);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->top.media_type, oci::kOciManifest);
  ASSERT_EQ(one->manifests.size(), 1u);
  const std::string path = dir_->Join("arm-layer");
  FetchToFile(one->destination, one->manifests[0].layers[0].converted, path);
  EXPECT_EQ(CompareLayer(path, ArmFiles()), "");
}

TEST_F(ImageConvert, RefusesAnImageWhoseLayersAreAlreadyErofs) {
  auto first = ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/once:v1"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto again =
      ConvertImage(*client_, Ref(Host() + "/conv/once:v1"), Ref(Host() + "/conv/twice:v1"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kFailedPrecondition) << again.status().ToString();
  EXPECT_NE(again.status().message().find("already an EROFS layer"), std::string::npos);
}

TEST_F(ImageConvert, TheOciMediaTypeChangesOnlyTheLayerDescriptors) {
  const std::string evs = evs::testing::BuildDir() + "/src/cli/evs";
  if (::access(evs.c_str(), X_OK) != 0) GTEST_SKIP() << "the evs binary is not built";
  auto erofs = ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/mt:erofs"));
  ASSERT_TRUE(erofs.ok()) << erofs.status().ToString();
  // The CLI flag, into the same repository: the layers of the first
  // conversion are reused (nothing converted or pushed), only their type
  // changes.
  auto run = evs::testing::Sh(evs + " image convert --layer-media-type oci " + Host() +
                              "/src/app:v1 " + Host() + "/conv/mt:erofs");
  ASSERT_EQ(run.exit_code, 0) << run.stderr_data;
  auto fetched = client_->FetchManifest(Ref(Host() + "/conv/mt:erofs"));
  ASSERT_TRUE(fetched.ok()) << fetched.status().ToString();
  auto manifest = oci::ImageManifest::Parse(fetched->bytes);
  ASSERT_TRUE(manifest.ok());
  EXPECT_NE(fetched->descriptor.digest.ToString(), erofs->top.digest.ToString());
  EXPECT_EQ(manifest->config.digest.ToString(), erofs->manifests[0].config.digest.ToString());
  ASSERT_EQ(manifest->layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(manifest->layers[i].media_type, kOciErofsLayer);
    EXPECT_EQ(manifest->layers[i].digest.ToString(),
              erofs->manifests[0].layers[i].converted.digest.ToString());
    EXPECT_EQ(manifest->layers[i].annotations, erofs->manifests[0].layers[i].converted.annotations);
  }
  // Converted afresh elsewhere, the same bytes; and such an image is
  // recognised as converted already.
  ImageConvertOptions oci_type;
  oci_type.layer_media_type = LayerMediaType::kOciErofs;
  auto fresh =
      ConvertImage(*client_, Ref(Host() + "/src/app:v1"), Ref(Host() + "/conv/mt2:oci"), oci_type);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(fresh->top.digest, fetched->descriptor.digest);
  auto again = ConvertImage(*client_, Ref(Host() + "/conv/mt2:oci"), Ref(Host() + "/conv/mt3:x"));
  EXPECT_EQ(again.status().code(), Code::kFailedPrecondition) << again.status().ToString();
  EXPECT_NE(again.status().message().find("already an EROFS layer"), std::string::npos);

  auto bad = evs::testing::Sh(evs + " image convert --layer-media-type tar " + Host() +
                              "/src/app:v1 " + Host() + "/conv/mt:bad");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_FALSE(ParseLayerMediaType("tar").ok());
}

TEST_F(ImageConvert, NamesTheMissingPlatform) {
  ImageConvertOptions options;
  options.platforms = {*oci::Platform::Parse("linux/s390x")};
  auto r =
      ConvertImage(*client_, Ref(Host() + "/src/multi:v1"), Ref(Host() + "/conv/none:v1"), options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("s390x"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace evs::lazy
