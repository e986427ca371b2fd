// The layer annotations of DESIGN.md §4 (what convert writes and Prepare's
// labels carry) and the cache directory's bitmap (DESIGN.md §3, cache/).
#include "evs/lazy/annotations.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "evs/common/file.h"
#include "evs/lazy/layer_cache.h"
#include "evs/verity/layer_builder.h"
#include "test_util.h"

namespace evs::lazy {
namespace {

using evs::testing::TempDir;
using Map = std::map<std::string, std::string>;

LayerVerity Example() {
  LayerVerity v;
  v.root_digest = Digest::Sha256Of("root");
  v.hash_offset = 8192 * 3;
  v.block_size = 4096;
  return v;
}

TEST(LayerVerityAnnotations, RoundTripThroughBothKeySets) {
  Map a;
  SetLayerVerityAnnotations(Example(), &a);
  EXPECT_EQ(a.size(), 6u);
  EXPECT_EQ(a.at("org.erofs.dmverity.root_digest"), Example().root_digest.ToString());
  EXPECT_EQ(a.at("containerd.io/snapshot/evs.org.erofs.dmverity.hash_offset"), "24576");
  auto v = ParseLayerVerity(a, "layer x");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, Example());
}

TEST(LayerVerityAnnotations, PrepareLabelsAloneAreEnough) {
  // containerd passes only the containerd.io/snapshot/ keys to Prepare.
  Map a;
  SetLayerVerityAnnotations(Example(), &a);
  Map labels;
  for (const auto& [k, v] : a) {
    if (k.rfind("containerd.io/snapshot/", 0) == 0) labels[k] = v;
  }
  labels["containerd.io/snapshot.ref"] = "sha256:chain";
  auto v = ParseLayerVerity(labels, "layer x");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, Example());
}

TEST(LayerVerityAnnotations, BareHexRootAndDefaultBlockSize) {
  Map a = {{"org.erofs.dmverity.root_digest", Example().root_digest.hex()},
           {"org.erofs.dmverity.hash_offset", "4096"}};
  auto v = ParseLayerVerity(a, "layer x");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->root_digest, Example().root_digest);
  EXPECT_EQ(v->block_size, 4096u);
}

TEST(LayerVerityAnnotations, NoAnnotationsIsNotFound) {
  auto v = ParseLayerVerity({{"other", "x"}}, "layer x");
  EXPECT_EQ(v.status().code(), Code::kNotFound);
}

TEST(LayerVerityAnnotations, MalformedValuesNameTheKey) {
  const std::pair<Map, std::string> cases[] = {
      {{{"org.erofs.dmverity.root_digest", "sha256:xyz"},
        {"org.erofs.dmverity.hash_offset", "4096"}},
       "root_digest"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()}},
       "hash_offset"},  // missing
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "12x"}},
       "hash_offset"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "-4096"}},
       "hash_offset"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "4097"}},
       "hash_offset"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "0"}},
       "hash_offset"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "18446744073709547520"}},
       "beyond any layer"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "99999999999999999999999"}},
       "hash_offset"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "4096"},
        {"org.erofs.dmverity.block_size", "3000"}},
       "block_size"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"org.erofs.dmverity.hash_offset", "4096"},
        {"org.erofs.dmverity.block_size", "8192"}},
       "block_size"},
      {{{"org.erofs.dmverity.root_digest", Example().root_digest.ToString()},
        {"containerd.io/snapshot/evs.org.erofs.dmverity.root_digest",
         Digest::Sha256Of("other").ToString()},
        {"org.erofs.dmverity.hash_offset", "4096"}},
       "disagree"},
  };
  for (const auto& [annotations, needle] : cases) {
    auto v = ParseLayerVerity(annotations, "layer sha256:abc");
    ASSERT_FALSE(v.ok()) << needle;
    EXPECT_EQ(v.status().code(), Code::kInvalidArgument) << v.status().ToString();
    EXPECT_NE(v.status().message().find(needle), std::string::npos) << v.status().message();
    EXPECT_NE(v.status().message().find("layer sha256:abc"), std::string::npos);
  }
}

