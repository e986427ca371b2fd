// Convert-on-pull at the snapshotter's level (DESIGN.md §1): a real registry
// (docker-registry) behind the fault-injecting proxy, images pushed by the
// test, the Snapshotter answering Prepare calls labelled the way containerd's
// unpacker and the CRI label them. The proxy's request log shows what evs
// fetched. Needs root, erofs and overlay (layer mounts), docker-registry and
// the Go test tools; skips otherwise.
#include "evs/snapshot/registry_layer_source.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <thread>

#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/oci/chain_id.h"
#include "evs/oci/media_types.h"
#include "local_registry.h"
#include "test_util.h"

namespace evs::snapshot {
namespace {

using evs::testing::FaultProxy;
using evs::testing::LocalRegistry;
using evs::testing::ReadFileOrDie;
using evs::testing::ShOk;
using evs::testing::TempDir;
using evs::testing::WriteFile;

// One layer of a test image: files (path → content), whiteouts and opaque
// directories in OCI form, and how the tar is compressed.
struct LayerSpec {
  std::map<std::string, std::string> files;
  std::vector<std::string> whiteouts;    // ".wh.<name>"
  std::vector<std::string> opaque_dirs;  // "<dir>/.wh..wh..opq"
  std::string compression = "gzip";      // gzip, zstd, none
  std::string media_type;                // default: from the compression
};

struct PushedImage {
  std::string ref;  // "127.0.0.1:port/repo:v1"
  Digest manifest;
  std::vector<oci::Descriptor> layers;
  std::vector<Digest> diff_ids;
  std::vector<std::string> chain;  // chain ID of each prefix
};

std::vector<std::string> ListDir(const std::string& dir) {
  auto out = evs::testing::Sh("ls -A '" + dir + "' 2>/dev/null").stdout_data;
  std::vector<std::string> names;
  size_t start = 0;
  while (start < out.size()) {
    size_t nl = out.find('\n', start);
    names.push_back(out.substr(start, nl - start));
    start = nl + 1;
  }
  return names;
}

class RegistryLayerSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!evs::testing::IsRoot() || !evs::testing::KernelHasFilesystem("erofs") ||
        !evs::testing::KernelHasFilesystem("overlay")) {
      GTEST_SKIP() << "needs root, erofs and overlay";
    }
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_REGISTRY_TOOLS();
    EVS_REQUIRE_PROGRAM("zstd");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = std::move(*registry);
    registry::RegistryOptions ro;
    ro.retry =
        registry::RetryPolicy{2, std::chrono::milliseconds(50), std::chrono::milliseconds(100),
                              std::chrono::milliseconds(2000)};
    auto client = registry::RegistryClient::Create(ro);
    ASSERT_TRUE(client.ok());
    client_ = std::move(*client);
  }

  void TearDown() override {
    if (sn_) {
      EXPECT_TRUE(sn_->Close().ok());
    }
    sn_.reset();
    source_.reset();
  }

  // Opens the snapshotter with a RegistryLayerSource in front of it.
  void Open(RegistryLayerSourceOptions options = {}, bool verify_chain = true) {
    options.client = client_.get();
    options.retry =
        registry::RetryPolicy{2, std::chrono::milliseconds(50), std::chrono::milliseconds(100),
                              std::chrono::milliseconds(2000)};
    auto source = RegistryLayerSource::Create(options);
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    source_ = std::move(*source);
    SnapshotterOptions so;
    so.root = root();
    so.verity = VerityMode::kOff;
    so.remote = source_.get();
    so.verify_remote_chain = verify_chain;
    auto sn = Snapshotter::Open(so);
    ASSERT_TRUE(sn.ok()) << sn.status().ToString();
    sn_ = std::move(*sn);
  }

  std::string root() const { return dir_.Join("root"); }

  // Builds the layers with tar (and gzip or zstd), pushes blobs, config and
  // manifest to `host` (the registry, or a proxy in front of it).
  PushedImage Push(const std::string& host, const std::string& repo,
                   const std::vector<LayerSpec>& specs) {
    PushedImage image;
    oci::Reference ref = *oci::Reference::Parse(host + "/" + repo + ":v1");
    oci::ImageManifest manifest;
    manifest.media_type = std::string(oci::kOciManifest);
    for (size_t i = 0; i < specs.size(); ++i) {
      const LayerSpec& spec = specs[i];
      std::string tree = dir_.Join(repo + "-l" + std::to_string(i));
      ShOk("mkdir -p '" + tree + "'");
      for (const auto& [path, content] : spec.files) WriteFile(tree + "/" + path, content);
      for (const std::string& w : spec.whiteouts) {
        WriteFile(tree + "/" + Dirname(w) + "/.wh." + Basename(w), "");
      }
      for (const std::string& o : spec.opaque_dirs) WriteFile(tree + "/" + o + "/.wh..wh..opq", "");
      std::string tar = tree + ".tar";
      ShOk("tar --numeric-owner --owner=0 --group=0 -C '" + tree + "' -cf '" + tar + "' .");
      image.diff_ids.push_back(Digest::Sha256Of(ReadFileOrDie(tar)));
      std::string blob_path = tar;
      std::string type = std::string(oci::kOciLayerTar);
      if (spec.compression == "gzip") {
        ShOk("gzip -n -k '" + tar + "'");
        blob_path = tar + ".gz";
        type = std::string(oci::kOciLayerTarGzip);
      } else if (spec.compression == "zstd") {
        ShOk("zstd -q '" + tar + "'");
        blob_path = tar + ".zst";
        type = std::string(oci::kOciLayerTarZstd);
      }
      std::string bytes = ReadFileOrDie(blob_path);
      oci::Descriptor d;
      d.media_type = spec.media_type.empty() ? type : spec.media_type;
      d.digest = Digest::Sha256Of(bytes);
      d.size = static_cast<int64_t>(bytes.size());
      registry::MemoryBlobContent content(bytes);
      auto pushed = client_->PushBlob(ref, d, &content);
      EXPECT_TRUE(pushed.ok()) << pushed.status().ToString();
      manifest.layers.push_back(d);
    }
    std::string diff_ids;
    for (const Digest& d : image.diff_ids) {
      diff_ids += (diff_ids.empty() ? "\"" : ",\"") + d.ToString() + "\"";
    }
    std::string config =
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":"
        "\"layers\",\"diff_ids\":[" +
        diff_ids + "]}}";
    manifest.config.media_type = std::string(oci::kOciConfig);
    manifest.config.digest = Digest::Sha256Of(config);
    manifest.config.size = static_cast<int64_t>(config.size());
    registry::MemoryBlobContent config_content(config);
    EXPECT_TRUE(client_->PushBlob(ref, manifest.config, &config_content).ok());
    auto m = client_->PushManifest(ref, oci::kOciManifest, manifest.ToJson());
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    image.ref = ref.ToString();
    image.manifest = m->digest;
    image.layers = manifest.layers;
    for (const Digest& c : oci::ChainIds(image.diff_ids)) image.chain.push_back(c.ToString());
    return image;
  }

  // The labels containerd's unpacker and the CRI put on the Prepare of
  // layer `i` (reference/remote-snapshotters.md §1).
  Labels CriLabels(const PushedImage& image, size_t i, const std::string& ref = "") {
    std::string layers;
    for (size_t j = i; j < image.layers.size(); ++j) {
      if (!layers.empty()) layers += ',';
      layers += image.layers[j].digest.ToString();
    }
    return {{kTargetRefLabel, image.chain[i]},
            {kCriImageRefLabel, ref.empty() ? image.ref : ref},
            {kCriLayerDigestLabel, image.layers[i].digest.ToString()},
            {kCriManifestDigestLabel, image.manifest.ToString()},
            {kCriImageLayersLabel, layers}};
  }

  // Prepares layer `i` the way containerd does; returns the status (OK:
  // fell back to an active snapshot).
  Status PrepareLayer(const PushedImage& image, size_t i, const Labels& labels) {
    std::string key = "default/" + std::to_string(++keys_) + "/extract-" + image.chain[i];
    auto r = sn_->Prepare(key, i == 0 ? "" : image.chain[i - 1], labels);
    return r.status();
  }

  // Blob GETs of `digest` that reached the registry through `proxy`.
  static int BlobGets(const FaultProxy& proxy, const Digest& digest) {
    int n = 0;
    for (const auto& r : proxy.Requests()) {
      if (r.at("method") == "GET" && r.at("port") == "proxy" &&
          r.at("path").find("/blobs/" + digest.ToString()) != std::string::npos) {
        ++n;
      }
    }
    return n;
  }

  std::vector<LayerSpec> HidingImage() {
    LayerSpec base;
    base.files = {{"etc/greeting", "hello from layer 1\n"},
                  {"data/gone.txt", "deleted above\n"},
                  {"data/kept.txt", "kept\n"},
                  {"opaque/old.txt", "hidden by an opaque directory\n"}};
    LayerSpec upper;
    upper.compression = "zstd";
    upper.files = {{"etc/greeting", "hello from layer 2\n"}, {"opaque/new.txt", "new\n"}};
    upper.whiteouts = {"data/gone.txt"};
    upper.opaque_dirs = {"opaque"};
    LayerSpec top;
    top.compression = "none";
    top.files = {{"top.txt", "top\n"}};
    return {base, upper, top};
  }

  TempDir dir_{"evs-cop"};
  std::unique_ptr<LocalRegistry> registry_;
  std::unique_ptr<registry::RegistryClient> client_;
  std::unique_ptr<RegistryLayerSource> source_;
  std::unique_ptr<Snapshotter> sn_;
  int keys_ = 0;
};

