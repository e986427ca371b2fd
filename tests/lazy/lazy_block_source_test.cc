// LazyBlockSource against a real registry (issue 6, "Lazy mounting" and
// "What must be shown" 2–3), read directly, without FUSE, so that what is
// fetched, verified and cached can be checked byte by byte:
// - a miss fetches its aligned chunk, once, however many readers want it;
// - a block the registry gets wrong is never cached and fails the read,
//   naming layer and block; a tree that does not match the root is refused;
// - a cached block that no longer verifies is dropped and fetched again;
// - registry down: cached blocks read, misses fail within the bound, and
//   reads recover by themselves when it is back; resets, slow responses and
//   expiring tokens are ridden out;
// - the background fetcher completes a layer and marks it verified.
#include "evs/lazy/lazy_block_source.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <thread>

#include "evs/common/file.h"
#include "evs/lazy/background_fetcher.h"
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
using testing::LazyTestLayer;
using testing::NewClient;
using testing::Via;

constexpr uint32_t kChunk = 512u << 10;

class LazyBlockSourceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!evs::testing::HaveLocalRegistry()) return;
    dir_ = new TempDir("evs-lazy-source-test");
    auto registry = LocalRegistry::Start();
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    registry_ = registry->release();
    client_ = NewClient().release();
    auto layer = testing::MakeLazyTestLayer(*client_, registry_->host(), "lazy/app", dir_->path());
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    layer_ = new LazyTestLayer(std::move(*layer));
    bytes_ = new std::string(ReadFileOrDie(layer_->layer_file));
  }
  static void TearDownTestSuite() {
    delete bytes_;
    delete layer_;
    delete client_;
    delete registry_;
    delete dir_;
  }
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    ASSERT_NE(layer_, nullptr);
  }

  static LazyFetchOptions Fast() {
    LazyFetchOptions o;
    o.miss_timeout = std::chrono::milliseconds(1500);
    o.initial_backoff = std::chrono::milliseconds(50);
    o.max_backoff = std::chrono::milliseconds(200);
    return o;
  }

  static LayerCacheIdentity IdentityOf(const RemoteLayer& l) {
    LayerCacheIdentity id;
    id.blob = l.descriptor.digest;
    id.size = static_cast<uint64_t>(l.descriptor.size);
    id.block_size = l.verity.block_size;
    id.hash_offset = l.verity.hash_offset;
    id.root_digest = l.verity.root_digest;
    return id;
  }

  Result<std::shared_ptr<LazyBlockSource>> Open(registry::RegistryClient* client,
                                                const RemoteLayer& layer,
                                                const std::string& cache_dir,
                                                LazyFetchOptions options = Fast()) {
    EVS_ASSIGN_OR_RETURN(auto cache, LayerCache::Open(cache_dir, IdentityOf(layer)));
    return LazyBlockSource::Open(client, layer, std::move(cache), options);
  }

  // Reads [offset, offset+n) and compares it with the layer's bytes.
  static Status ReadAndCompare(LazyBlockSource& s, uint64_t offset, size_t n) {
    std::string buf(n, '\0');
    EVS_RETURN_IF_ERROR(s.ReadAt(offset, buf.data(), n));
    if (buf != bytes_->substr(offset, n)) return DataLossError("bytes differ at ", offset);
    return OkStatus();
  }

  static uint64_t TreeBytes() {
    return layer_->layer.descriptor.size - layer_->layer.verity.hash_offset;
  }
  static uint64_t ChunkOf(uint64_t offset) { return offset / kChunk; }

  static TempDir* dir_;
  static LocalRegistry* registry_;
  static registry::RegistryClient* client_;
  static LazyTestLayer* layer_;
  static std::string* bytes_;
};
TempDir* LazyBlockSourceTest::dir_ = nullptr;
LocalRegistry* LazyBlockSourceTest::registry_ = nullptr;
registry::RegistryClient* LazyBlockSourceTest::client_ = nullptr;
LazyTestLayer* LazyBlockSourceTest::layer_ = nullptr;
std::string* LazyBlockSourceTest::bytes_ = nullptr;

