// Hostile registries: the fault proxy answers with oversized, malformed or
// mislabelled manifests and indexes, content that does not match its
// digest, bodies longer than their descriptor, wrong Content-Range, garbage
// challenges and token responses, redirect loops. Each gives a clear error
// naming what was asked for; none crashes (this binary also runs under ASan).
#include <gtest/gtest.h>

#include "evs/common/file.h"
#include "evs/oci/media_types.h"
#include "evs/registry/client.h"
#include "evs/registry/image.h"
#include "local_registry.h"
#include "test_image.h"
#include "test_util.h"

namespace evs::registry {
namespace {

using evs::testing::FaultProxy;
using evs::testing::LocalRegistry;
using evs::testing::TempDir;
using evs::testing::TestImage;

class StringSink : public ByteSink {
 public:
  Status Write(const void* data, size_t n) override {
    bytes.append(static_cast<const char*>(data), n);
    return OkStatus();
  }
  std::string bytes;
};

oci::Reference Ref(const std::string& text) { return *oci::Reference::Parse(text); }

std::string Json(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

class Hostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::HaveLocalRegistry() || !evs::testing::HaveProgram("skopeo") ||
        !evs::testing::HaveRegistryTools()) {
      return;
    }
    dir_ = new TempDir("evs-hostile-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    auto image = evs::testing::BuildTestImage(dir_->path(), {"linux/amd64", "linux/arm64"}, 2,
                                              100 << 10, "v1");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    image_ = new TestImage(std::move(*image));
    ASSERT_TRUE(evs::testing::SkopeoPush(*image_, registry_->host() + "/h/app:v1").ok());
  }
  static void TearDownTestSuite() {
    delete image_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_PROGRAM("skopeo");
    EVS_REQUIRE_REGISTRY_TOOLS();
    ASSERT_NE(image_, nullptr);
    RegistryOptions o;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::milliseconds(10);
    o.max_manifest_size = 1 << 20;
    client_ = std::move(*RegistryClient::Create(o));
  }

  // A proxy answering requests whose path contains `path` with `body` (and
  // the other fields of a "body" rule given in `extra`, JSON members).
  std::unique_ptr<FaultProxy> Serving(const std::string& path, const std::string& body,
                                      const std::string& extra) {
    std::string file = files_.Join("body" + std::to_string(++n_));
    evs::testing::WriteFile(file, body);
    auto p =
        FaultProxy::Start(registry_->host(), "[{\"path\":" + Json(path) +
                                                 ",\"fault\":\"body\",\"body_file\":" + Json(file) +
                                                 (extra.empty() ? "" : ",") + extra + "}]");
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? std::move(*p) : nullptr;
  }

  static TempDir* dir_;
  static LocalRegistry* registry_;
  static TestImage* image_;
  TempDir files_;
  int n_ = 0;
  std::unique_ptr<RegistryClient> client_;
};
TempDir* Hostile::dir_ = nullptr;
LocalRegistry* Hostile::registry_ = nullptr;
TestImage* Hostile::image_ = nullptr;

const std::string kManifestType = "\"content_type\":\"application/vnd.oci.image.manifest.v1+json\"";

TEST_F(Hostile, OversizedManifestIsRefusedBeforeItIsRead) {
  std::string huge = "{\"schemaVersion\":2," + std::string(2 << 20, ' ') + "}";
  auto p = Serving("/manifests/", huge, kManifestType);
  ASSERT_TRUE(p);
  auto m = client_->FetchManifest(Ref(p->host() + "/h/app:v1"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kResourceExhausted);
  EXPECT_NE(m.status().message().find("manifest limit"), std::string::npos);
  EXPECT_NE(m.status().message().find("h/app:v1"), std::string::npos) << m.status().message();
  // Declared sizes are checked before asking.
  oci::Descriptor big{std::string(oci::kOciManifest), Digest::Sha256Of("x"), 100 << 20};
  EXPECT_EQ(client_->FetchManifest(Ref(p->host() + "/h/app"), big).status().code(),
            Code::kResourceExhausted);
  EXPECT_EQ(client_->FetchSmallBlob(Ref(p->host() + "/h/app"), big).status().code(),
            Code::kResourceExhausted);
}

TEST_F(Hostile, MalformedAndMislabelledManifests) {
  struct Case {
    std::string body, extra;
    Code code;
    std::string why;
  } cases[] = {
      {"this is not json", kManifestType, Code::kInvalidArgument, "not valid JSON"},
      {"{\"schemaVersion\":2,\"layers\":[]}", kManifestType, Code::kInvalidArgument,
       "config missing"},
      {"{\"schemaVersion\":1,\"name\":\"h/app\",\"fsLayers\":[]}",
       "\"content_type\":\"application/vnd.docker.distribution.manifest.v1+prettyjws\"",
       Code::kUnimplemented, "schema 1"},
      {"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\"}",
       "\"content_type\":\"application/vnd.oci.image.layer.v1.tar\"", Code::kInvalidArgument,
       "unsupported media type"},
      {"{\"schemaVersion\":2,\"mediaType\":\"" + std::string(oci::kOciIndex) +
           "\",\"manifests\":[]}",
       kManifestType, Code::kInvalidArgument, "served as"},
      {"[1,2,3]", "", Code::kInvalidArgument, "not a JSON object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 80));
    auto p = Serving("/manifests/", c.body, c.extra);
    ASSERT_TRUE(p);
    auto m = client_->FetchManifest(Ref(p->host() + "/h/app:v1"));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), c.code) << m.status().ToString();
    EXPECT_NE(m.status().message().find(c.why), std::string::npos) << m.status().message();
  }
}