TEST_F(RegistryLayerSourceTest, EachLayerIsFetchedOnceConvertedAheadAndCommittedUnderItsChain) {
  auto proxy = FaultProxy::Start(registry_->host());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  PushedImage image = Push((*proxy)->host(), "cop/hiding", HidingImage());
  Open();
  for (size_t i = 0; i < image.layers.size(); ++i) {
    Status s = PrepareLayer(image, i, CriLabels(image, i));
    EXPECT_EQ(s.code(), Code::kAlreadyExists) << "layer " << i << ": " << s.ToString();
    auto info = sn_->Stat(image.chain[i]);
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->kind, Kind::kCommitted);
    EXPECT_EQ(info->parent, i == 0 ? "" : image.chain[i - 1]);
  }
  // Layers 1 and 2 were queued by the Prepare of layer 0.
  RegistryLayerSource::Stats stats = source_->stats();
  EXPECT_EQ(stats.converted, 3);
  EXPECT_EQ(stats.joined, 2);
  EXPECT_EQ(stats.failed, 0);
  for (const oci::Descriptor& layer : image.layers) {
    EXPECT_EQ(BlobGets(**proxy, layer.digest), 1) << layer.digest.ToString();
    EXPECT_TRUE(::access((root() + "/layers/sha256/" + layer.digest.hex()).c_str(), F_OK) == 0);
  }
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
  // What a container sees: upper layers hide what they delete.
  auto view = sn_->View("look", image.chain.back(), {});
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  ASSERT_EQ(view->size(), 1u);
  std::string target = dir_.Join("look");
  ASSERT_TRUE(MakeDirs(target).ok());
  std::string options;
  for (const std::string& o : (*view)[0].options) {
    if (o != "ro") options += (options.empty() ? "" : ",") + o;
  }
  auto mp = MountPoint::Mount((*view)[0].source, target, (*view)[0].type, MS_RDONLY, options);
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_EQ(ReadFileOrDie(target + "/etc/greeting"), "hello from layer 2\n");
  EXPECT_EQ(ReadFileOrDie(target + "/top.txt"), "top\n");
  EXPECT_EQ(ListDir(target + "/data"), std::vector<std::string>{"kept.txt"});
  EXPECT_EQ(ListDir(target + "/opaque"), std::vector<std::string>{"new.txt"});
  ASSERT_TRUE(mp->Unmount().ok());

  // A second pull of the image (another namespace) fetches nothing.
  int gets = static_cast<int>((*proxy)->Requests().size());
  for (size_t i = 0; i < image.layers.size(); ++i) {
    EXPECT_EQ(PrepareLayer(image, i, CriLabels(image, i)).code(), Code::kAlreadyExists);
  }
  EXPECT_EQ(static_cast<int>((*proxy)->Requests().size()), gets);
}