TEST_F(LazyBlockSourceTest, AMissFetchesItsAlignedChunkAndNothingElse) {
  TempDir cache;
  auto source = Open(client_, layer_->layer, cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  LazyBlockSource& s = **source;
  // Opening fetched the tree region only, in one request.
  EXPECT_EQ(s.stats().requests, 1u);
  EXPECT_EQ(s.stats().bytes_fetched, TreeBytes());
  EXPECT_EQ(s.stats().tree_bytes_fetched, TreeBytes());

  const uint64_t offset = 2 * kChunk + 3 * 4096 + 100;  // inside chunk 2
  ASSERT_TRUE(ReadAndCompare(s, offset, 1000).ok());
  EXPECT_EQ(s.stats().requests, 2u);
  EXPECT_EQ(s.stats().bytes_fetched - TreeBytes(), kChunk);
  EXPECT_EQ(s.stats().misses, 1u);
  EXPECT_TRUE(s.ChunkReady(2));
  EXPECT_FALSE(s.ChunkReady(1));
  EXPECT_FALSE(s.ChunkReady(3));

  // Anything in that chunk is now local: no request.
  EXPECT_TRUE(s.IsLocal(2 * kChunk, kChunk));
  ASSERT_TRUE(ReadAndCompare(s, 2 * kChunk, kChunk).ok());
  EXPECT_EQ(s.stats().requests, 2u);
  EXPECT_EQ(s.stats().misses, 1u);
  EXPECT_FALSE(s.IsLocal(kChunk, 4096));

  // A read across two missing chunks: one GET for both.
  ASSERT_TRUE(ReadAndCompare(s, 4 * kChunk - 2048, 4096).ok());
  EXPECT_EQ(s.stats().requests, 3u);
  EXPECT_EQ(s.stats().bytes_fetched - TreeBytes(), 3 * kChunk);
}

TEST_F(LazyBlockSourceTest, ConcurrentMissesOnOneChunkShareOneRequest) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  // Every blob GET waits 300 ms upstream, so the readers overlap.
  auto proxy = FaultProxy::Start(
      registry_->host(), R"([{"path":"/blobs/","method":"GET","fault":"delay","delay_ms":300}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  LazyBlockSource& s = **source;
  const uint64_t requests_before = s.stats().requests;

  constexpr int kReaders = 16;
  std::atomic<int> ready{0}, failures{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kReaders) std::this_thread::yield();
      // Different blocks, all in chunk 1.
      if (!ReadAndCompare(s, kChunk + static_cast<uint64_t>(i) * 4096 * 7, 4096).ok()) {
        failures.fetch_add(1);
      }
    });
  }
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(s.stats().requests - requests_before, 1u);
  EXPECT_EQ(s.stats().bytes_fetched - TreeBytes(), kChunk);
}

