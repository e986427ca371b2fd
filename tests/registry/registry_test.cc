// RegistryClient against a real registry (Debian's docker-registry, started
// by the test on 127.0.0.1): pull and push round trips of multi-layer,
// multi-platform images, digest- and tag-addressed pulls, ranged reads,
// cross-repository mounts. skopeo, which has its own registry client, is the
// oracle: it pushes what we pull and pulls what we push.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "evs/common/file.h"
#include "evs/oci/image_layout.h"
#include "evs/oci/media_types.h"
#include "evs/registry/client.h"
#include "evs/registry/image.h"
#include "local_registry.h"
#include "test_image.h"
#include "test_util.h"

namespace evs::registry {
namespace {

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

std::unique_ptr<RegistryClient> NewClient(RegistryOptions options = {}) {
  auto client = RegistryClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return std::move(*client);
}

oci::Reference Ref(const std::string& text) {
  auto r = oci::Reference::Parse(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return *r;
}

// One registry and one two-platform, three-layer image pushed by skopeo,
// shared by the tests of this suite (starting them per test would double
// the suite's time).
class RegistryPull : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::HaveLocalRegistry() || !evs::testing::HaveProgram("skopeo")) return;
    dir_ = new TempDir("evs-registry-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    auto image = evs::testing::BuildTestImage(dir_->path(), {"linux/amd64", "linux/arm64/v8"}, 3,
                                              300 << 10, "v1");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    image_ = new TestImage(std::move(*image));
    Status pushed = evs::testing::SkopeoPush(*image_, registry_->host() + "/test/app:v1");
    ASSERT_TRUE(pushed.ok()) << pushed.ToString();
  }
  static void TearDownTestSuite() {
    delete image_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_PROGRAM("skopeo");
    ASSERT_NE(image_, nullptr);
  }

  static TempDir* dir_;
  static LocalRegistry* registry_;
  static TestImage* image_;
};
TempDir* RegistryPull::dir_ = nullptr;
LocalRegistry* RegistryPull::registry_ = nullptr;
TestImage* RegistryPull::image_ = nullptr;

