// LazyLayer end to end on this kernel (issue 6, "What must be shown" 2–3):
// a converted layer in a real registry, mounted as EROFS over the verified
// FUSE file, read through the mount like a container would:
// - files read lazily equal the source, and only part of the layer is
//   fetched for a few files;
// - a block the registry gets wrong makes the read that needs it fail with
//   EIO, the log names layer and block, and nothing wrong is cached; a tree
//   that does not match the root digest refuses the mount;
// - registry down: cached files still read, others fail with EIO within the
//   bound, and reads recover once it is back; a complete layer needs no
//   registry at all; re-attaching refetches nothing cached;
// - 50 readers of one layer at once.
#include "evs/lazy/lazy_layer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>

#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/verity/verifier.h"
#include "lazy_test_util.h"
#include "local_registry.h"
#include "test_util.h"

namespace evs::lazy {
namespace {

using evs::testing::FaultProxy;
using evs::testing::LocalRegistry;
using evs::testing::ReadFileOrDie;
using evs::testing::TempDir;
using testing::CompareTree;
using testing::FileMap;
using testing::LazyTestLayer;
using testing::NewClient;
using testing::Via;

#define REQUIRE_LAZY_MOUNTS()                                                              \
  do {                                                                                     \
    EVS_REQUIRE_ROOT();                                                                    \
    EVS_REQUIRE_LOCAL_REGISTRY();                                                          \
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";        \
    if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "kernel lacks erofs"; \
  } while (0)

// errno of reading the whole file, 0 when it read completely.
int ReadErrno(const std::string& path, std::string* out = nullptr) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return errno;
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return errno;
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  if (out) *out = std::move(data);
  return 0;
}

class LazyLayerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::IsRoot() || !evs::testing::HaveLocalRegistry()) return;
    dir_ = new TempDir("evs-lazy-layer-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    client_ = NewClient().release();
    auto layer = testing::MakeLazyTestLayer(*client_, registry_->host(), "lazy/app", dir_->path());
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    layer_ = new LazyTestLayer(std::move(*layer));
  }
  static void TearDownTestSuite() {
    delete layer_;
    delete client_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    REQUIRE_LAZY_MOUNTS();
    ASSERT_NE(layer_, nullptr);
    ASSERT_TRUE(MakeDirs(tmp_.Join("mnt")).ok());
  }

  static LazyLayerOptions Options() {
    LazyLayerOptions o;
    o.fetch.miss_timeout = std::chrono::milliseconds(2000);
    o.fetch.initial_backoff = std::chrono::milliseconds(50);
    o.fetch.max_backoff = std::chrono::milliseconds(300);
    return o;
  }

  Result<std::unique_ptr<LazyLayer>> Attach(const RemoteLayer& layer,
                                            LazyLayerOptions options = Options(),
                                            registry::RegistryClient* client = nullptr) {
    return LazyLayer::Attach(client ? client : client_, layer, tmp_.Join("cache"), Mnt(),
                             std::move(options));
  }
  std::string Mnt() const { return tmp_.Join("mnt"); }
  std::string At(const std::string& path) const { return JoinPath(Mnt(), path); }
  const std::string& Data(const std::string& path) const { return layer_->files.at(path); }

  // The file's offset in the layer (its data is stored contiguously).
  static uint64_t OffsetOf(const std::string& content) {
    const std::string bytes = ReadFileOrDie(layer_->layer_file);
    size_t at = bytes.find(content.substr(0, 4096));
    EXPECT_NE(at, std::string::npos);
    return at;
  }

  TempDir tmp_{"evs-lazy-layer"};
  static TempDir* dir_;
  static LocalRegistry* registry_;
  static registry::RegistryClient* client_;
  static LazyTestLayer* layer_;
};
TempDir* LazyLayerTest::dir_ = nullptr;
LocalRegistry* LazyLayerTest::registry_ = nullptr;
registry::RegistryClient* LazyLayerTest::client_ = nullptr;
LazyTestLayer* LazyLayerTest::layer_ = nullptr;