TEST_F(LazyBlockSourceTest, ABlockTheRegistryGetsWrongIsNeverCached) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  // Requests 1 and 2 (the one-byte probe and the tree) pass; every later
  // blob response has its byte 1000 flipped: the first block of whatever
  // range was asked for.
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","skip":2,"fault":"corrupt","after_bytes":1000}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  const uint64_t bad_block = 3 * kChunk / 4096;  // first block of chunk 3
  {
    auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"));
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    LazyBlockSource& s = **source;
    ::testing::internal::CaptureStderr();
    std::string buf(4096, '\0');
    Status st = s.ReadAt(bad_block * 4096, buf.data(), buf.size());
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), Code::kDataLoss) << st.ToString();
    EXPECT_NE(st.message().find(StrCat("block ", bad_block)), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(layer_->layer.descriptor.digest.ToString()), std::string::npos);
    // The log names layer and block.
    EXPECT_NE(log.find(layer_->layer.descriptor.digest.ToString()), std::string::npos) << log;
    EXPECT_NE(log.find(StrCat("block=", bad_block)), std::string::npos) << log;
    // Fetched twice (a second fetch heals a one-off flip), failed twice; the
    // chunk's good blocks are cached, the bad one is not.
    EXPECT_EQ(s.stats().verification_failures, 2u);
    EXPECT_FALSE(s.cache().present().Test(bad_block));
    EXPECT_TRUE(s.cache().present().Test(bad_block + 1));
    EXPECT_TRUE(s.cache().present().Test(bad_block + kChunk / 4096 - 1));
    // Reading the good neighbours works and needs no request.
    const uint64_t requests = s.stats().requests;
    EXPECT_TRUE(ReadAndCompare(s, (bad_block + 1) * 4096, 4096).ok());
    EXPECT_EQ(s.stats().requests, requests);
  }
  // On disk: zeros (a hole) where the bad block would be, not its bytes.
  const std::string on_disk = ReadFileOrDie(cache.Join("c/layer.erofs"));
  EXPECT_TRUE(on_disk.substr(bad_block * 4096, 4096) == std::string(4096, '\0'));
  // Re-opened with no registry at all: the chunk's cached blocks read (they
  // need no network, whatever the chunk is missing), the bad one fails.
  {
    const std::string nobody = "127.0.0.1:" + std::to_string(evs::testing::FreePort());
    auto offline = Open(client_, Via(layer_->layer, nobody), cache.Join("c"));
    ASSERT_TRUE(offline.ok()) << offline.status().ToString();
    EXPECT_TRUE(ReadAndCompare(**offline, (bad_block + 1) * 4096, 3 * 4096).ok());
    EXPECT_EQ((*offline)->stats().requests, 0u);
    std::string buf(4096, '\0');
    EXPECT_EQ((*offline)->ReadAt(bad_block * 4096, buf.data(), buf.size()).code(),
              Code::kUnavailable);
  }
  // From the registry itself the block arrives and verifies.
  auto clean = Open(client_, layer_->layer, cache.Join("c"));
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_TRUE(ReadAndCompare(**clean, bad_block * 4096, 4096).ok());
  EXPECT_EQ((*clean)->stats().requests, 1u) << "only the missing block; the tree is cached";
  EXPECT_EQ((*clean)->stats().bytes_fetched, 4096u);
}

TEST_F(LazyBlockSourceTest, AOneOffBadBlockIsFetchedOnceMore) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","skip":2,"times":1,"fault":"corrupt","after_bytes":9000}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_TRUE(ReadAndCompare(**source, 4 * kChunk, kChunk).ok());
  EXPECT_EQ((*source)->stats().verification_failures, 1u);
  EXPECT_TRUE((*source)->ChunkReady(4));
}

TEST_F(LazyBlockSourceTest, ATreeThatDoesNotMatchTheRootDigestIsRefused) {
  TempDir cache;
  RemoteLayer wrong = layer_->layer;
  std::string raw = wrong.verity.root_digest.raw();
  raw[0] ^= 1;
  wrong.verity.root_digest = Digest(HashAlgorithm::kSha256, raw);
  auto source = Open(client_, wrong, cache.Join("c"));
  ASSERT_FALSE(source.ok());
  EXPECT_EQ(source.status().code(), Code::kDataLoss) << source.status().ToString();
  EXPECT_NE(source.status().message().find(layer_->layer.descriptor.digest.ToString()),
            std::string::npos);
  // Nothing of the tree was kept as present.
  auto reopened = LayerCache::Open(cache.Join("c"), IdentityOf(wrong));
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->present().Count(), 0u);
}

TEST_F(LazyBlockSourceTest, ATreeCorruptedOnTheWayIsRefused) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  // The tree GET (the second blob request) gets a byte of its first hash
  // block flipped (the superblock is the first 4096 bytes of the range).
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","skip":1,"times":1,"fault":"corrupt","after_bytes":4200}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"));
  ASSERT_FALSE(source.ok());
  EXPECT_EQ(source.status().code(), Code::kDataLoss) << source.status().ToString();
  EXPECT_NE(source.status().message().find("does not match root digest"), std::string::npos)
      << source.status().message();
}

