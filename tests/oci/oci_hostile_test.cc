// Hostile input for the oci parsers: malformed, oversized, mistyped and
// randomly mutated documents and references. Each must give a value or a
// clear error; none may crash, hang or read out of bounds (this binary also
// runs under ASan + UBSan in scripts/test.sh).
#include <gtest/gtest.h>

#include <random>

#include "evs/oci/manifest.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"

namespace evs::oci {
namespace {

std::string ValidManifest() {
  Digest c = Digest::Sha256Of("c"), l = Digest::Sha256Of("l");
  return StrCat("{\"schemaVersion\":2,\"mediaType\":\"", kOciManifest,
                "\",\"config\":{\"mediaType\":\"", kOciConfig, "\",\"digest\":\"", c.ToString(),
                "\",\"size\":10},\"layers\":[{\"mediaType\":\"", kOciLayerTarGzip,
                "\",\"digest\":\"", l.ToString(),
                "\",\"size\":20,\"annotations\":{\"a\":\"b\"}}],\"annotations\":{\"x\":\"y\"}}");
}

std::string ValidIndex() {
  Digest m = Digest::Sha256Of("m");
  return StrCat("{\"schemaVersion\":2,\"mediaType\":\"", kOciIndex,
                "\",\"manifests\":[{\"mediaType\":\"", kOciManifest, "\",\"digest\":\"",
                m.ToString(),
                "\",\"size\":30,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}]}");
}

// Every parser on the same bytes; the result does not matter, surviving does.
void ParseAll(std::string_view bytes) {
  (void)ImageManifest::Parse(bytes);
  (void)ImageManifest::Parse(bytes, kOciManifest);
  (void)ImageIndex::Parse(bytes);
  (void)ImageIndex::Parse(bytes, kDockerManifestList);
  (void)ImageConfig::Parse(bytes);
  (void)DetectManifestKind(bytes);
  auto idx = ImageIndex::Parse(bytes);
  if (idx.ok()) (void)idx->SelectPlatform(HostPlatform());
  auto m = ImageManifest::Parse(bytes);
  if (m.ok()) (void)ImageManifest::Parse(m->ToJson());
}

TEST(ManifestHostile, MalformedDocumentsGiveClearErrors) {
  Digest d = Digest::Sha256Of("d");
  const std::pair<std::string, std::string> cases[] = {
      {"", "not valid JSON"},
      {"null", "not a JSON object"},
      {"[]", "not a JSON object"},
      {"{", "not valid JSON"},
      {"{\"schemaVersion\":2", "not valid JSON"},
      {"{}", "schemaVersion missing"},
      {"{\"schemaVersion\":\"2\"}", "schemaVersion not a number"},
      {"{\"schemaVersion\":3,\"layers\":[]}", "expected 2"},
      {"{\"schemaVersion\":2,\"layers\":[]}", "config missing"},
      {"{\"schemaVersion\":2,\"config\":{},\"layers\":[]}", "mediaType: missing"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":-1},\"layers\":[]}"),
       "negative"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":1.5},\"layers\":[]}"),
       "not an integer"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":18446744073709551615},\"layers\":[]}"),
       "too large"},
      {"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:abc\","
       "\"size\":1},\"layers\":[]}",
       "config.digest"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":1},\"layers\":{}}"),
       "layers: not an array"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":1},\"layers\":[7]}"),
       "layers[0]: not an object"},
      {StrCat("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"", d.ToString(),
              "\",\"size\":1,\"annotations\":{\"k\":1}},\"layers\":[]}"),
       "annotations[\"k\"]: not a string"},
      {StrCat("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.example+json\",\"config\":"
              "{\"mediaType\":\"x\",\"digest\":\"",
              d.ToString(), "\",\"size\":1},\"layers\":[]}"),
       "is not an image manifest"},
  };
  for (const auto& [json, why] : cases) {
    SCOPED_TRACE(json);
    auto m = ImageManifest::Parse(json);
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(why), std::string::npos) << m.status().message();
    EXPECT_NE(m.status().message().find("manifest"), std::string::npos);
  }
}