TEST_F(RegistryLayerSourceTest, CtrRemoteLabelsWithoutAManifestDigestWorkToo) {
  PushedImage image = Push(registry_->host(), "cop/stargz", HidingImage());
  Open();
  for (size_t i = 0; i < image.layers.size(); ++i) {
    std::string layers;
    for (size_t j = i; j < image.layers.size(); ++j) {
      if (!layers.empty()) layers += ',';
      layers += image.layers[j].digest.ToString();
    }
    // What `ctr-remote images rpull` (stargz-snapshotter 0.12) sends.
    Labels labels = {{kTargetRefLabel, image.chain[i]},
                     {kStargzReferenceLabel, image.ref},
                     {kStargzDigestLabel, image.layers[i].digest.ToString()},
                     {kStargzLayersLabel, layers},
                     {"containerd.io/snapshot/remote/stargz.prefetch", "10485760"}};
    EXPECT_EQ(PrepareLayer(image, i, labels).code(), Code::kAlreadyExists) << i;
  }
  EXPECT_EQ(source_->stats().converted, 3);
}

TEST_F(RegistryLayerSourceTest, ACorruptedBlobFallsBackToUnpackingAndLeavesNothing) {
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","fault":"corrupt","after_bytes":100}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  PushedImage image = Push(registry_->host(), "cop/corrupt", {HidingImage()[0]});
  Open();
  // The layer's bytes are flipped on the way (the manifest is fetched by
  // digest, the config not at all).
  std::string ref = (*proxy)->host() + "/cop/corrupt:v1";
  Labels labels = CriLabels(image, 0, ref);
  Status s = PrepareLayer(image, 0, labels);
  EXPECT_TRUE(s.ok()) << "an active snapshot for containerd to unpack into: " << s.ToString();
  EXPECT_EQ(sn_->Stat(image.chain[0]).status().code(), Code::kNotFound);
  EXPECT_EQ(source_->stats().failed, 1);
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
  EXPECT_TRUE(ListDir(root() + "/layers/sha256").empty());
  auto stats = sn_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->remote_fallbacks, 1);
}