TEST_F(LazyLayerTest, FilesReadThroughTheMountEqualTheSourceAndOnlyWhatIsReadIsFetched) {
  auto layer = Attach(layer_->layer);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_TRUE(IsMountPoint(Mnt()));
  EXPECT_FALSE((*layer)->complete());

  std::string got;
  ASSERT_EQ(ReadErrno(At("small/f3/31.txt"), &got), 0);
  EXPECT_TRUE(got == Data("small/f3/31.txt"));
  ASSERT_EQ(ReadErrno(At("deep/a/b/c/d.txt"), &got), 0);
  EXPECT_EQ(got, "deep\n");
  const auto cold = (*layer)->stats();
  EXPECT_LT(cold.source.bytes_fetched, static_cast<uint64_t>(layer_->layer.descriptor.size) / 2)
      << "two small files need a fraction of the layer";
  EXPECT_GT(cold.source.misses, 0u);
  EXPECT_GT(cold.file.blocks_verified, 0u);
  EXPECT_EQ(cold.file.failures, 0u);

  // Everything, then: the whole tree as the source had it.
  EXPECT_EQ(CompareTree(Mnt(), layer_->files), "");
  ASSERT_TRUE((*layer)->FetchAll().ok());
  EXPECT_TRUE((*layer)->complete());
  EXPECT_LE((*layer)->stats().source.bytes_fetched,
            static_cast<uint64_t>(layer_->layer.descriptor.size))
      << "no byte fetched twice";
  ASSERT_TRUE((*layer)->Detach().ok());
  EXPECT_FALSE(IsMountPoint(Mnt()));
  // The cache is a complete layer file `evs verity verify` accepts.
  EXPECT_TRUE(LazyLayer::IsComplete(tmp_.Join("cache"), layer_->layer.verity.root_digest));
  verity::VerifyOptions verify;
  verify.hash_offset = layer_->layer.verity.hash_offset;
  EXPECT_TRUE(verity::VerifyImageFile(LazyLayer::LayerFile(tmp_.Join("cache")),
                                      layer_->layer.verity.root_digest, verify)
                  .ok());
}

TEST_F(LazyLayerTest, AReadNeedingABadBlockFailsWithEioAndNothingWrongIsCached) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  const uint64_t target = OffsetOf(Data("mid/target.bin"));
  LazyLayerOptions options = Options();
  // One-block chunks: the file's blocks stay unfetched until it is read,
  // and a fetch for it starts at its first block.
  options.fetch.fetch_size = 4096;
  LayerCacheIdentity id;
  id.blob = layer_->layer.descriptor.digest;
  id.size = static_cast<uint64_t>(layer_->layer.descriptor.size);
  id.block_size = 4096;
  id.hash_offset = layer_->layer.verity.hash_offset;
  id.root_digest = layer_->layer.verity.root_digest;
  // First, with the real registry, read what finding the file needs (the
  // directories and inodes); the file's own blocks stay missing.
  {
    auto layer = Attach(layer_->layer, options);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    struct stat st;
    ASSERT_EQ(::stat(At("mid/target.bin").c_str(), &st), 0);
    ASSERT_TRUE((*layer)->Detach().ok());
  }
  ASSERT_EQ(target % 4096, 0u) << "file data is block-aligned in full mode";
  const uint64_t bad_block = target / 4096;
  {
    auto cache = LayerCache::Open(tmp_.Join("cache"), id);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    ASSERT_FALSE((*cache)->present().Test(bad_block)) << "the file's data is not cached yet";
  }
  // Then through a proxy that flips byte 100 of every blob response after
  // the probe: the cached tree and metadata need no request, so the next
  // one is for the file, and so is the second try of its bad first block.
  const uint64_t flip = 100;
  auto proxy = FaultProxy::Start(
      registry_->host(), StrCat(R"([{"path":"/blobs/","method":"GET","skip":1,"fault":"corrupt",)",
                                R"("after_bytes":)", flip, "}]"));
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  {
    auto layer = Attach(Via(layer_->layer, (*proxy)->host()), options);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ::testing::internal::CaptureStderr();
    const int err = ReadErrno(At("mid/target.bin"));
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err, EIO);
    EXPECT_NE(log.find(layer_->layer.descriptor.digest.ToString()), std::string::npos) << log;
    EXPECT_NE(log.find(StrCat("block=", bad_block)), std::string::npos) << log;
    const auto s = (*layer)->stats();
    EXPECT_GE(s.source.verification_failures, 1u);
    EXPECT_GE(s.file.failures, 1u);
    ASSERT_TRUE((*layer)->Detach().ok());
  }
  // Nothing wrong reached the cache: the block is not marked, and on disk
  // it is a hole.
  {
    auto cache = LayerCache::Open(tmp_.Join("cache"), id);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    EXPECT_FALSE((*cache)->present().Test(bad_block));
    std::string block(4096, '\1');
    ASSERT_TRUE((*cache)->ReadAt(bad_block * 4096, block.data(), block.size()).ok());
    EXPECT_TRUE(block == std::string(4096, '\0'));
  }
  // With the real registry again the file reads, right.
  auto layer = Attach(layer_->layer);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::string got;
  ASSERT_EQ(ReadErrno(At("mid/target.bin"), &got), 0);
  EXPECT_TRUE(got == Data("mid/target.bin"));
}

