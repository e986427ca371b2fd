// End to end through the lazy path (DESIGN.md §1 "lazy"; docs/lazy.md):
// an image converted by `evs image convert --layer-media-type oci` into the
// local registry, pulled through containerd 1.6 (with its CRI plugin) and
// evs — by `ctr-remote images rpull` and by a CRI PullImage call — then
// `ctr run`. evs mounts each layer at once and fetches blocks from the
// registry as they are read (each verified against the layer's dm-verity
// tree), from a process of its own per layer that keeps serving running
// containers across daemon restarts and kill -9.
//
// containerd 1.6 treats only media types it knows as layers
// (images.IsLayerType): application/vnd.erofs.layer.v1 (the converter's
// default, containerd 2.3's name) would be fetched whole as content and
// never reach the snapshotter, so the images here are converted with the
// OCI-prefixed name application/vnd.oci.image.layer.v1.erofs.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "containerd_fixture.h"
#include "evs/common/file.h"

namespace evs::integration {
namespace {

using evs::testing::FaultProxy;
using evs::testing::ReadFileOrDie;
using evs::testing::Sh;
using evs::testing::ShOk;

class LazyPull : public ContainerdWithEvs {
 protected:
  explicit LazyPull(WorldOptions options = {.cri = true, .registry_access_log = true})
      : ContainerdWithEvs(std::move(options)) {}

  void SetUp() override {
    for (const char* p : {"ctr-remote", "curl"}) {
      if (!evs::testing::HaveProgram(p)) GTEST_SKIP() << "needs " << p << " in PATH";
    }
    if (::access(EvsCli().c_str(), X_OK) != 0) GTEST_SKIP() << "needs " << EvsCli();
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";
    ContainerdWithEvs::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Only what containers read is fetched: no background completion, so
    // the bytes fetched are the bytes the container needed.
    evs_.Stop();
    StartEvs({"--lazy-background-fetch", "false"});
  }

  static std::string EvsCli() { return evs::testing::BuildDir() + "/src/cli/evs"; }

  // `evs image convert --layer-media-type oci` of `src` into `<src
  // repo>:lazy`; returns that reference.
  std::string Convert(const std::string& src) {
    std::string lazy = src.substr(0, src.rfind(':')) + ":lazy";
    ShOk(EvsCli() + " image convert --layer-media-type oci --hosts-dir " + Quote(HostsDir()) +
         Creds() + " " + src + " " + lazy + " 2>&1");
    return lazy;
  }

