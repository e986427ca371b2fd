// End to end through the lazy path (DESIGN.md §1 "lazy"; docs/lazy.md):
// an image converted by `evs image convert` into the local registry,
// `ctr-remote images rpull` through containerd 1.6 and evs, `ctr run`. evs
// mounts each layer at once and fetches blocks from the registry as they are
// read (each verified against the layer's dm-verity tree), from a process of
// its own per layer that keeps serving running containers across daemon
// restarts and kill -9.
//
// containerd 1.6 only treats media types it knows as layers
// (images.IsLayerType): application/vnd.erofs.layer.v1, what `evs image
// convert` writes (containerd 2.3's name), is fetched whole as content and
// never reaches the snapshotter. The test therefore retags the converted
// manifest with application/vnd.oci.image.layer.v1.erofs, which 1.6/1.7 take
// as a layer (docs/requests.md asks the converter for an option).
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "containerd_fixture.h"
#include "evs/common/file.h"

namespace evs::integration {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::Sh;
using evs::testing::ShOk;

class LazyPull : public ContainerdWithEvs {
 protected:
  LazyPull() : ContainerdWithEvs(WorldOptions{.cri = false, .registry_access_log = true}) {}

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

  // `evs image convert` of `src` into `<src repo>:erofs`, retagged for
  // containerd 1.6 as `<src repo>:lazy`; returns that reference.
  std::string Convert(const std::string& src) {
    std::string repo = src.substr(0, src.rfind(':'));
    ShOk(EvsCli() + " image convert --hosts-dir " + Quote(HostsDir()) + " " + src + " " + repo +
         ":erofs 2>&1");
    std::string manifest =
        ShOk("skopeo inspect --raw --tls-verify=false docker://" + repo + ":erofs");
    std::string from = "application/vnd.erofs.layer.v1";
    for (size_t at = manifest.find(from); at != std::string::npos; at = manifest.find(from, at)) {
      manifest.replace(at, from.size(), "application/vnd.oci.image.layer.v1.erofs");
    }
    evs::testing::WriteFile(dir_.Join("lazy-manifest.json"), manifest);
    std::string name = repo.substr(repo.find('/') + 1);
    ShOk(
        "curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "
        "--data-binary @" +
        Quote(dir_.Join("lazy-manifest.json")) + " http://" + registry_->host() + "/v2/" + name +
        "/manifests/lazy");
    return repo + ":lazy";
  }

  void Rpull(const std::string& ref) {
    ShOk("ctr-remote --address " + CtrSocket() +
         " --namespace evs-test images rpull --plain-http --snapshotter evs " + ref + " 2>&1");
  }

  // Bytes of layer blobs the registry served, by its access log (combined
  // format: … "GET /v2/…/blobs/sha256:… HTTP/1.1" STATUS BYTES …).
  int64_t BlobBytesServed(const std::vector<std::string>& digests) {
    int64_t total = 0;
    std::string log = ReadFileOrDie(registry_->log_path());
    size_t start = 0;
    while (start < log.size()) {
      size_t nl = log.find('\n', start);
      std::string line = log.substr(start, nl - start);
      start = nl == std::string::npos ? log.size() : nl + 1;
      if (line.find("\"GET /v2/") == std::string::npos) continue;
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

  // The image: HidingImage() plus, in the data layer, 8 MiB a container
  // never reads.
  std::vector<LayerSpec> Image() {
    std::vector<LayerSpec> layers = HidingImage();
    std::string unread;
    for (int i = 0; i < (8 << 20) / 16; ++i) unread += std::to_string(1000000000000000 + i);
    layers[1].files["unread/big.bin"] = unread;
    return layers;
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
  int64_t total = 0;
  for (const std::string& d : layers) {
    total += std::stoll(Sh("stat -c %s " + Quote(registry_->storage_dir()) +
                           "/docker/registry/v2/blobs/sha256/" + d.substr(7, 2) + "/" +
                           d.substr(7) + "/data")
                            .stdout_data);
  }
  RecordProperty("bytes_fetched_before_first_output", std::to_string(fetched));
  RecordProperty("layer_bytes", std::to_string(total));
  std::cout << "lazy: " << fetched << " of " << total
            << " layer bytes fetched before the container's first output\n";
  EXPECT_GT(fetched, 0);
  EXPECT_LT(fetched, 8 << 20) << "the unread 8 MiB file was not fetched";

  // Removing the image removes the lazy layers: processes, mounts, caches.
  Ctr("images rm --sync " + lazy);
  EXPECT_EQ(Sh("ls -A " + Quote(EvsRoot() + "/cache")).stdout_data, "");
  EXPECT_EQ(Sh("grep -c ' " + EvsRoot() + "/' /proc/self/mountinfo").stdout_data, "0\n");
}

TEST_F(LazyPull, ARunningContainerKeepsReadingLazyLayersAcrossRestartsAndKillNine) {
  std::string lazy = Convert(PushImage("lazy-restart", Image()));
  Rpull(lazy);
  std::string out = dir_.Join("out");
  ASSERT_TRUE(MakeDirs(out).ok());
  Ctr("run -d --snapshotter evs --mount type=bind,src=" + out + ",dst=/out,options=rbind:rw " +
      lazy + " reader /bin/sh -c " +
      Quote("i=0; while true; do i=$((i+1)); "
            "if cat /etc/greeting /data/kept.txt /opaque/new.txt > /out/r.tmp; "
            "then mv /out/r.tmp /out/r; echo $i > /out/n.tmp; mv /out/n.tmp /out/n; "
            "else echo $i >> /out/errors; fi; sleep 0.05; done"));
  // Two more successful rounds, reading through the layer mounts (caches
  // dropped; the bound only guards a hang).
  auto rounds = [&] {
    ShOk("sync; echo 3 > /proc/sys/vm/drop_caches");
    auto count = [&] {
      std::string n = Sh("cat " + Quote(out + "/n") + " 2>/dev/null").stdout_data;
      return n.empty() ? 0 : std::stoi(n);
    };
    int start = count();
    for (int i = 0; i < 6000 && count() < start + 2; ++i) ::usleep(10000);
    return count() >= start + 2;
  };
  ASSERT_TRUE(rounds());
  evs_.Stop();
  EXPECT_TRUE(rounds()) << "while the daemon is down";
  StartEvs({"--lazy-background-fetch", "false"});
  EXPECT_TRUE(rounds()) << "after a restart";
  EXPECT_EQ(CountInLog(EvsLog(), "adopted a lazy layer"), 3) << Tail(EvsLog());
  ASSERT_EQ(::kill(evs_.pid(), SIGKILL), 0);
  evs_.Stop();
  EXPECT_TRUE(rounds()) << "after kill -9";
  StartEvs({"--lazy-background-fetch", "false"});
  EXPECT_TRUE(rounds()) << "after the second restart";
  EXPECT_EQ(CountInLog(EvsLog(), "adopted a lazy layer"), 6) << Tail(EvsLog());
  EXPECT_EQ(ReadFileOrDie(out + "/r"), "hello from layer 2\nkept\nnew\n");
  EXPECT_EQ(Sh("cat " + Quote(out + "/errors") + " 2>/dev/null").stdout_data, "")
      << "rounds that failed to read";
}

}  // namespace
}  // namespace evs::integration