TEST_F(LazyLayerTest, ATreeThatDoesNotMatchTheRootDigestRefusesTheMount) {
  RemoteLayer wrong = layer_->layer;
  std::string raw = wrong.verity.root_digest.raw();
  raw[31] ^= 0x80;
  wrong.verity.root_digest = Digest(HashAlgorithm::kSha256, raw);
  auto layer = Attach(wrong);
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().code(), Code::kDataLoss) << layer.status().ToString();
  EXPECT_FALSE(IsMountPoint(Mnt()));
  EXPECT_FALSE(IsMountPoint(tmp_.Join("cache/fuse")));
  // The same cache directory serves the right layer afterwards.
  auto right = Attach(layer_->layer);
  ASSERT_TRUE(right.ok()) << right.status().ToString();
}

TEST_F(LazyLayerTest, RegistryStoppedMidRunCachedFilesReadOthersFailWithEioThenRecover) {
  auto registry = evs::testing::LocalRegistry::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  TempDir scratch;
  auto remote =
      testing::MakeLazyTestLayer(*client_, (*registry)->host(), "down/app", scratch.path());
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  {
    auto layer = Attach(remote->layer);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ASSERT_EQ(ReadErrno(At("small/f1/12.txt")), 0);
    ASSERT_TRUE((*layer)->Detach().ok());
  }
  (*registry)->Stop();

  // Re-attached with the registry down (a fresh mount: nothing in the page
  // cache): the cached tree verifies, the cached file reads.
  auto layer = Attach(remote->layer);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::string got;
  ASSERT_EQ(ReadErrno(At("small/f1/12.txt"), &got), 0);
  EXPECT_TRUE(got == Data("small/f1/12.txt"));

  // An uncached file: EIO after the miss bound (2 s), not zeros, no hang.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(ReadErrno(At("big/blob.bin")), EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60))
      << "bounded: each FUSE read gives up after 2 s";
  EXPECT_GE((*layer)->stats().source.fetch_errors, 1u);

  // The registry returns: the same mount reads the file.
  ASSERT_TRUE((*registry)->Restart().ok());
  ASSERT_EQ(ReadErrno(At("big/blob.bin"), &got), 0);
  EXPECT_TRUE(got == Data("big/blob.bin"));
}

TEST_F(LazyLayerTest, ACompleteLayerAttachesWithoutTheRegistry) {
  auto registry = evs::testing::LocalRegistry::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  TempDir scratch;
  auto remote =
      testing::MakeLazyTestLayer(*client_, (*registry)->host(), "complete/app", scratch.path());
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  {
    auto layer = Attach(remote->layer);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ASSERT_TRUE((*layer)->FetchAll().ok());
    ASSERT_TRUE((*layer)->Detach().ok());
  }
  (*registry)->Stop();
  auto layer = Attach(remote->layer);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_TRUE((*layer)->local());
  EXPECT_TRUE((*layer)->complete());
  EXPECT_EQ(CompareTree(Mnt(), remote->files), "");
  EXPECT_EQ((*layer)->stats().file.failures, 0u);
}

TEST_F(LazyLayerTest, ReattachingRefetchesNothingCached) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  auto proxy = FaultProxy::Start(registry_->host());
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  const RemoteLayer via = Via(layer_->layer, (*proxy)->host());
  {
    auto layer = Attach(via);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    EXPECT_EQ(CompareTree(Mnt(), layer_->files), "");
  }  // destroyed: detached, bitmap saved
  const size_t requests = (*proxy)->Requests().size();
  auto layer = Attach(via);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(CompareTree(Mnt(), layer_->files), "");
  EXPECT_EQ((*proxy)->Requests().size(), requests) << "no request after re-attach";
  EXPECT_EQ((*layer)->stats().source.bytes_fetched, 0u);
}

