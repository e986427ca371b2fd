// The oci module's contracts: references, media types, platforms, manifests,
// chain IDs and image layouts. Real tools (sha256sum, skopeo) are the oracles
// where one exists.
#include <gtest/gtest.h>

#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/oci/chain_id.h"
#include "evs/oci/image_layout.h"
#include "evs/oci/manifest.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"
#include "test_util.h"

namespace evs::oci {
namespace {

using evs::testing::Sh;
using evs::testing::ShOk;
using evs::testing::TempDir;

const std::string kHexA(64, 'a');
const std::string kDigestA = "sha256:" + kHexA;

struct RefCase {
  std::string text;
  std::string registry, repository, tag, digest;
};

TEST(Reference, NormalisesTheWayDockerAndContainerdDo) {
  const RefCase cases[] = {
      {"ubuntu", "docker.io", "library/ubuntu", "latest", ""},
      {"ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", ""},
      {"library/ubuntu", "docker.io", "library/ubuntu", "latest", ""},
      {"docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", ""},
      {"index.docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", ""},
      {"registry-1.docker.io/org/app:v1", "docker.io", "org/app", "v1", ""},
      {"myorg/app", "docker.io", "myorg/app", "latest", ""},
      {"quay.io/coreos/etcd:v3.5", "quay.io", "coreos/etcd", "v3.5", ""},
      {"localhost/app", "localhost", "app", "latest", ""},
      {"localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", ""},
      {"127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", ""},
      {"[::1]:5000/app:x", "[::1]:5000", "app", "x", ""},
      {"[fe80::1]/app", "[fe80::1]", "app", "latest", ""},
      {"Registry.Example.COM/app", "Registry.Example.COM", "app", "latest", ""},
      {"app@" + kDigestA, "docker.io", "library/app", "", kDigestA},
      {"host.io/app:t@" + kDigestA, "host.io", "app", "t", kDigestA},
      {"a/b__c/d-e--f/g.h", "docker.io", "a/b__c/d-e--f/g.h", "latest", ""},
      {"app:" + std::string(128, 'x'), "docker.io", "library/app", std::string(128, 'x'), ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto ref = Reference::Parse(c.text);
    ASSERT_TRUE(ref.ok()) << ref.status().ToString();
    EXPECT_EQ(ref->registry, c.registry);
    EXPECT_EQ(ref->repository, c.repository);
    EXPECT_EQ(ref->tag, c.tag);
    EXPECT_EQ(ref->digest.empty() ? "" : ref->digest.ToString(), c.digest);
    // The printed form parses back to the same reference.
    auto again = Reference::Parse(ref->ToString());
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, *ref);
  }
}

TEST(Reference, RejectsInvalidWithAMessageNamingTheProblem) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "empty"},
      {"Ubuntu", "lowercase"},
      {"docker.io/Library/x", "lowercase"},
      {"app:", "invalid tag"},
      {"app:-x", "invalid tag"},
      {"app:" + std::string(129, 'x'), "invalid tag"},
      {"app@sha256:1234", "invalid digest"},
      {"app@md5:" + std::string(32, 'a'), "invalid digest"},
      {"app@sha256:" + std::string(64, 'A'), "invalid digest"},
      {"host:99999/app", "invalid port"},
      {"host:0/app", "invalid port"},
      {"host:/app", "invalid port"},
      {"[::1/app", "IPv6"},
      {"[zz::1]:5000/app", "IPv6"},
      {"-host.io/app", "invalid host name"},
      {"host..io/app", "invalid host name"},
      {"host.io/", "missing repository"},
      {"host.io/a//b", "invalid repository path component"},
      {"a/-b", "invalid repository path component"},
      {"a/b_", "invalid repository path component"},
      {"a/b___c", "invalid repository path component"},
      {"a b", "space"},
      {"app\n", "control"},
      {"host.io/" + std::string(250, 'a'), "longer than 255"},
  };
  for (const auto& [text, why] : cases) {
    SCOPED_TRACE(text);
    auto ref = Reference::Parse(text);
    ASSERT_FALSE(ref.ok()) << ref->ToString();
    EXPECT_EQ(ref.status().code(), Code::kInvalidArgument);
    EXPECT_NE(ref.status().message().find(why), std::string::npos) << ref.status().message();
    EXPECT_NE(ref.status().message().find("image reference"), std::string::npos);
  }
}