TEST(ManifestHostile, IndexWithBadEntriesNamesTheEntry) {
  std::string bad = StrCat("{\"schemaVersion\":2,\"manifests\":[", "{\"mediaType\":\"",
                           kOciManifest, "\",\"digest\":\"", Digest::Sha256Of("a").ToString(),
                           "\",\"size\":1,\"platform\":\"linux\"}]}");
  auto idx = ImageIndex::Parse(bad);
  ASSERT_FALSE(idx.ok());
  EXPECT_NE(idx.status().message().find("manifests[0].platform"), std::string::npos)
      << idx.status().message();
  auto typed = ImageIndex::Parse("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" +
                                 std::string(kOciManifest) + "\",\"digest\":\"" +
                                 Digest::Sha256Of("a").ToString() +
                                 "\",\"size\":1,\"platform\":{\"os\":[1]}}]}");
  ASSERT_FALSE(typed.ok());
  EXPECT_NE(typed.status().message().find("platform.os"), std::string::npos);
  // An index with no usable platforms selects nothing, clearly.
  auto empty = ImageIndex::Parse("{\"schemaVersion\":2,\"manifests\":[]}");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->SelectPlatform(HostPlatform()).status().code(), Code::kNotFound);
}

TEST(ManifestHostile, DeepNestingAndHugeListsDoNotCrash) {
  std::string deep = std::string(200000, '[') + std::string(200000, ']');
  ParseAll(deep);
  std::string deep_obj;
  for (int i = 0; i < 50000; ++i) deep_obj += "{\"a\":";
  deep_obj += "1";
  deep_obj += std::string(50000, '}');
  ParseAll(deep_obj);
  // 200k empty layer objects: refused by the entry limit or per-entry checks.
  std::string many = "{\"schemaVersion\":2,\"config\":{},\"layers\":[";
  for (int i = 0; i < 200000; ++i) many += i ? ",{}" : "{}";
  many += "]}";
  auto m = ImageManifest::Parse(many);
  EXPECT_FALSE(m.ok());
  ParseAll(many);
}

TEST(ManifestHostile, RandomMutationsNeverCrash) {
  std::mt19937 rng(1234);
  const std::string seeds[] = {ValidManifest(), ValidIndex(),
                               "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" +
                                   Digest::Sha256Of("x").ToString() + "\"]}}"};
  const char interesting[] = "{}[]\":,0123456789-.eE\\u\x00\xff tfn";
  int parsed_ok = 0;
  for (const auto& seed : seeds) {
    ASSERT_TRUE(ImageManifest::Parse(seeds[0]).ok());
    for (int iter = 0; iter < 4000; ++iter) {
      std::string s = seed;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !s.empty(); ++e) {
        size_t pos = rng() % s.size();
        switch (rng() % 4) {
          case 0:
            s[pos] = interesting[rng() % (sizeof interesting - 1)];
            break;
          case 1:
            s.erase(pos, 1 + rng() % 8);
            break;
          case 2:
            s.insert(pos, 1, interesting[rng() % (sizeof interesting - 1)]);
            break;
          case 3:
            s.resize(pos);
            break;
        }
      }
      ParseAll(s);
      if (ImageManifest::Parse(s).ok() || ImageIndex::Parse(s).ok()) ++parsed_ok;
    }
  }
  // Some mutations (inside strings, annotations) stay valid: the fuzzing
  // reached past the JSON syntax checks into the field checks.
  EXPECT_GT(parsed_ok, 0);
}

TEST(ReferenceHostile, RandomBytesNeverCrash) {
  std::mt19937 rng(99);
  const char alphabet[] = "abcAZ09:/@._-[]%\x01\xfe sha256";
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s;
    size_t n = rng() % 80;
    for (size_t i = 0; i < n; ++i) s += alphabet[rng() % (sizeof alphabet - 1)];
    auto r = Reference::Parse(s);
    if (r.ok()) {
      auto again = Reference::Parse(r->ToString());
      ASSERT_TRUE(again.ok()) << s << " -> " << r->ToString();
      EXPECT_EQ(*again, *r);
    }
    (void)IsLocalhost(s);
    (void)Platform::Parse(s);
  }
  std::string huge(1 << 20, 'a');
  EXPECT_EQ(Reference::Parse(huge).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace evs::oci