TEST_F(RegistryPull, ResolvesATagToTheIndexDigest) {
  auto client = NewClient();
  auto desc = client->Resolve(Ref(registry_->host() + "/test/app:v1"));
  ASSERT_TRUE(desc.ok()) << desc.status().ToString();
  EXPECT_EQ(desc->digest, image_->index.digest);
  EXPECT_EQ(desc->size, image_->index.size);
  EXPECT_EQ(desc->media_type, oci::kOciIndex);
  auto missing = client->Resolve(Ref(registry_->host() + "/test/app:nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("test/app:nope"), std::string::npos)
      << missing.status().message();
}

TEST_F(RegistryPull, PullsEachPlatformByTagAndByDigest) {
  auto client = NewClient();
  for (const std::string platform : {"linux/amd64", "linux/arm64/v8"}) {
    SCOPED_TRACE(platform);
    for (const std::string& ref :
         {registry_->host() + "/test/app:v1",
          registry_->host() + "/test/app@" + image_->index.digest.ToString()}) {
      auto image = FetchPlatformImage(*client, Ref(ref), *oci::Platform::Parse(platform));
      ASSERT_TRUE(image.ok()) << image.status().ToString();
      EXPECT_EQ(image->top.descriptor.digest, image_->index.digest);
      EXPECT_EQ(image->manifest.descriptor.digest, image_->manifests[platform].digest);
      ASSERT_EQ(image->parsed.layers.size(), 3u);
      EXPECT_EQ(image->config.diff_ids.size(), 3u);
      for (const auto& layer : image->parsed.layers) {
        StringSink sink;
        Status s = client->FetchBlob(image->reference, layer, &sink);
        ASSERT_TRUE(s.ok()) << s.ToString();
        EXPECT_EQ(sink.bytes, image_->blobs[layer.digest]);
      }
    }
  }
  auto none = FetchPlatformImage(*client, Ref(registry_->host() + "/test/app:v1"),
                                 *oci::Platform::Parse("linux/s390x"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_NE(none.status().message().find("linux/arm64/v8"), std::string::npos);
}

TEST_F(RegistryPull, FetchesAManifestByDescriptorAndChecksItsSize) {
  auto client = NewClient();
  oci::Descriptor d = image_->manifests["linux/amd64"];
  auto m = client->FetchManifest(Ref(registry_->host() + "/test/app"), d);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->bytes, image_->blobs[d.digest]);
  EXPECT_EQ(m->descriptor.media_type, oci::kOciManifest);
  d.size += 1;
  auto wrong = client->FetchManifest(Ref(registry_->host() + "/test/app"), d);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), Code::kDataLoss);
}

TEST_F(RegistryPull, ReadsRangesAtTheStartMiddleAndEnd) {
  auto client = NewClient();
  oci::Descriptor layer = image_->layers["linux/amd64"][1];
  const std::string& bytes = image_->blobs[layer.digest];
  auto blob = client->OpenBlob(Ref(registry_->host() + "/test/app"), layer);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  EXPECT_EQ((*blob)->size(), bytes.size());
  const std::pair<uint64_t, size_t> ranges[] = {
      {0, 4096}, {bytes.size() / 2 - 1000, 65536}, {bytes.size() - 777, 777}, {0, bytes.size()}};
  for (auto [offset, n] : ranges) {
    std::string buf(n, '\0');
    Status s = (*blob)->ReadAt(offset, buf.data(), n);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(buf, bytes.substr(offset, n)) << "offset " << offset;
  }
  std::string buf(10, '\0');
  Status past = (*blob)->ReadAt(bytes.size() - 5, buf.data(), 10);
  EXPECT_EQ(past.code(), Code::kOutOfRange);
  StringSink sink;
  ASSERT_TRUE((*blob)->ReadRange(1000, 5000, &sink).ok());
  EXPECT_EQ(sink.bytes, bytes.substr(1000, 5000));
}

TEST_F(RegistryPull, ServesManyConcurrentRangedReadsOfOneBlob) {
  RegistryOptions options;
  options.max_connections_per_host = 4;
  auto client = NewClient(options);
  oci::Descriptor layer = image_->layers["linux/arm64/v8"][2];
  const std::string& bytes = image_->blobs[layer.digest];
  auto blob = client->OpenBlob(Ref(registry_->host() + "/test/app"), layer);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  std::atomic<int> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        uint64_t offset = (static_cast<uint64_t>(t) * 7919 + static_cast<uint64_t>(i) * 104729) %
                          (bytes.size() - 65536);
        std::string buf(65536, '\0');
        Status s = (*blob)->ReadAt(offset, buf.data(), buf.size());
        if (!s.ok()) {
          ++failures;
        } else if (buf != bytes.substr(offset, buf.size())) {
          ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(RegistryPull, MissingBlobIsNotFoundNamingTheDigest) {
  auto client = NewClient();
  oci::Descriptor missing{std::string(oci::kOciLayerTarGzip), Digest::Sha256Of("nope"), 4};
  StringSink sink;
  Status s = client->FetchBlob(Ref(registry_->host() + "/test/app"), missing, &sink);
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_NE(s.message().find(missing.digest.ToString()), std::string::npos) << s.message();
  auto blob = client->OpenBlob(Ref(registry_->host() + "/test/app"), missing);
  EXPECT_EQ(blob.status().code(), Code::kNotFound);
}

// Pushes `image` to `ref` with our client: blobs, platform manifests, index.
void PushImage(RegistryClient& client, const TestImage& image, const oci::Reference& ref,
               const PushBlobOptions& options, std::map<PushOutcome, int>* outcomes) {
  for (const auto& [platform, manifest] : image.manifests) {
    auto parsed = oci::ImageManifest::Parse(image.blobs.at(manifest.digest));
    ASSERT_TRUE(parsed.ok());
    std::vector<oci::Descriptor> blobs = parsed->layers;
    blobs.push_back(parsed->config);
    for (const auto& b : blobs) {
      MemoryBlobContent content(image.blobs.at(b.digest));
      auto outcome = client.PushBlob(ref, b, &content, options);
      ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
      ++(*outcomes)[*outcome];
    }
    auto pushed = client.PushManifest(ref.WithDigest(manifest.digest).WithTag(""),
                                      manifest.media_type, image.blobs.at(manifest.digest));
    ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  }
  auto top = client.PushManifest(ref, image.index.media_type, image.blobs.at(image.index.digest));
  ASSERT_TRUE(top.ok()) << top.status().ToString();
  EXPECT_EQ(top->digest, image.index.digest);
}

TEST_F(RegistryPull, PushRoundTripIsIdenticalToWhatSkopeoReadsBack) {
  auto client = NewClient();
  for (uint64_t chunk : {uint64_t{0}, uint64_t{100000}}) {
    SCOPED_TRACE(chunk ? "chunked" : "monolithic");
    std::string repo = chunk ? "pushed/chunked" : "pushed/mono";
    oci::Reference ref = Ref(registry_->host() + "/" + repo + ":v2");
    std::map<PushOutcome, int> outcomes;
    PushBlobOptions options;
    options.chunk_size = chunk;
    PushImage(*client, *image_, ref, options, &outcomes);
    // 1 shared base + 2×2 own layers + 2 configs uploaded; the base is
    // found by HEAD the second time.
    EXPECT_EQ(outcomes[PushOutcome::kUploaded], 7);
    EXPECT_EQ(outcomes[PushOutcome::kAlreadyExists], 1);
    // skopeo reads back exactly the bytes we pushed, every platform.
    std::string out = dir_->Join("readback-" + std::to_string(chunk));
    auto r = evs::testing::Sh(
        "skopeo copy --quiet --all --preserve-digests --src-tls-verify=false "
        "docker://" +
        ref.ToString() + " oci:" + out + ":v2 2>&1");
    ASSERT_EQ(r.exit_code, 0) << r.stdout_data;
    auto layout = oci::ImageLayout::Open(out);
    ASSERT_TRUE(layout.ok());
    for (const auto& [digest, bytes] : image_->blobs) {
      auto back = layout->ReadBlob(digest);
      ASSERT_TRUE(back.ok()) << digest.ToString() << ": " << back.status().ToString();
      EXPECT_EQ(*back, bytes);
    }
  }
}

TEST_F(RegistryPull, MountsABlobFromAnotherRepository) {
  auto client = NewClient();
  oci::Descriptor layer = image_->layers["linux/amd64"][2];
  MemoryBlobContent content(image_->blobs[layer.digest]);
  PushBlobOptions options;
  options.mount_from = "test/app";
  auto outcome =
      client->PushBlob(Ref(registry_->host() + "/mounted/app"), layer, &content, options);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, PushOutcome::kMounted);
  StringSink sink;
  ASSERT_TRUE(client->FetchBlob(Ref(registry_->host() + "/mounted/app"), layer, &sink).ok());
  EXPECT_EQ(sink.bytes, image_->blobs[layer.digest]);
  // A source that does not have it: the registry declines, we upload.
  options.mount_from = "nothing/here";
  auto uploaded =
      client->PushBlob(Ref(registry_->host() + "/mounted/other"), layer, &content, options);
  ASSERT_TRUE(uploaded.ok()) << uploaded.status().ToString();
  EXPECT_EQ(*uploaded, PushOutcome::kUploaded);
}

TEST_F(RegistryPull, RefusesToPushContentThatDoesNotMatchItsDigest) {
  auto client = NewClient();
  oci::Descriptor d{std::string(oci::kOciLayerTarGzip), Digest::Sha256Of("claimed"), 5};
  MemoryBlobContent content("other");
  auto r = client->PushBlob(Ref(registry_->host() + "/bad/push"), d, &content);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == Code::kDataLoss || r.status().code() == Code::kInvalidArgument)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find(d.digest.Short()), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace evs::registry