TEST(Reference, ManifestReferencePrefersTheDigest) {
  auto ref = Reference::Parse("host.io/app:t@" + kDigestA);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->ManifestReference(), kDigestA);
  EXPECT_EQ(ref->WithTag("v2").ManifestReference(), "v2");
  EXPECT_EQ(ref->WithTag("v2").ToString(), "host.io/app:v2");
  EXPECT_EQ(Reference::Parse("host.io/app:t")->ManifestReference(), "t");
}

TEST(Reference, LocalhostDetection) {
  EXPECT_TRUE(IsLocalhost("localhost"));
  EXPECT_TRUE(IsLocalhost("localhost:5000"));
  EXPECT_TRUE(IsLocalhost("127.0.0.1:5000"));
  EXPECT_TRUE(IsLocalhost("127.1.2.3"));
  EXPECT_TRUE(IsLocalhost("[::1]:5000"));
  EXPECT_FALSE(IsLocalhost("docker.io"));
  EXPECT_FALSE(IsLocalhost("10.0.0.1:5000"));
  EXPECT_FALSE(IsLocalhost("localhost.example.com"));
  EXPECT_FALSE(IsLocalhost("[::2]:5000"));
}

TEST(MediaTypes, ClassifiesLayers) {
  EXPECT_EQ(*ClassifyLayer(kOciLayerTar), LayerFormat::kTar);
  EXPECT_EQ(*ClassifyLayer(kOciLayerTarGzip), LayerFormat::kTarGzip);
  EXPECT_EQ(*ClassifyLayer(kDockerLayerTarGzip), LayerFormat::kTarGzip);
  EXPECT_EQ(*ClassifyLayer(kDockerLayerForeignTarGzip), LayerFormat::kTarGzip);
  EXPECT_EQ(*ClassifyLayer(kOciLayerNondistributableTarZstd), LayerFormat::kTarZstd);
  EXPECT_EQ(*ClassifyLayer(kOciLayerTarZstd), LayerFormat::kTarZstd);
  EXPECT_EQ(*ClassifyLayer("application/vnd.erofs.layer.v1"), LayerFormat::kErofs);
  auto unknown = ClassifyLayer("application/vnd.example.layer+lz4");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), Code::kUnimplemented);
  EXPECT_NE(unknown.status().message().find("vnd.example.layer+lz4"), std::string::npos);
  EXPECT_TRUE(IsImageIndexMediaType(kDockerManifestList));
  EXPECT_TRUE(IsImageManifestMediaType(std::string(kOciManifest) + "; charset=utf-8"));
  EXPECT_FALSE(IsImageManifestMediaType(kOciIndex));
}

TEST(Platform, NormalisesArchitectureAliases) {
  const std::pair<std::string, std::string> cases[] = {
      {"linux/x86_64", "linux/amd64"},     {"linux/amd64/v1", "linux/amd64"},
      {"linux/aarch64", "linux/arm64/v8"}, {"linux/arm64", "linux/arm64/v8"},
      {"linux/armhf", "linux/arm/v7"},     {"linux/armel", "linux/arm/v6"},
      {"linux/arm", "linux/arm/v7"},       {"linux/arm/7", "linux/arm/v7"},
      {"linux/i686", "linux/386"},         {"Linux/AMD64", "linux/amd64"},
      {"arm64", "linux/arm64/v8"},         {"ppc64le", "linux/ppc64le"},
      {"windows/amd64", "windows/amd64"},
  };
  for (const auto& [in, want] : cases) {
    auto p = Platform::Parse(in);
    ASSERT_TRUE(p.ok()) << in << ": " << p.status().ToString();
    EXPECT_EQ(p->ToString(), want) << in;
  }
  for (const char* bad : {"", "linux/amd64/v1/x", "linux//v7", "linux/am d64", "foo/bar/baz"}) {
    auto p = Platform::Parse(bad);
    EXPECT_FALSE(p.ok()) << bad;
    if (!p.ok()) {
      EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
    }
  }
}