TEST(LayerFileSize, IsTheSizeOfALayerFileBuiltWithThoseParameters) {
  TempDir dir;
  for (int files : {1, 40, 700}) {
    const std::string tree = dir.Join(StrCat("tree", files));
    for (int i = 0; i < files; ++i) {
      evs::testing::WriteFile(JoinPath(tree, StrCat("d", i % 7, "/f", i)),
                              std::string(i * 131, 'x'));
    }
    verity::LayerBuildOptions options;
    auto info = verity::BuildLayer(verity::LayerInput::Directory(tree),
                                   dir.Join(StrCat("layer", files)), options);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    LayerVerity v;
    v.root_digest = info->verity->root_digest;
    v.hash_offset = info->verity->hash_offset;
    v.block_size = 4096;
    auto size = LayerFileSize(v);
    ASSERT_TRUE(size.ok()) << size.status().ToString();
    EXPECT_EQ(*size, info->file_size) << files << " files";
  }
}

TEST(RemoteLayerFromLabels, NamesTheLayerFromCriOrStargzLabels) {
  Map labels;
  SetLayerVerityAnnotations(Example(), &labels);
  labels.erase("org.erofs.dmverity.root_digest");  // Prepare sees only the prefixed copies
  labels.erase("org.erofs.dmverity.hash_offset");
  labels.erase("org.erofs.dmverity.block_size");
  const std::string layer = Digest::Sha256Of("layer").ToString();
  labels["containerd.io/snapshot/cri.image-ref"] = "registry.example:5000/app:v1-evs";
  labels["containerd.io/snapshot/cri.layer-digest"] = layer;
  auto r = RemoteLayerFromLabels(labels);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->repository.Name(), "registry.example:5000/app");
  EXPECT_EQ(r->descriptor.digest.ToString(), layer);
  EXPECT_EQ(r->descriptor.media_type, "application/vnd.erofs.layer.v1");
  EXPECT_EQ(static_cast<uint64_t>(r->descriptor.size), *LayerFileSize(Example()));
  EXPECT_EQ(r->verity, Example());

  Map stargz = labels;
  stargz.erase("containerd.io/snapshot/cri.image-ref");
  stargz.erase("containerd.io/snapshot/cri.layer-digest");
  stargz["containerd.io/snapshot/remote/stargz.reference"] = "registry.example:5000/app:v1-evs";
  stargz["containerd.io/snapshot/remote/stargz.digest"] = layer;
  auto s = RemoteLayerFromLabels(stargz);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->descriptor.digest.ToString(), layer);

  Map no_image = labels;
  no_image.erase("containerd.io/snapshot/cri.image-ref");
  EXPECT_EQ(RemoteLayerFromLabels(no_image).status().code(), Code::kInvalidArgument);
  Map bad_digest = labels;
  bad_digest["containerd.io/snapshot/cri.layer-digest"] = "sha256:nothex";
  EXPECT_EQ(RemoteLayerFromLabels(bad_digest).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(
      RemoteLayerFromLabels({{"containerd.io/snapshot/cri.layer-digest", layer}}).status().code(),
      Code::kNotFound)
      << "an ordinary layer: not lazy";
}

LayerCacheIdentity Identity(uint64_t size = 10 * 4096 + 1000) {
  LayerCacheIdentity id;
  id.blob = Digest::Sha256Of("blob");
  id.size = size;
  id.block_size = 4096;
  id.hash_offset = 8 * 4096;
  id.root_digest = Digest::Sha256Of("root");
  return id;
}