TEST_F(RegistryLayerSourceTest, WithoutDiffIdsACorruptedBlobIsStillRefused) {
  // verify_diff_id = false: no hashing in the converter; the registry
  // client's digest check fails the stream before it ends.
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","fault":"corrupt","after_bytes":100}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  PushedImage image = Push(registry_->host(), "cop/trusting", HidingImage());
  RegistryLayerSourceOptions options;
  options.compute_diff_id = false;
  Open(options, /*verify_chain=*/false);
  Labels labels = CriLabels(image, 0, (*proxy)->host() + "/cop/trusting:v1");
  EXPECT_TRUE(PrepareLayer(image, 0, labels).ok()) << "fell back";
  EXPECT_EQ(sn_->Stat(image.chain[0]).status().code(), Code::kNotFound);
  EXPECT_TRUE(ListDir(root() + "/layers/sha256").empty());
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
  // Uncorrupted, the same layer is converted and committed without a diffID.
  EXPECT_EQ(PrepareLayer(image, 0, CriLabels(image, 0)).code(), Code::kAlreadyExists);
}

TEST_F(RegistryLayerSourceTest, AnUnreachableRegistryFallsBackAndIsNotAskedAgainAtOnce) {
  PushedImage image = Push(registry_->host(), "cop/down", HidingImage());
  Open();
  std::string dead = "127.0.0.1:" + std::to_string(evs::testing::FreePort());
  std::string ref = dead + "/cop/down:v1";
  EXPECT_TRUE(PrepareLayer(image, 0, CriLabels(image, 0, ref)).ok());
  EXPECT_EQ(sn_->Stat(image.chain[0]).status().code(), Code::kNotFound);
  // The next layer of that registry falls back without another attempt.
  ASSERT_TRUE(sn_->Commit(image.chain[0], "default/1/extract-" + image.chain[0], {}).ok());
  auto r = source_->Fetch(
      *LayerStore::Open(root() + "/layers").value(),
      RemoteLayerRequest{"k", image.chain[0], image.chain[1], CriLabels(image, 1, ref), nullptr});
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_NE(r.status().message().find("not asked again"), std::string::npos)
      << r.status().ToString();
  // Another registry is not affected.
  EXPECT_EQ(PrepareLayer(image, 1, CriLabels(image, 1)).code(), Code::kAlreadyExists);
}

TEST_F(RegistryLayerSourceTest, MediaTypesEvsDoesNotConvertFallBack) {
  LayerSpec odd = HidingImage()[0];
  odd.media_type = "application/vnd.example.layer.v1.tar+lz4";
  PushedImage image = Push(registry_->host(), "cop/odd", {odd});
  Open();
  EXPECT_TRUE(PrepareLayer(image, 0, CriLabels(image, 0)).ok());
  EXPECT_EQ(source_->stats().converted + source_->stats().failed, 0) << "nothing fetched";
}