TEST_F(LazyBlockSourceTest, ACachedBlockThatNoLongerVerifiesIsDroppedAndFetchedAgain) {
  TempDir cache;
  const uint64_t offset = 5 * kChunk + 8 * 4096;
  {
    auto source = Open(client_, layer_->layer, cache.Join("c"));
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    ASSERT_TRUE(ReadAndCompare(**source, offset, 4096).ok());
  }
  // Damage the cached block on disk.
  {
    auto fd = OpenFile(cache.Join("c/layer.erofs"), O_RDWR);
    ASSERT_TRUE(fd.ok());
    char c = static_cast<char>((*bytes_)[offset + 17] ^ 0x40);
    ASSERT_TRUE(PwriteAll(fd->get(), &c, 1, static_cast<off_t>(offset + 17), "cache").ok());
  }
  auto source = Open(client_, layer_->layer, cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_EQ((*source)->stats().requests, 0u) << "the cached tree verified: no network";
  EXPECT_TRUE(ReadAndCompare(**source, offset, 4096).ok());
  EXPECT_EQ((*source)->stats().cached_blocks_dropped, 1u);
  EXPECT_EQ((*source)->stats().requests, 1u);
  // Its neighbours were checked and kept.
  EXPECT_TRUE(ReadAndCompare(**source, offset + 4096, 4096).ok());
  EXPECT_EQ((*source)->stats().requests, 1u);
}

TEST_F(LazyBlockSourceTest, RegistryDownCachedBlocksReadMissesFailInBoundAndRecover) {
  auto registry = evs::testing::LocalRegistry::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  TempDir scratch;
  auto layer =
      testing::MakeLazyTestLayer(*client_, (*registry)->host(), "down/app", scratch.path());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  TempDir cache;
  {
    auto source = Open(client_, layer->layer, cache.Join("c"));
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    std::string buf(4096, '\0');
    ASSERT_TRUE((*source)->ReadAt(kChunk, buf.data(), buf.size()).ok());
  }
  (*registry)->Stop();

  // Re-opened with the registry down: the cached tree and chunk serve.
  auto source = Open(client_, layer->layer, cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  LazyBlockSource& s = **source;
  const std::string expected = ReadFileOrDie(layer->layer_file);
  std::string buf(kChunk, '\0');
  ASSERT_TRUE(s.ReadAt(kChunk, buf.data(), buf.size()).ok());
  EXPECT_TRUE(buf == expected.substr(kChunk, kChunk));

  // A miss fails — Unavailable, not zeros — after retrying for the bound.
  std::string miss(4096, '\x5a');
  const auto start = std::chrono::steady_clock::now();
  Status st = s.ReadAt(3 * kChunk, miss.data(), miss.size());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_TRUE(miss == std::string(4096, '\x5a')) << "nothing was written to the buffer";
  EXPECT_GE(elapsed, Fast().miss_timeout / 2) << "it retried";
  EXPECT_LT(elapsed, std::chrono::seconds(30)) << "bounded (miss_timeout is 1.5 s)";
  EXPECT_GE(s.stats().fetch_errors, 1u);

  // The registry comes back: the same source reads, no re-open.
  ASSERT_TRUE((*registry)->Restart().ok());
  ASSERT_TRUE(s.ReadAt(3 * kChunk, miss.data(), miss.size()).ok());
  EXPECT_TRUE(miss == expected.substr(3 * kChunk, 4096));
}

TEST_F(LazyBlockSourceTest, WithoutACachedTreeAnUnreachableRegistryFailsOpenInBound) {
  TempDir cache;
  LazyFetchOptions options = Fast();
  options.tree_timeout = std::chrono::milliseconds(1500);
  const std::string nobody = "127.0.0.1:" + std::to_string(evs::testing::FreePort());
  const auto start = std::chrono::steady_clock::now();
  auto source = Open(client_, Via(layer_->layer, nobody), cache.Join("c"), options);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(source.ok());
  EXPECT_TRUE(source.status().code() == Code::kUnavailable ||
              source.status().code() == Code::kDeadlineExceeded)
      << source.status().ToString();
  EXPECT_NE(source.status().message().find(nobody), std::string::npos)
      << "names the registry: " << source.status().message();
  EXPECT_LT(elapsed, std::chrono::seconds(30)) << "bounded (tree_timeout is 1.5 s)";
}

TEST_F(LazyBlockSourceTest, ConnectionResetsDuringRangeReadsAreRetried) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  // After the probe and the tree, the next three blob responses are cut
  // with a TCP reset after 100 KB.
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","skip":2,"times":3,"fault":"reset","after_bytes":100000}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  LazyFetchOptions options = Fast();
  options.miss_timeout = std::chrono::seconds(20);
  auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"), options);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  for (uint64_t c = 0; c < 4; ++c) {
    EXPECT_TRUE(ReadAndCompare(**source, c * kChunk, kChunk).ok()) << "chunk " << c;
  }
  int resets = 0;
  for (const auto& r : (*proxy)->Requests()) resets += r.at("fault") == "reset";
  EXPECT_EQ(resets, 3);
}

