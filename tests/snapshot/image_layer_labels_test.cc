// ParseImageLayerLabels: what a Prepare's labels say about the layer evs
// would fetch. Labels come from clients and image annotations: hostile input.
#include <gtest/gtest.h>

#include "evs/snapshot/registry_layer_source.h"

namespace evs::snapshot {
namespace {

const std::string kLayer = Digest::Sha256Of("layer").ToString();
const std::string kNext = Digest::Sha256Of("next").ToString();
const std::string kManifest = Digest::Sha256Of("manifest").ToString();

TEST(ImageLayerLabels, TheCriLabelsNameImageLayerManifestAndTheLayersAfter) {
  auto l = ParseImageLayerLabels({{kCriImageRefLabel, "127.0.0.1:5000/app:v1"},
                                  {kCriLayerDigestLabel, kLayer},
                                  {kCriManifestDigestLabel, kManifest},
                                  {kCriImageLayersLabel, kLayer + "," + kNext},
                                  {"containerd.io/snapshot.ref", "sha256:whatever"}});
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->image.registry, "127.0.0.1:5000");
  EXPECT_EQ(l->image.repository, "app");
  EXPECT_EQ(l->layer.ToString(), kLayer);
  ASSERT_TRUE(l->manifest.has_value());
  EXPECT_EQ(l->manifest->ToString(), kManifest);
  ASSERT_EQ(l->layers.size(), 2u);
  EXPECT_EQ(l->layers[1].ToString(), kNext);
}

TEST(ImageLayerLabels, CtrRemoteSendsStargzLabelsWithoutAManifest) {
  auto l = ParseImageLayerLabels({{kStargzReferenceLabel, "docker.io/library/python:3.11"},
                                  {kStargzDigestLabel, kLayer},
                                  {kStargzLayersLabel, kLayer}});
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->image.repository, "library/python");
  EXPECT_FALSE(l->manifest.has_value());
  EXPECT_EQ(l->layers.size(), 1u);
}

TEST(ImageLayerLabels, WithoutImageLabelsItIsNotFound) {
  // A plain `ctr images pull`: containerd sends only the ref.
  EXPECT_EQ(ParseImageLayerLabels({{"containerd.io/snapshot.ref", "sha256:x"}}).status().code(),
            Code::kNotFound);
  EXPECT_EQ(ParseImageLayerLabels({{kCriImageRefLabel, "a/b:c"}}).status().code(), Code::kNotFound);
  EXPECT_EQ(ParseImageLayerLabels({{kCriLayerDigestLabel, kLayer}}).status().code(),
            Code::kNotFound);
}

TEST(ImageLayerLabels, MalformedValuesAreInvalidArgumentNamingTheLabel) {
  struct Case {
    Labels labels;
    std::string names;
  } cases[] = {
      {{{kCriImageRefLabel, "reg.io/UPPER"}, {kCriLayerDigestLabel, kLayer}}, kCriImageRefLabel},
      {{{kCriImageRefLabel, ""}, {kCriLayerDigestLabel, kLayer}}, kCriImageRefLabel},
      {{{kCriImageRefLabel, "a/b"}, {kCriLayerDigestLabel, "sha256:abc"}}, kCriLayerDigestLabel},
      {{{kCriImageRefLabel, "a/b"}, {kCriLayerDigestLabel, "md5:" + std::string(32, 'a')}},
       kCriLayerDigestLabel},
      {{{kCriImageRefLabel, "a/b"},
        {kCriLayerDigestLabel, kLayer},
        {kCriManifestDigestLabel, "../../x"}},
       kCriManifestDigestLabel},
      {{{kCriImageRefLabel, "a/b"},
        {kCriLayerDigestLabel, kLayer},
        {kCriImageLayersLabel, kLayer + ",,"}},
       kCriImageLayersLabel},
      {{{kStargzReferenceLabel, "a/b"},
        {kStargzDigestLabel, kLayer},
        {kStargzLayersLabel, kLayer + ",garbage"}},
       kStargzLayersLabel},
      {{{kCriImageRefLabel, std::string("a/b\0c", 5)}, {kCriLayerDigestLabel, kLayer}},
       kCriImageRefLabel},
  };
  for (const Case& c : cases) {
    auto l = ParseImageLayerLabels(c.labels);
    ASSERT_FALSE(l.ok()) << c.names;
    EXPECT_EQ(l.status().code(), Code::kInvalidArgument) << l.status().ToString();
    EXPECT_NE(l.status().message().find(c.names), std::string::npos) << l.status().ToString();
  }
}

TEST(ImageLayerLabels, AnOverlongLayerListIsCutNotTrusted) {
  std::string list;
  for (int i = 0; i < 5000; ++i) list += (i ? "," : "") + kNext;
  auto l = ParseImageLayerLabels(
      {{kCriImageRefLabel, "a/b"}, {kCriLayerDigestLabel, kLayer}, {kCriImageLayersLabel, list}});
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->layers.size(), 1000u);
}

}  // namespace
}  // namespace evs::snapshot