  void Rpull(const std::string& ref, const std::string& ns = "evs-test") {
    ShOk("ctr-remote --address " + CtrSocket() + " --namespace " + ns +
         " images rpull --plain-http --snapshotter evs" + PullUser() + " " + ref + " 2>&1");
  }
  // The kubelet's call (namespace k8s.io).
  std::string CriPull(const std::string& ref) {
    std::string user =
        options_.registry_user.empty()
            ? ""
            : " --user " + Quote(options_.registry_user + ":" + options_.registry_password);
    std::string out = ShOk(evs::testing::BuildDir() + "/integration/cri-pull --address " +
                           CtrSocket() + user + " " + ref + " 2>&1");
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // Lines in the registry's access log so far.
  size_t LogLines() {
    std::string log = ReadFileOrDie(registry_->log_path());
    return static_cast<size_t>(std::count(log.begin(), log.end(), '\n'));
  }

  // Bytes of layer blobs the registry served after its first `skip_lines`
  // log lines (combined format: … "GET /v2/…/blobs/sha256:… HTTP/1.1"
  // STATUS BYTES …).
  int64_t BlobBytesServed(const std::vector<std::string>& digests, size_t skip_lines = 0) {
    int64_t total = 0;
    std::string log = ReadFileOrDie(registry_->log_path());
    size_t start = 0;
    for (size_t line_no = 0; start < log.size(); ++line_no) {
      size_t nl = log.find('\n', start);
      std::string line = log.substr(start, nl - start);
      start = nl == std::string::npos ? log.size() : nl + 1;
      if (line_no < skip_lines || line.find("\"GET /v2/") == std::string::npos) continue;
      bool layer = std::any_of(digests.begin(), digests.end(), [&](const std::string& d) {
        return line.find("/blobs/" + d + " ") != std::string::npos;
      });
      if (!layer) continue;
      size_t quote = line.find("\" ", line.find("\"GET "));
      if (quote == std::string::npos) continue;
      int status = 0;
      long long bytes = 0;
      if (std::sscanf(line.c_str() + quote + 2, "%d %lld", &status, &bytes) == 2) total += bytes;
    }
    return total;
  }

  // The sizes of the layer blobs, from the registry's storage.
  int64_t LayerBytes(const std::vector<std::string>& digests) {
    int64_t total = 0;
    for (const std::string& d : digests) {
      total += std::stoll(ShOk("stat -c %s " + Quote(registry_->storage_dir()) +
                               "/docker/registry/v2/blobs/sha256/" + d.substr(7, 2) + "/" +
                               d.substr(7) + "/data"));
    }
    return total;
  }

  // The image: HidingImage() plus, in the data layer, 8 MiB a container
  // never reads (BigFile()).
  std::vector<LayerSpec> Image() {
    std::vector<LayerSpec> layers = HidingImage();
    layers[1].files["unread/big.bin"] = BigFile();
    return layers;
  }
  static std::string BigFile() {
    std::string big;
    for (int i = 0; i < (8 << 20) / 16; ++i) big += std::to_string(1000000000000000 + i);
    return big;
  }

  // `ctr snapshots usage -b` of every snapshot: key → (bytes, inodes).
  std::map<std::string, std::pair<int64_t, int64_t>> Usage(const std::string& ns) {
    std::map<std::string, std::pair<int64_t, int64_t>> usage;
    std::string out = Ctr("snapshots --snapshotter evs usage -b", ns);
    size_t start = out.find('\n');  // after the KEY SIZE INODES header
    while (start != std::string::npos && start + 1 < out.size()) {
      long long size = -1, inodes = -1;
      char key[512];
      if (std::sscanf(out.c_str() + start + 1, "%511s %lld %lld", key, &size, &inodes) == 3) {
        usage[key] = {size, inodes};
      }
      start = out.find('\n', start + 1);
    }
    return usage;
  }

  void ReportFetched(const std::string& how, int64_t fetched, int64_t total) {
    RecordProperty(how + "_bytes_fetched_before_first_output", std::to_string(fetched));
    RecordProperty(how + "_layer_bytes", std::to_string(total));
    std::printf(
        "lazy (%s): %lld of %lld layer bytes (%.1f %%) fetched before the container's "
        "first output\n",
        how.c_str(), static_cast<long long>(fetched), static_cast<long long>(total),
        100.0 * static_cast<double>(fetched) / static_cast<double>(total));
  }
};

TEST_F(LazyPull, AConvertedImageRunsBeforeItIsDownloaded) {
  std::string lazy = Convert(PushImage("lazy", Image()));
  std::vector<std::string> layers = LayerDigests(lazy);
  ASSERT_EQ(layers.size(), 3u);
  Rpull(lazy);
  EXPECT_EQ(CountInLog(EvsLog(), "lazy layer prepared"), 3) << Tail(EvsLog());
  std::string content = Ctr("content ls -q");
  for (const std::string& d : layers) {
    EXPECT_EQ(content.find(d), std::string::npos) << "containerd fetched layer blob " << d;
  }
  EXPECT_EQ(Run(lazy, "l1", HidingImageScript()), HidingImageOutput());

  // What the container needed came from the registry on demand; the file it
  // never read did not.
  int64_t fetched = BlobBytesServed(layers);
  int64_t total = LayerBytes(layers);
  ReportFetched("rpull", fetched, total);
  EXPECT_GT(fetched, 0);
  EXPECT_LT(fetched, 8 << 20) << "the unread 8 MiB file was not fetched";

  // Usage is what the layers' caches hold, and their inodes: the top
  // layer holds / and top.txt; the data layer, never read in full, holds
  // less than its blob.
  auto usage = Usage("evs-test");
  ASSERT_EQ(usage.size(), 3u) << Ctr("snapshots --snapshotter evs usage -b");
  int64_t cached = 0;
  std::vector<int64_t> inodes;
  for (const auto& [key, u] : usage) {
    EXPECT_GT(u.first, 0) << key;
    cached += u.first;
    inodes.push_back(u.second);
  }
  EXPECT_LE(cached, total + 3 * 4096) << "the cache is the layer, not a second copy";
  EXPECT_LT(cached, 8 << 20) << "the unread file takes no disk";
  std::sort(inodes.begin(), inodes.end());
  EXPECT_EQ(inodes[0], 2) << "the top layer: / and top.txt";
  EXPECT_GT(inodes[2], 10) << "the base layer: busybox, its links, etc/, data/, opaque/ …";

  // Removing the image removes the lazy layers: processes, mounts, caches.
  Ctr("images rm --sync " + lazy);
  EXPECT_EQ(Sh("ls -A " + Quote(EvsRoot() + "/cache")).stdout_data, "");
  EXPECT_EQ(Sh("grep -c ' " + EvsRoot() + "/' /proc/self/mountinfo").stdout_data, "0\n");
}

TEST_F(LazyPull, ACriPullImageCallPullsLazilyAndTheContainerRuns) {
  std::string lazy = Convert(PushImage("cri", Image()));
  std::vector<std::string> layers = LayerDigests(lazy);
  ASSERT_EQ(layers.size(), 3u);
  size_t before = LogLines();
  std::string id = CriPull(lazy);
  EXPECT_EQ(id.rfind("sha256:", 0), 0u) << id;
  EXPECT_EQ(CountInLog(EvsLog(), "lazy layer prepared"), 3) << Tail(EvsLog());
  std::string content = Ctr("content ls -q", "k8s.io");
  for (const std::string& d : layers) {
    EXPECT_EQ(content.find(d), std::string::npos) << "containerd fetched layer blob " << d;
  }
  EXPECT_EQ(Run(lazy, "k1", HidingImageScript(), "k8s.io"), HidingImageOutput());
  int64_t fetched = BlobBytesServed(layers, before);
  int64_t total = LayerBytes(layers);
  ReportFetched("cri", fetched, total);
  EXPECT_GT(fetched, 0);
  EXPECT_LT(fetched, 8 << 20) << "the unread 8 MiB file was not fetched";
}

TEST_F(LazyPull, ARunningContainerKeepsReadingLazyLayersAcrossRestartsAndKillNine) {
  std::string lazy = Convert(PushImage("lazy-restart", Image()));
  Rpull(lazy);
  std::string out = dir_.Join("out");
  ASSERT_NO_FATAL_FAILURE(StartReader(lazy, "reader", out));
  ASSERT_TRUE(ReaderRounds(out));
  evs_.Stop();
  EXPECT_TRUE(ReaderRounds(out)) << "while the daemon is down";
  StartEvs({"--lazy-background-fetch", "false"});
  EXPECT_TRUE(ReaderRounds(out)) << "after a restart";
  EXPECT_EQ(CountInLog(EvsLog(), "adopted a lazy layer"), 3) << Tail(EvsLog());
  ASSERT_EQ(::kill(evs_.pid(), SIGKILL), 0);
  evs_.Stop();
  EXPECT_TRUE(ReaderRounds(out)) << "after kill -9";
  StartEvs({"--lazy-background-fetch", "false"});
  EXPECT_TRUE(ReaderRounds(out)) << "after the second restart";
  EXPECT_EQ(CountInLog(EvsLog(), "adopted a lazy layer"), 6) << Tail(EvsLog());
  EXPECT_EQ(ReadFileOrDie(out + "/r"), "hello from layer 2\nkept\nnew\n");
  EXPECT_EQ(Sh("cat " + Quote(out + "/errors") + " 2>/dev/null").stdout_data, "")
      << "rounds that failed to read";
}

TEST_F(LazyPull, ACompletedLazyLayerIsMountedFromItsCacheAfterARestart) {
  // With the background fetch (SetUp turned it off).
  evs_.Stop();
  StartEvs({"--lazy-background-fetch", "true"});
  std::string lazy = Convert(PushImage("complete", Image()));
  Rpull(lazy);
  // The background fetch completes the three layers (small: seconds; the
  // bound guards a hang).
  auto complete = [&] {
    return Sh("ls " + Quote(EvsRoot()) + "/cache/*/complete 2>/dev/null | wc -l").stdout_data;
  };
  for (int i = 0; i < 6000 && complete() != "3\n"; ++i) ::usleep(10000);
  ASSERT_EQ(complete(), "3\n") << Tail(EvsLog());

  // No container uses the layers: a stopped daemon stops their processes.
  evs_.Stop();
  EXPECT_EQ(Sh("pgrep -fc " + Quote("[s]erve-lazy-layer.*" + EvsRoot())).stdout_data, "0\n");
  // With the registry gone, the restarted daemon mounts them from their
  // caches like local layers, not through lazy processes.
  registry_->Stop();
  StartEvs({"--lazy-background-fetch", "true"});
  EXPECT_EQ(Run(lazy, "c1", HidingImageScript()), HidingImageOutput());
  EXPECT_EQ(CountInLog(EvsLog(), "mounted from its cache like a local layer"), 3) << Tail(EvsLog());
  EXPECT_EQ(Sh("pgrep -fc " + Quote("[s]erve-lazy-layer.*" + EvsRoot())).stdout_data, "0\n");
  // Removing the image still removes the caches.
  Ctr("images rm --sync " + lazy);
  EXPECT_EQ(Sh("ls -A " + Quote(EvsRoot() + "/cache")).stdout_data, "");
}

TEST_F(LazyPull, FiftyContainersReadTheSameLazyLayerAtOnce) {
  // Foreground misses only (SetUp turned the background fetch off).
  std::string lazy = Convert(PushImage("fifty", Image()));
  std::vector<std::string> layers = LayerDigests(lazy);
  Rpull(lazy);
  evs::testing::WriteFile(dir_.Join("big.bin"), BigFile());
  const std::string want = ShOk("md5sum < " + Quote(dir_.Join("big.bin")) + " | cut -d' ' -f1");
  ASSERT_TRUE(MakeDirs(dir_.Join("fifty")).ok());
  size_t before = LogLines();
  // 50 containers started at once, each reading the whole 8 MiB file no
  // block of which is cached yet.
  ShOk("for i in $(seq 1 50); do " +
           CtrCommand("run --rm --snapshotter evs " + lazy + " fifty-$i /bin/busybox md5sum " +
                      "/unread/big.bin") +
           " > " + Quote(dir_.Join("fifty")) + "/$i 2>&1 & done; wait",
       600000);
  for (int i = 1; i <= 50; ++i) {
    EXPECT_EQ(ReadFileOrDie(dir_.Join("fifty/" + std::to_string(i))),
              want.substr(0, want.size() - 1) + "  /unread/big.bin\n")
        << "container " << i;
  }
  // Concurrent misses on one range were merged: no block came twice.
  int64_t served = BlobBytesServed(layers, before);
  EXPECT_GE(served, 8 << 20);
  EXPECT_LE(served, LayerBytes(layers)) << "blocks fetched more than once";
  EXPECT_EQ(CountInLog(EvsLog(), "EIO"), 0) << Tail(EvsLog());
}

TEST_F(LazyPull, OtherSnapshotCallsGoOnWhileALazyAttachWaitsForASlowRegistry) {
  // evs reaches the registry through a proxy that holds the first blob GET
  // — the first layer's hash tree — for ten minutes; containerd reaches it
  // directly.
  auto proxy = FaultProxy::Start(registry_->host(),
                                 R"([{"path":"/blobs/","method":"GET","fault":"delay",
                                      "delay_ms":600000,"times":1}])");
  if (!proxy.ok()) GTEST_SKIP() << proxy.status().message();
  std::string evs_hosts = dir_.Join("evs-certs.d");
  WriteHostsToml(evs_hosts, registry_->host(), "http://" + (*proxy)->host());
  evs_.Stop();
  StartEvs({"--registry-config-path", evs_hosts, "--lazy-background-fetch", "false"});
  std::string lazy = Convert(PushImage("stuck", Image()));