TEST(Platform, HostPlatformIsNormalisedLinux) {
  Platform host = HostPlatform();
  EXPECT_EQ(host.os, "linux");
  EXPECT_EQ(Normalize(host), host);
  std::string uname = ShOk("uname -m");
  while (!uname.empty() && uname.back() == '\n') uname.pop_back();
  EXPECT_EQ(host.architecture, Platform::Parse("linux/" + uname)->architecture);
}

TEST(Platform, OlderVariantsRunOnNewerOnes) {
  auto p = [](const char* s) { return *Platform::Parse(s); };
  EXPECT_EQ(PlatformMatchRank(p("linux/amd64"), p("linux/x86_64")), 0);
  EXPECT_EQ(PlatformMatchRank(p("linux/arm64"), p("linux/aarch64")), 0);
  EXPECT_TRUE(PlatformMatches(p("linux/arm/v7"), p("linux/arm/v6")));
  EXPECT_TRUE(PlatformMatches(p("linux/arm/v7"), p("linux/arm/v5")));
  EXPECT_FALSE(PlatformMatches(p("linux/arm/v6"), p("linux/arm/v7")));
  EXPECT_TRUE(PlatformMatches(p("linux/amd64/v3"), p("linux/amd64")));
  EXPECT_FALSE(PlatformMatches(p("linux/amd64"), p("linux/amd64/v2")));
  EXPECT_FALSE(PlatformMatches(p("linux/amd64"), p("linux/arm64")));
  EXPECT_FALSE(PlatformMatches(p("linux/amd64"), p("windows/amd64")));
  EXPECT_LT(*PlatformMatchRank(p("linux/arm/v7"), p("linux/arm/v7")),
            *PlatformMatchRank(p("linux/arm/v7"), p("linux/arm/v6")));
}

std::string Desc(std::string_view media_type, const Digest& d, int64_t size,
                 std::string_view extra = "") {
  return StrCat("{\"mediaType\":\"", media_type, "\",\"digest\":\"", d.ToString(),
                "\",\"size\":", size, extra, "}");
}

TEST(ImageManifest, ParsesOciAndDockerManifestsAndRoundTrips) {
  Digest config = Digest::Sha256Of("config");
  Digest layer = Digest::Sha256Of("layer");
  std::string oci = StrCat(
      "{\"schemaVersion\":2,\"mediaType\":\"", kOciManifest,
      "\",\"config\":", Desc(kOciConfig, config, 6), ",\"layers\":[",
      Desc(kErofsLayer, layer, 5, ",\"annotations\":{\"org.erofs.dmverity.root_digest\":\"abc\"}"),
      "],\"annotations\":{\"k\":\"v\"}}");
  auto m = ImageManifest::Parse(oci, kOciManifest);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, kOciManifest);
  EXPECT_EQ(m->config.digest, config);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].media_type, kErofsLayer);
  EXPECT_EQ(m->layers[0].size, 5);
  EXPECT_EQ(m->layers[0].annotations.at("org.erofs.dmverity.root_digest"), "abc");
  EXPECT_EQ(m->annotations.at("k"), "v");
  auto again = ImageManifest::Parse(m->ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->layers, m->layers);
  EXPECT_EQ(again->config, m->config);
  EXPECT_EQ(again->ToJson(), m->ToJson());

  std::string docker = StrCat("{\"schemaVersion\":2,\"mediaType\":\"", kDockerManifest,
                              "\",\"config\":", Desc(kDockerConfig, config, 6), ",\"layers\":[",
                              Desc(kDockerLayerTarGzip, layer, 5), "]}");
  auto dm = ImageManifest::Parse(docker, "application/json");
  ASSERT_TRUE(dm.ok()) << dm.status().ToString();
  EXPECT_EQ(dm->media_type, kDockerManifest);
  EXPECT_EQ(*DetectManifestKind(docker, ""), ManifestKind::kImageManifest);
}