TEST_F(LazyLayerTest, FiftyReadersOfOneLayerAtOnce) {
  LazyLayerOptions options = Options();
  options.fetch.fetch_size = 64u << 10;  // more chunks, more contention
  options.fetch.miss_timeout = std::chrono::seconds(20);
  auto layer = Attach(layer_->layer, options);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  std::vector<std::string> paths;
  for (const auto& [path, content] : layer_->files) paths.push_back(path);
  std::atomic<int> wrong{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 50; ++r) {
    readers.emplace_back([&, r] {
      std::vector<std::string> order = paths;
      std::shuffle(order.begin(), order.end(), std::mt19937(r));
      for (const auto& p : order) {
        std::string got;
        const std::string& want = Data(p);
        if (want.rfind("->", 0) == 0) continue;
        if (ReadErrno(At(p), &got) != 0 || got != want) wrong.fetch_add(1);
      }
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  const auto s = (*layer)->stats();
  EXPECT_EQ(s.file.failures, 0u);
  EXPECT_LE(s.source.bytes_fetched - s.source.tree_bytes_fetched, layer_->layer.verity.hash_offset)
      << "concurrent misses of one chunk share one fetch: nothing fetched twice";
}

TEST_F(LazyLayerTest, CachedReadsDoNotQueueBehindMissesWaitingForTheNetwork) {
  LazyLayerOptions options = Options();
  options.fetch.fetch_size = 4096;  // every miss its own request
  options.fetch.miss_timeout = std::chrono::seconds(30);
  const std::string cached = "small/f3/31.txt";
  {
    auto layer = Attach(layer_->layer, options);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ASSERT_EQ(ReadErrno(At(cached)), 0);
    ASSERT_TRUE((*layer)->Detach().ok());
  }
  // Again, through a registry that answers every blob GET after 1 s: the
  // tree and the file read above are cached, everything else waits.
  auto proxy = FaultProxy::Start(
      registry_->host(), R"([{"path":"/blobs/","method":"GET","fault":"delay","delay_ms":1000}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  auto layer = Attach(Via(layer_->layer, (*proxy)->host()), options);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  // More readers of uncached files than the layer has FUSE workers.
  std::vector<std::string> uncached;
  for (const auto& [path, content] : layer_->files) {
    if (path != cached && content.rfind("->", 0) != 0 && content.size() > 4096) {
      uncached.push_back(path);
    }
  }
  ASSERT_GE(uncached.size(), 10u);
  uncached.resize(10);
  std::atomic<int> done{0}, wrong{0};
  std::vector<std::thread> readers;
  for (const std::string& p : uncached) {
    readers.emplace_back([&, p] {
      std::string got;
      if (ReadErrno(At(p), &got) != 0 || got != Data(p)) wrong.fetch_add(1);
      done.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // they are all waiting now
  std::string got;
  ASSERT_EQ(ReadErrno(At(cached), &got), 0);
  EXPECT_EQ(done.load(), 0) << "the cached read was answered only after misses ended";
  EXPECT_TRUE(got == Data(cached));
  for (auto& t : readers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(LazyLayerTest, TheBackgroundFetcherCompletesAMountedLayer) {
  auto fetcher = BackgroundFetcher::Start();
  LazyLayerOptions options = Options();
  options.background = fetcher.get();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status result;
  options.on_complete = [&](const Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    result = st;
    cv.notify_all();
  };
  auto layer = Attach(layer_->layer, options);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return done; }));
  }
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_TRUE((*layer)->complete());
  EXPECT_GT((*layer)->stats().source.background_bytes_fetched, 0u);
  EXPECT_EQ(CompareTree(Mnt(), layer_->files), "");
  ASSERT_TRUE((*layer)->Detach().ok());
  EXPECT_TRUE(LazyLayer::IsComplete(tmp_.Join("cache"), layer_->layer.verity.root_digest));
}

TEST_F(LazyLayerTest, OneAttachPerCacheAndRemoveReleasesIt) {
  auto layer = Attach(layer_->layer);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  ASSERT_TRUE(MakeDirs(tmp_.Join("mnt2")).ok());
  auto second =
      LazyLayer::Attach(client_, layer_->layer, tmp_.Join("cache"), tmp_.Join("mnt2"), Options());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition) << second.status().ToString();
  EXPECT_FALSE(IsMountPoint(tmp_.Join("mnt2")));
  EXPECT_EQ(LazyLayer::RemoveCache(tmp_.Join("cache")).code(), Code::kFailedPrecondition);

  // Busy: Detach refuses and the layer keeps working.
  {
    UniqueFd open_file(::open(At("small/f0/1.txt").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(open_file.valid());
    EXPECT_EQ((*layer)->Detach().code(), Code::kFailedPrecondition);
    EXPECT_EQ(ReadErrno(At("small/f0/2.txt")), 0);
  }
  ASSERT_TRUE((*layer)->Remove().ok());
  EXPECT_FALSE(IsMountPoint(Mnt()));
  EXPECT_NE(::access(tmp_.Join("cache").c_str(), F_OK), 0) << "the cache is gone";
}

}  // namespace
}  // namespace evs::lazy