  std::string pull_pid = StartRpull(lazy);
  // Wait until the attach has begun (the bound guards a hang).
  bool attaching = false;
  for (int i = 0; i < 3000 && !attaching; ++i) {
    attaching = CountInLog(EvsLog(), "attaching lazy layer") > 0;
    if (!attaching) ::usleep(10000);
  }
  ASSERT_TRUE(attaching) << Tail(EvsLog());

  // Meanwhile: a Prepare, a Stat, a List and a Remove (60 s only guards a
  // hang: they wait for nothing).
  Ctr("snapshots --snapshotter evs prepare other", "evs-test", 60000);
  EXPECT_NE(Ctr("snapshots --snapshotter evs info other", "evs-test", 60000).find("Active"),
            std::string::npos);
  EXPECT_NE(Ctr("snapshots --snapshotter evs ls", "evs-test", 60000).find("other"),
            std::string::npos);
  Ctr("snapshots --snapshotter evs rm other", "evs-test", 60000);
  // … all while the attach was still waiting for the registry.
  EXPECT_EQ(Sh("kill -0 " + pull_pid).exit_code, 0) << "the pull is still waiting";
  EXPECT_EQ(CountInLog(EvsLog(), "lazy layer prepared"), 0) << Tail(EvsLog());

  // The layer's process dies: the Prepare falls back, and nothing of the
  // reserved layer stays (row, mount point, cache).
  EXPECT_GE(evs::testing::KillProcessesMentioning(EvsRoot() + "/cache/"), 1);
  Sh("while kill -0 " + pull_pid + " 2>/dev/null; do sleep 0.05; done");
  EXPECT_GE(CountInLog(EvsLog(), "falling back to unpack"), 1) << Tail(EvsLog());
  EXPECT_EQ(Sh("ls -A " + Quote(EvsRoot() + "/cache")).stdout_data, "");
  EXPECT_EQ(Sh("ls -A " + Quote(EvsRoot() + "/m")).stdout_data, "");
  EXPECT_EQ(Sh("grep -c ' " + EvsRoot() + "/' /proc/self/mountinfo").stdout_data, "0\n");
}

// Lazy layers read the registry with the daemon's docker_config: the
// registry wants a password, which only that file (not ~/.docker) holds.
class LazyPullWithCredentials : public LazyPull {
 protected:
  LazyPullWithCredentials()
      : LazyPull(WorldOptions{.cri = false,
                              .registry_access_log = false,
                              .registry_user = "evs-puller",
                              .registry_password = "lazy-s3cret"}) {}
};

TEST_F(LazyPullWithCredentials, LazyLayersUseTheDaemonsDockerConfig) {
  EXPECT_EQ(
      Sh("curl -s -o /dev/null -w '%{http_code}' http://" + registry_->host() + "/v2/").stdout_data,
      "401")
      << "the registry wants credentials";
  std::string lazy = Convert(PushImage("private", Image()));
  Rpull(lazy);
  EXPECT_EQ(CountInLog(EvsLog(), "lazy layer prepared"), 3) << Tail(EvsLog());
  EXPECT_EQ(CountInLog(EvsLog(), "falling back"), 0) << Tail(EvsLog());
  EXPECT_EQ(Run(lazy, "p1", HidingImageScript()), HidingImageOutput());
}

}  // namespace
}  // namespace evs::integration