TEST(ImageIndex, SelectsTheBestPlatformAndSaysWhatIsOffered) {
  Digest a = Digest::Sha256Of("a"), b = Digest::Sha256Of("b"), c = Digest::Sha256Of("c"),
         att = Digest::Sha256Of("att");
  std::string index = StrCat(
      "{\"schemaVersion\":2,\"mediaType\":\"", kOciIndex, "\",\"manifests\":[",
      Desc(kOciManifest, a, 1, ",\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}"), ",",
      Desc(kOciManifest, b, 1,
           ",\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v6\"}"),
      ",",
      Desc(kOciManifest, c, 1,
           ",\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}"),
      ",",
      Desc(kOciManifest, att, 1, ",\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}"),
      "]}");
  auto idx = ImageIndex::Parse(index, kOciIndex);
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(*DetectManifestKind(index, ""), ManifestKind::kImageIndex);
  EXPECT_EQ(idx->SelectPlatform(*Platform::Parse("linux/x86_64"))->digest, a);
  EXPECT_EQ(idx->SelectPlatform(*Platform::Parse("linux/arm/v7"))->digest, c);
  EXPECT_EQ(idx->SelectPlatform(*Platform::Parse("linux/arm/v6"))->digest, b);
  auto none = idx->SelectPlatform(*Platform::Parse("linux/s390x"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_NE(none.status().message().find("linux/arm/v6"), std::string::npos);
  EXPECT_NE(none.status().message().find("linux/s390x"), std::string::npos);
  auto again = ImageIndex::Parse(idx->ToJson());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifests, idx->manifests);
}

TEST(ImageManifest, RefusesContradictionsAndSchemaOne) {
  Digest d = Digest::Sha256Of("x");
  std::string index =
      StrCat("{\"schemaVersion\":2,\"mediaType\":\"", kOciIndex, "\",\"manifests\":[]}");
  auto as_manifest = ImageManifest::Parse(index);
  ASSERT_FALSE(as_manifest.ok());
  EXPECT_NE(as_manifest.status().message().find("not an image manifest"), std::string::npos);
  std::string m = StrCat("{\"schemaVersion\":2,\"mediaType\":\"", kOciManifest,
                         "\",\"config\":", Desc(kOciConfig, d, 1), ",\"layers\":[]}");
  auto served_wrong = ImageManifest::Parse(m, kDockerManifest);
  ASSERT_FALSE(served_wrong.ok());
  EXPECT_NE(served_wrong.status().message().find("served as"), std::string::npos);
  auto s1 = DetectManifestKind("{\"schemaVersion\":1,\"name\":\"x\"}", "");
  ASSERT_FALSE(s1.ok());
  EXPECT_EQ(s1.status().code(), Code::kUnimplemented);
  EXPECT_EQ(DetectManifestKind("{}", kDockerManifestSchema1Signed).status().code(),
            Code::kUnimplemented);
}

TEST(ImageConfig, ReadsDiffIdsAndPlatform) {
  Digest a = Digest::Sha256Of("a"), b = Digest::Sha256Of("b");
  std::string json = StrCat(
      "{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\",\"config\":{},"
      "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"",
      a.ToString(), "\",\"", b.ToString(), "\"]},\"history\":[]}");
  auto c = ImageConfig::Parse(json);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->platform.architecture, "arm64");
  EXPECT_EQ(c->diff_ids, (std::vector<Digest>{a, b}));
  auto bad = ImageConfig::Parse("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:zz\"]}}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("diff_ids[0]"), std::string::npos);
}

TEST(ChainId, MatchesTheImageSpecFormulaComputedBySha256sum) {
  Digest a = Digest::Sha256Of("layer a"), b = Digest::Sha256Of("layer b"),
         c = Digest::Sha256Of("layer c");
  std::vector<Digest> diff_ids = {a, b, c};
  std::vector<Digest> chain = ChainIds(diff_ids);
  ASSERT_EQ(chain.size(), 3u);
  EXPECT_EQ(chain[0], a);
  std::string ab = ShOk("printf '%s' '" + a.ToString() + " " + b.ToString() + "' | sha256sum");
  EXPECT_EQ(chain[1].hex(), ab.substr(0, 64));
  std::string abc =
      ShOk("printf '%s' 'sha256:" + ab.substr(0, 64) + " " + c.ToString() + "' | sha256sum");
  EXPECT_EQ(chain[2].hex(), abc.substr(0, 64));
  EXPECT_EQ(ChainId(diff_ids), chain[2]);
  EXPECT_TRUE(ChainId({}).empty());
}

TEST(ImageLayout, WritesALayoutThatSkopeoReads) {
  EVS_REQUIRE_PROGRAM("skopeo");
  TempDir dir;
  std::string path = dir.Join("layout");
  auto layout = ImageLayout::Create(path);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  std::string config =
      "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
      "\"diff_ids\":[]}}";
  Digest config_digest = Digest::Sha256Of(config);
  ASSERT_TRUE(layout->WriteBlob(config_digest, config).ok());
  EXPECT_TRUE(layout->HasBlob(config_digest, static_cast<int64_t>(config.size())));
  EXPECT_FALSE(layout->HasBlob(config_digest, 1));
  ImageManifest m;
  m.media_type = std::string(kOciManifest);
  m.config = {std::string(kOciConfig), config_digest, static_cast<int64_t>(config.size())};
  std::string mjson = m.ToJson();
  Digest mdigest = Digest::Sha256Of(mjson);
  ASSERT_TRUE(layout->WriteBlob(mdigest, mjson).ok());
  Descriptor md{std::string(kOciManifest), mdigest, static_cast<int64_t>(mjson.size())};
  ASSERT_TRUE(layout->AddToIndex(md, "v1").ok());
  ASSERT_TRUE(layout->AddToIndex(md, "v1").ok());  // replaces, does not duplicate
  ASSERT_TRUE(layout->AddToIndex(md, "v2").ok());
  EXPECT_EQ(layout->ReadIndex()->manifests.size(), 2u);
  std::string raw = ShOk("skopeo inspect --raw oci:" + path + ":v1");
  EXPECT_EQ(raw, mjson);
  std::string cfg = ShOk("skopeo inspect --config --raw oci:" + path + ":v2");
  EXPECT_EQ(cfg, config);

  // A blob whose bytes do not match its name is refused and not written.
  Status wrong = layout->WriteBlob(Digest::Sha256Of("other"), "bytes");
  EXPECT_EQ(wrong.code(), Code::kDataLoss);
  EXPECT_FALSE(layout->HasBlob(Digest::Sha256Of("other"), 5));
  // Reopening checks the version file.
  EXPECT_TRUE(ImageLayout::Open(path).ok());
  EXPECT_EQ(ImageLayout::Open(dir.Join("nope")).status().code(), Code::kNotFound);
  evs::testing::WriteFile(dir.Join("v2/oci-layout"), "{\"imageLayoutVersion\":\"2.0.0\"}");
  EXPECT_EQ(ImageLayout::Create(dir.Join("v2")).status().code(), Code::kFailedPrecondition);
}

}  // namespace
}  // namespace evs::oci