TEST_F(Hostile, ManifestThatDoesNotMatchItsDigest) {
  const auto& real = image_->manifests["linux/amd64"];
  std::string other = image_->blobs.at(image_->manifests["linux/arm64/v8"].digest);
  auto p = Serving("/manifests/", other, kManifestType);
  ASSERT_TRUE(p);
  // By digest: the bytes must hash to it.
  auto by_digest = client_->FetchManifest(Ref(p->host() + "/h/app@" + real.digest.ToString()));
  ASSERT_FALSE(by_digest.ok());
  EXPECT_EQ(by_digest.status().code(), Code::kDataLoss);
  EXPECT_NE(by_digest.status().message().find(real.digest.ToString()), std::string::npos);
  // By tag with a Docker-Content-Digest that lies.
  auto liar = Serving("/manifests/", other,
                      kManifestType + ",\"headers\":{\"Docker-Content-Digest\":\"" +
                          real.digest.ToString() + "\"}");
  ASSERT_TRUE(liar);
  auto by_tag = client_->FetchManifest(Ref(liar->host() + "/h/app:v1"));
  ASSERT_FALSE(by_tag.ok());
  EXPECT_EQ(by_tag.status().code(), Code::kDataLoss);
  EXPECT_NE(by_tag.status().message().find("Docker-Content-Digest"), std::string::npos);
  // Resolve (HEAD) reporting another digest for a pinned reference.
  auto resolved = client_->Resolve(Ref(liar->host() + "/h/app@" + image_->index.digest.ToString()));
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().code(), Code::kDataLoss);
}

TEST_F(Hostile, IndexPointingAtTheWrongSizeOrAGarbageDigest) {
  // The real arm64 manifest, but the index claims another size.
  const auto& m = image_->manifests["linux/amd64"];
  std::string index = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(oci::kOciIndex) +
                      "\",\"manifests\":[{\"mediaType\":\"" + std::string(oci::kOciManifest) +
                      "\",\"digest\":\"" + m.digest.ToString() +
                      "\",\"size\":" + std::to_string(m.size + 7) +
                      ",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";
  auto p =
      Serving("/manifests/v1", index, "\"content_type\":\"" + std::string(oci::kOciIndex) + "\"");
  ASSERT_TRUE(p);
  auto image = FetchPlatformImage(*client_, Ref(p->host() + "/h/app:v1"),
                                  *oci::Platform::Parse("linux/amd64"));
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), Code::kDataLoss);
  EXPECT_NE(image.status().message().find("descriptor says"), std::string::npos)
      << image.status().message();

  std::string garbage = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" +
                        std::string(oci::kOciManifest) +
                        "\",\"digest\":\"sha256:../../etc/passwd\",\"size\":1}]}";
  auto g =
      Serving("/manifests/v1", garbage, "\"content_type\":\"" + std::string(oci::kOciIndex) + "\"");
  ASSERT_TRUE(g);
  auto bad = FetchPlatformImage(*client_, Ref(g->host() + "/h/app:v1"),
                                *oci::Platform::Parse("linux/amd64"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("manifests[0].digest"), std::string::npos)
      << bad.status().message();
}