TEST_F(LazyBlockSourceTest, ASlowRegistryIsWaitedFor) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  auto proxy = FaultProxy::Start(registry_->host(),
                                 R"([{"path":"/blobs/","fault":"delay","delay_ms":700}])");
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  TempDir cache;
  auto source = Open(client_, Via(layer_->layer, (*proxy)->host()), cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_TRUE(ReadAndCompare(**source, 7 * kChunk, 10000).ok());
}

TEST_F(LazyBlockSourceTest, TokensThatExpireDuringALongRunAreRefreshed) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  evs::testing::TokenServerOptions token_options;
  token_options.lifetime = std::chrono::seconds(2);
  token_options.expires_in = 300;  // the client is told 300 s: it learns of expiry from a 401
  token_options.registry_leeway = std::chrono::seconds(60);  // distribution's clock leeway
  auto tokens = evs::testing::TokenServer::Start(token_options);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  evs::testing::LocalRegistryOptions registry_options;
  registry_options.token_server = tokens->get();
  auto registry = LocalRegistry::Start(registry_options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  auto client = NewClient();
  TempDir scratch;
  auto layer = testing::MakeLazyTestLayer(*client, (*registry)->host(), "auth/app", scratch.path());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const std::string expected = ReadFileOrDie(layer->layer_file);

  TempDir cache;
  auto source = Open(client.get(), layer->layer, cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  std::string buf(4096, '\0');
  ASSERT_TRUE((*source)->ReadAt(0, buf.data(), buf.size()).ok());
  const int issued = (*tokens)->TokensIssued();
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // past the token's life
  ASSERT_TRUE((*source)->ReadAt(6 * kChunk, buf.data(), buf.size()).ok());
  EXPECT_TRUE(buf == expected.substr(6 * kChunk, 4096));
  EXPECT_GT((*tokens)->TokensIssued(), issued) << "a fresh token was fetched";
}

TEST_F(LazyBlockSourceTest, TheBackgroundFetcherCompletesAndMarksTheLayer) {
  TempDir cache;
  auto source = Open(client_, layer_->layer, cache.Join("c"));
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  auto fetcher = BackgroundFetcher::Start();
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Status> done;
  fetcher->Add(*source, [&](const Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    done = st;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return done.has_value(); }))
        << "the layer did not complete";
  }
  ASSERT_TRUE(done->ok()) << done->ToString();
  EXPECT_TRUE((*source)->complete());
  EXPECT_TRUE((*source)->AllReady());
  EXPECT_EQ((*source)->stats().background_bytes_fetched, layer_->layer.verity.hash_offset);
  EXPECT_EQ(fetcher->stats().layers_completed, 1u);
  EXPECT_EQ(fetcher->stats().layers_queued, 0u);
  fetcher.reset();
  source->reset();
  // The cache is the layer: byte for byte the blob, and marked complete.
  EXPECT_TRUE(LayerCache::IsComplete(cache.Join("c"), layer_->layer.verity.root_digest));
  EXPECT_TRUE(ReadFileOrDie(cache.Join("c/layer.erofs")) == *bytes_);
}

}  // namespace
}  // namespace evs::lazy