TEST_F(RegistryLayerSourceTest, HostileLabelsFallBackAndNothingIsFetchedOrStored) {
  PushedImage image = Push(registry_->host(), "cop/hostile", HidingImage());
  Open();
  const std::string other = Digest::Sha256Of("not in the image").ToString();
  std::vector<std::pair<std::string, std::string>> cases = {
      {kCriLayerDigestLabel, "sha256:short"},
      {kCriLayerDigestLabel, other},
      {kCriLayerDigestLabel, "../../etc/passwd"},
      {kCriImageRefLabel, "UPPER/Case:tag"},
      {kCriImageRefLabel, std::string(300, 'a')},
      {kCriImageRefLabel, "127.0.0.1:1/../../x"},
      {kCriManifestDigestLabel, "sha512:" + std::string(128, 'z')},
      {kCriManifestDigestLabel, other},
      {kCriImageLayersLabel, "sha256:x,,," + std::string(3000, ',')},
  };
  for (const auto& [key, value] : cases) {
    Labels labels = CriLabels(image, 0);
    labels[key] = value;
    Status s = PrepareLayer(image, 0, labels);
    EXPECT_TRUE(s.ok()) << key << "=" << value.substr(0, 40) << ": " << s.ToString();
  }
  EXPECT_EQ(source_->stats().converted, 0);
  EXPECT_TRUE(ListDir(root() + "/layers/sha256").empty());
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
}

TEST_F(RegistryLayerSourceTest, TwoRequestsForOneLayerShareOneConversion) {
  auto proxy = FaultProxy::Start(
      registry_->host(), R"([{"path":"/blobs/","method":"GET","fault":"delay","delay_ms":500}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  PushedImage image = Push((*proxy)->host(), "cop/shared", {HidingImage()[0]});
  RegistryLayerSourceOptions options;
  options.max_concurrent = 2;
  Open(options);
  Status a, b;
  std::thread first([&] { a = PrepareLayer(image, 0, CriLabels(image, 0)); });
  std::thread second([&] { b = PrepareLayer(image, 0, CriLabels(image, 0)); });
  first.join();
  second.join();
  EXPECT_EQ(a.code(), Code::kAlreadyExists) << a.ToString();
  EXPECT_EQ(b.code(), Code::kAlreadyExists) << b.ToString();
  EXPECT_EQ(BlobGets(**proxy, image.layers[0].digest), 1);
  EXPECT_EQ(source_->stats().converted, 1);
}

TEST_F(RegistryLayerSourceTest, ALayerConvertedAheadThatNobodyClaimsIsDeleted) {
  PushedImage image = Push(registry_->host(), "cop/unclaimed", HidingImage());
  RegistryLayerSourceOptions options;
  options.keep_unclaimed = std::chrono::seconds(0);
  Open(options);
  EXPECT_EQ(PrepareLayer(image, 0, CriLabels(image, 0)).code(), Code::kAlreadyExists);
  // Layers 1 and 2 were converted ahead; the pull stops here. (The bound
  // only guards a hang.)
  for (int i = 0; i < 3000 && source_->stats().expired < 2; ++i) ::usleep(10000);
  EXPECT_EQ(source_->stats().expired, 2);
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
  EXPECT_EQ(ListDir(root() + "/layers/sha256").size(), 1u);
}

TEST_F(RegistryLayerSourceTest, ShutdownStopsConversionsAndDeletesWhatTheyStaged) {
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","fault":"stall","after_bytes":10,"delay_ms":30000}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  PushedImage image = Push((*proxy)->host(), "cop/stop", HidingImage());
  Open();
  Status s;
  std::thread prepare([&] { s = PrepareLayer(image, 0, CriLabels(image, 0)); });
  // Wait until the conversions are under way (the bound guards a hang).
  for (int i = 0; i < 3000 && source_->stats().running == 0; ++i) ::usleep(10000);
  EXPECT_GT(source_->stats().running, 0);
  source_->Shutdown();
  prepare.join();
  EXPECT_TRUE(s.ok()) << "fell back: " << s.ToString();
  EXPECT_TRUE(ListDir(root() + "/layers/tmp").empty());
  EXPECT_TRUE(ListDir(root() + "/layers/sha256").empty());
}

}  // namespace
}  // namespace evs::snapshot