TEST_F(Hostile, BlobsThatAreWrongTooLongOrOutOfRange) {
  const auto& layer = image_->layers["linux/amd64"][1];
  const std::string& real = image_->blobs.at(layer.digest);
  // Same size, other bytes.
  std::string wrong = real;
  wrong[wrong.size() / 2] ^= 1;
  auto p = Serving("/blobs/", wrong, "");
  ASSERT_TRUE(p);
  StringSink sink;
  Status s = client_->FetchBlob(Ref(p->host() + "/h/app"), layer, &sink);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_NE(s.message().find(layer.digest.ToString()), std::string::npos);
  // Longer than the descriptor: stopped at the descriptor's size.
  auto longer = Serving("/blobs/", real + "trailing bytes", "");
  ASSERT_TRUE(longer);
  StringSink sink2;
  s = client_->FetchBlob(Ref(longer->host() + "/h/app"), layer, &sink2);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_NE(s.message().find("more than"), std::string::npos) << s.message();
  EXPECT_LE(sink2.bytes.size(), real.size());
  // A 206 for another range than asked.
  auto shifted = Serving("/blobs/", real.substr(10, 100),
                         "\"status\":206,\"headers\":{\"Content-Range\":\"bytes 10-109/" +
                             std::to_string(real.size()) + "\"}");
  ASSERT_TRUE(shifted);
  auto blob = client_->OpenBlob(Ref(shifted->host() + "/h/app"), layer);
  ASSERT_FALSE(blob.ok());
  EXPECT_EQ(blob.status().code(), Code::kDataLoss);
  EXPECT_NE(blob.status().message().find("server sent range"), std::string::npos)
      << blob.status().message();
  // 416 from the server.
  auto unsatisfiable = Serving("/blobs/", "", "\"status\":416");
  ASSERT_TRUE(unsatisfiable);
  auto b416 = client_->OpenBlob(Ref(unsatisfiable->host() + "/h/app"), layer);
  EXPECT_EQ(b416.status().code(), Code::kOutOfRange);
}

TEST_F(Hostile, GarbageChallengesAndTokenResponses) {
  auto no_scheme =
      Serving("/v2/", "", "\"status\":401,\"headers\":{\"WWW-Authenticate\":\"Negotiate abc\"}");
  ASSERT_TRUE(no_scheme);
  auto m = client_->FetchManifest(Ref(no_scheme->host() + "/h/app:v1"));
  EXPECT_EQ(m.status().code(), Code::kUnauthenticated);
  EXPECT_NE(m.status().message().find("without a Bearer or Basic challenge"), std::string::npos)
      << m.status().message();

  auto bad_realm = Serving(
      "/v2/", "",
      "\"status\":401,\"headers\":{\"WWW-Authenticate\":\"Bearer realm=\\\"ftp://x/token\\\"\"}");
  ASSERT_TRUE(bad_realm);
  m = client_->FetchManifest(Ref(bad_realm->host() + "/h/app:v1"));
  EXPECT_EQ(m.status().code(), Code::kUnauthenticated);
  EXPECT_NE(m.status().message().find("refusing token realm"), std::string::npos)
      << m.status().message();

  // A token server that answers with garbage.
  auto token_server = Serving("/token", "<html>not json</html>", "");
  ASSERT_TRUE(token_server);
  auto challenged =
      Serving("/v2/", "",
              "\"status\":401,\"headers\":{\"WWW-Authenticate\":\"Bearer realm=\\\"http://" +
                  token_server->host() + "/token\\\",service=\\\"s\\\"\"}");
  ASSERT_TRUE(challenged);
  m = client_->FetchManifest(Ref(challenged->host() + "/h/app:v1"));
  EXPECT_EQ(m.status().code(), Code::kUnauthenticated);
  EXPECT_NE(m.status().message().find("not a JSON object"), std::string::npos)
      << m.status().message();
}

TEST_F(Hostile, RedirectLoopsAndOddStatuses) {
  // A relative Location back to a path the same rule answers: a loop.
  auto looping =
      Serving("/blobs/", "", "\"status\":307,\"headers\":{\"Location\":\"/v2/h/app/blobs/again\"}");
  ASSERT_TRUE(looping);
  StringSink sink;
  Status s =
      client_->FetchBlob(Ref(looping->host() + "/h/app"), image_->layers["linux/amd64"][0], &sink);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("more than 5 redirects"), std::string::npos) << s.message();

  auto teapot = Serving("/manifests/", "short and stout", "\"status\":418");
  ASSERT_TRUE(teapot);
  auto m = client_->FetchManifest(Ref(teapot->host() + "/h/app:v1"));
  EXPECT_EQ(m.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("HTTP 418"), std::string::npos);

  auto no_location = Serving("/blobs/", "", "\"status\":302");
  ASSERT_TRUE(no_location);
  s = client_->FetchBlob(Ref(no_location->host() + "/h/app"), image_->layers["linux/amd64"][0],
                         &sink);
  EXPECT_NE(s.message().find("without Location"), std::string::npos) << s.message();
}

TEST_F(Hostile, InvalidReferencesInTheCliAreClearErrors) {
  std::string evs = evs::testing::BuildDir() + "/src/cli/evs";
  if (::access(evs.c_str(), X_OK) != 0) GTEST_SKIP() << "evs CLI not built at " << evs;
  for (const std::string ref : {"Upper", "host:99999/x", "x@sha256:123", "a b"}) {
    auto r = evs::testing::Sh("'" + evs + "' image inspect '" + ref + "' 2>&1");
    EXPECT_EQ(r.exit_code, 1) << ref;
    EXPECT_NE(r.stdout_data.find("image reference"), std::string::npos) << r.stdout_data;
  }
}

}  // namespace
}  // namespace evs::registry