TEST(LayerCache, IsASparseFileOfTheLayerSizeWithAPersistedBitmap) {
  TempDir dir;
  const std::string cache_dir = dir.Join("cache/abc");
  std::string block(4096, 'x');
  {
    auto cache = LayerCache::Open(cache_dir, Identity());
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    EXPECT_EQ((*cache)->blocks(), 11u);
    ASSERT_TRUE((*cache)->WriteBlocks(3, reinterpret_cast<const uint8_t*>(block.data()), 1).ok());
    EXPECT_TRUE((*cache)->present().Test(3));
    EXPECT_EQ((*cache)->present().Count(), 1u);
    struct stat st;
    ASSERT_EQ(::stat((*cache)->data_path().c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), Identity().size);
    EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, Identity().size) << "sparse";
  }  // destruction flushes
  auto cache = LayerCache::Open(cache_dir, Identity());
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->present().Count(), 1u);
  EXPECT_TRUE((*cache)->present().Test(3));
  std::string got(4096, '\0');
  ASSERT_TRUE((*cache)->ReadAt(3 * 4096, got.data(), got.size()).ok());
  EXPECT_TRUE(got == block);
}

TEST(LayerCache, DroppedBlocksAreForgottenAndZero) {
  TempDir dir;
  auto cache = LayerCache::Open(dir.Join("c"), Identity());
  ASSERT_TRUE(cache.ok());
  std::string blocks(2 * 4096, 'y');
  ASSERT_TRUE((*cache)->WriteBlocks(4, reinterpret_cast<const uint8_t*>(blocks.data()), 2).ok());
  (*cache)->DropBlocks(4, 1);
  EXPECT_FALSE((*cache)->present().Test(4));
  EXPECT_TRUE((*cache)->present().Test(5));
  std::string got(4096, '\1');
  ASSERT_TRUE((*cache)->ReadAt(4 * 4096, got.data(), got.size()).ok());
  EXPECT_TRUE(got == std::string(4096, '\0'));
  ASSERT_TRUE((*cache)->Flush().ok());
  cache->reset();
  auto again = LayerCache::Open(dir.Join("c"), Identity());
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->present().Test(4));
  EXPECT_TRUE((*again)->present().Test(5));
}

TEST(LayerCache, ACacheForAnotherLayerStartsEmpty) {
  TempDir dir;
  std::string block(4096, 'z');
  {
    auto cache = LayerCache::Open(dir.Join("c"), Identity());
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE((*cache)->WriteBlocks(0, reinterpret_cast<const uint8_t*>(block.data()), 1).ok());
  }
  LayerCacheIdentity other = Identity();
  other.root_digest = Digest::Sha256Of("another root");
  auto cache = LayerCache::Open(dir.Join("c"), other);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->present().Count(), 0u);
  std::string got(4096, '\1');
  ASSERT_TRUE((*cache)->ReadAt(0, got.data(), got.size()).ok());
  EXPECT_TRUE(got == std::string(4096, '\0')) << "old bytes are discarded, not reused";
}

TEST(LayerCache, OneHolderAtATime) {
  TempDir dir;
  auto first = LayerCache::Open(dir.Join("c"), Identity());
  ASSERT_TRUE(first.ok());
  auto second = LayerCache::Open(dir.Join("c"), Identity());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition) << second.status().ToString();
  EXPECT_EQ(LayerCache::Remove(dir.Join("c")).code(), Code::kFailedPrecondition);
  first->reset();
  EXPECT_TRUE(LayerCache::Remove(dir.Join("c")).ok());
  EXPECT_NE(::access(dir.Join("c").c_str(), F_OK), 0);
}

TEST(LayerCache, CompleteOnlyForTheRecordedRoot) {
  TempDir dir;
  {
    auto cache = LayerCache::Open(dir.Join("c"), Identity());
    ASSERT_TRUE(cache.ok());
    EXPECT_FALSE((*cache)->complete());
    ASSERT_TRUE((*cache)->MarkComplete().ok());
  }
  EXPECT_TRUE(LayerCache::IsComplete(dir.Join("c"), Identity().root_digest));
  EXPECT_FALSE(LayerCache::IsComplete(dir.Join("c"), Digest::Sha256Of("x")));
  auto cache = LayerCache::Open(dir.Join("c"), Identity());
  ASSERT_TRUE(cache.ok());
  EXPECT_TRUE((*cache)->complete());
  EXPECT_EQ((*cache)->present().Count(), (*cache)->blocks());
}

}  // namespace
}  // namespace evs::lazy
