// End to end through the convert-on-pull path (DESIGN.md §1): containerd
// 1.6 with its CRI plugin (snapshotter = "evs", disable_snapshot_annotations
// = false), docker-registry logging every request with its user agent, runc
// and the daemon, all started by the test. `ctr-remote images rpull` and a
// CRI PullImage call (integration/cri_pull.cc) label each layer's Prepare
// with the image; evs fetches and converts the layer itself and containerd
// neither downloads nor unpacks it — which the registry's access log (every
// layer blob fetched once, by evs) and containerd's content store (no layer
// blob) show. Then the faults: evs cannot reach the registry, the bytes are
// corrupted on the way, evs is killed with -9 in the middle of a conversion.
#include <signal.h>
#include <unistd.h>

#include <algorithm>

#include "containerd_fixture.h"
#include "evs/common/file.h"

namespace evs::integration {
namespace {

using evs::testing::FaultProxy;
using evs::testing::ReadFileOrDie;
using evs::testing::Sh;
using evs::testing::ShOk;

constexpr const char* kEvsAgent = "containerd-evs-grpc/";

class ConvertOnPull : public ContainerdWithEvs {
 protected:
  ConvertOnPull() : ContainerdWithEvs(WorldOptions{.cri = true, .registry_access_log = true}) {}

  void SetUp() override {
    if (!evs::testing::HaveProgram("ctr-remote")) {
      GTEST_SKIP() << "needs ctr-remote (apt-get install stargz-snapshotter)";
    }
    ContainerdWithEvs::SetUp();
  }

  // `ctr-remote images rpull`: the labels of stargz-snapshotter's
  // AppendDefaultLabelsHandlerWrapper on every layer's Prepare.
  void Rpull(const std::string& ref, const std::string& ns = "evs-test") {
    ShOk("ctr-remote --address " + CtrSocket() + " --namespace " + ns +
         " images rpull --plain-http --snapshotter evs " + ref + " 2>&1");
  }
  // The same through the CRI, as the kubelet pulls (namespace k8s.io).
  std::string CriPull(const std::string& ref) {
    std::string out = ShOk(evs::testing::BuildDir() + "/integration/cri-pull --address " +
                           CtrSocket() + " " + ref + " 2>&1");
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  // Registry access-log lines (combined log format) of GETs of `digest`'s
  // blob.
  std::vector<std::string> BlobGets(const std::string& digest) {
    std::vector<std::string> lines;
    std::string log = ReadFileOrDie(registry_->log_path());
    size_t start = 0;
    while (start < log.size()) {
      size_t nl = log.find('\n', start);
      std::string line = log.substr(start, nl - start);
      if (line.find("\"GET /v2/") != std::string::npos &&
          line.find("/blobs/" + digest + " ") != std::string::npos) {
        lines.push_back(line);
      }
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    return lines;
  }

  // What proves containerd left the layers to evs: each layer blob was
  // fetched from the registry exactly once, by evs, and containerd's
  // content store holds none of them.
  void ExpectFetchedOnlyByEvs(const std::string& ref, const std::string& ns) {
    std::string content = Ctr("content ls -q", ns);
    for (const std::string& digest : LayerDigests(ref)) {
      std::vector<std::string> gets = BlobGets(digest);
      ASSERT_EQ(gets.size(), 1u) << digest << "\n" << Tail(registry_->log_path(), 20);
      EXPECT_NE(gets[0].find(kEvsAgent), std::string::npos) << gets[0];
      EXPECT_EQ(content.find(digest), std::string::npos)
          << "containerd stored layer blob " << digest;
    }
  }

  // Layer directories evs stored, and staging entries left.
  std::vector<std::string> Stored() {
    std::string ls = Sh("ls " + Quote(EvsRoot() + "/layers/sha256")).stdout_data;
    std::vector<std::string> out;
    size_t start = 0;
    while (start < ls.size()) {
      size_t nl = ls.find('\n', start);
      out.push_back(ls.substr(start, nl - start));
      start = nl + 1;
    }
    return out;
  }
  std::string Staging() { return Sh("ls -A " + Quote(EvsRoot() + "/layers/tmp")).stdout_data; }
};

TEST_F(ConvertOnPull, CtrRemoteRpullLeavesEveryLayerToEvsAndTheImageRuns) {
  std::string ref = PushImage("rpull", HidingImage());
  Rpull(ref);
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 3) << Tail(EvsLog());
  EXPECT_EQ(CountInLog(EvsLog(), "falling back"), 0);
  ExpectFetchedOnlyByEvs(ref, "evs-test");
  // Stored once each, under the blob digest.
  std::vector<std::string> layers = LayerDigests(ref);
  std::vector<std::string> stored = Stored();
  ASSERT_EQ(stored.size(), 3u);
  for (const std::string& d : layers) {
    EXPECT_NE(std::find(stored.begin(), stored.end(), d.substr(7)), stored.end()) << d;
  }
  EXPECT_EQ(Run(ref, "c1", HidingImageScript()), HidingImageOutput());
  EXPECT_EQ(Staging(), "");
}

TEST_F(ConvertOnPull, ACriPullImageCallLeavesEveryLayerToEvsAndTheImageRuns) {
  std::string ref = PushImage("cri", HidingImage());
  std::string id = CriPull(ref);
  EXPECT_EQ(id.rfind("sha256:", 0), 0u) << id;
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 3) << Tail(EvsLog());
  ExpectFetchedOnlyByEvs(ref, "k8s.io");
  EXPECT_EQ(Run(ref, "k1", HidingImageScript(), "k8s.io"), HidingImageOutput());
  // The layers converted ahead (cri.image-layers) were claimed, none left.
  EXPECT_EQ(Staging(), "");
  // A pull of the same image in another namespace uses the layers evs has:
  // nothing is fetched again.
  Rpull(ref, "evs-test");
  for (const std::string& digest : LayerDigests(ref)) EXPECT_EQ(BlobGets(digest).size(), 1u);
  EXPECT_EQ(Run(ref, "k2", "cat /top.txt"), "top\n");
}

TEST_F(ConvertOnPull, AnImageOf128LayersIsConvertedOnPullAndRuns) {
  // Its cri.image-layers label is cut to fit 4096 bytes: later layers are
  // queued by the Prepares of the layers before them.
  std::string ref = PushImage("deep", DeepImage());
  std::string id = CriPull(ref);
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 128) << Tail(EvsLog());
  EXPECT_EQ(Run(ref, "deep1", "ls /layers | wc -l; cat /which /layers/0 /layers/127", "k8s.io"),
            "128\n127\n0\n127\n");
  EXPECT_EQ(Staging(), "");
}

TEST_F(ConvertOnPull, APullWithoutImageLabelsIsUnpackedByContainerd) {
  std::string ref = PushImage("plain", HidingImage());
  // ctr images pull fetches the whole image, then unpacks it without image
  // labels: evs converts each committed upper directory (the unpack path).
  Pull(ref);
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 0);
  EXPECT_EQ(CountInLog(EvsLog(), "snapshot committed"), 3) << Tail(EvsLog());
  std::string content = Ctr("content ls -q");
  for (const std::string& digest : LayerDigests(ref)) {
    EXPECT_NE(content.find(digest), std::string::npos) << "containerd fetched " << digest;
  }
  EXPECT_EQ(Run(ref, "p1", HidingImageScript()), HidingImageOutput());
}

TEST_F(ConvertOnPull, WhenEvsCannotReachTheRegistryContainerdPullsInstead) {
  // evs's hosts.toml sends the registry's requests to a closed port;
  // containerd's reaches the registry.
  std::string evs_hosts = dir_.Join("evs-certs.d");
  WriteHostsToml(evs_hosts, registry_->host(),
                 "http://127.0.0.1:" + std::to_string(evs::testing::FreePort()));
  evs_.Stop();
  StartEvs({"--registry-config-path", evs_hosts});
  std::string ref = PushImage("down", HidingImage());
  Rpull(ref);
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 0);
  EXPECT_EQ(CountInLog(EvsLog(), "falling back to unpack"), 3) << Tail(EvsLog());
  // Once the registry failed, later layers fall back without waiting.
  EXPECT_GE(CountInLog(EvsLog(), "not asked again"), 1) << Tail(EvsLog());
  std::string content = Ctr("content ls -q");
  for (const std::string& digest : LayerDigests(ref)) {
    EXPECT_NE(content.find(digest), std::string::npos) << "containerd fetched " << digest;
  }
  EXPECT_EQ(Run(ref, "d1", HidingImageScript()), HidingImageOutput());
  EXPECT_EQ(Staging(), "");
}

TEST_F(ConvertOnPull, BytesCorruptedOnTheWayToEvsAreRefusedAndContainerdPullsInstead) {
  auto proxy = FaultProxy::Start(
      registry_->host(),
      R"([{"path":"/blobs/","method":"GET","fault":"corrupt","after_bytes":512}])");
  if (!proxy.ok()) GTEST_SKIP() << proxy.status().message();
  std::string evs_hosts = dir_.Join("evs-certs.d");
  WriteHostsToml(evs_hosts, registry_->host(), "http://" + (*proxy)->host());
  evs_.Stop();
  StartEvs({"--registry-config-path", evs_hosts});
  std::string ref = PushImage("corrupt", HidingImage());
  Rpull(ref);
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 0);
  EXPECT_GE(CountInLog(EvsLog(), "DATA_LOSS"), 1) << Tail(EvsLog());
  EXPECT_EQ(Run(ref, "x1", HidingImageScript()), HidingImageOutput());
  // Nothing of the corrupted conversions is left: only the three layers
  // containerd unpacked (stored by content digest, not by blob digest).
  std::vector<std::string> stored = Stored();
  EXPECT_EQ(stored.size(), 3u);
  for (const std::string& d : LayerDigests(ref)) {
    EXPECT_EQ(std::find(stored.begin(), stored.end(), d.substr(7)), stored.end()) << d;
  }
  EXPECT_EQ(Staging(), "");
}

TEST_F(ConvertOnPull, KillNineInTheMiddleOfAConversionLeavesNothingAndTheRetriedPullSucceeds) {
  // The first blob download stalls after 64 KiB, so a conversion is in
  // progress when the daemon is killed.
  auto proxy = FaultProxy::Start(registry_->host(),
                                 R"([{"path":"/blobs/","method":"GET","fault":"stall",
                                      "after_bytes":65536,"delay_ms":60000,"times":1}])");
  if (!proxy.ok()) GTEST_SKIP() << proxy.status().message();
  std::string evs_hosts = dir_.Join("evs-certs.d");
  WriteHostsToml(evs_hosts, registry_->host(), "http://" + (*proxy)->host());
  evs_.Stop();
  StartEvs({"--registry-config-path", evs_hosts});
  LayerSpec big;
  big.busybox = true;
  big.files = {{"big.bin", std::string(1 << 20, 'B')}, {"ok.txt", "converted after all\n"}};
  std::string ref = PushImage("killed", {big});

  std::string pull_pid = StartRpull(ref);
  // Wait until the conversion has staged something (the bound guards a hang).
  bool staged = false;
  for (int i = 0; i < 3000 && !staged; ++i) {
    staged = CountInLog(EvsLog(), "converting layer") > 0 && !Staging().empty();
    if (!staged) ::usleep(10000);
  }
  ASSERT_TRUE(staged) << Tail(EvsLog());
  ASSERT_EQ(::kill(evs_.pid(), SIGKILL), 0);
  evs_.Stop();
  // The pull fails with the daemon gone.
  Sh("while kill -0 " + pull_pid + " 2>/dev/null; do sleep 0.05; done");
  EXPECT_NE(ReadFileOrDie(dir_.Join("rpull.log")).find("unavailable"), std::string::npos)
      << ReadFileOrDie(dir_.Join("rpull.log"));

  // A new daemon (same proxy, whose fault is used up) finds the leftovers.
  StartEvs({"--registry-config-path", evs_hosts});
  EXPECT_EQ(Staging(), "") << "the staged conversion is removed at start";
  EXPECT_NE(ReadFileOrDie(EvsLog()).find("staging_removed=1"), std::string::npos) << Tail(EvsLog());
  EXPECT_TRUE(Stored().empty());
  EXPECT_EQ(Sh("grep -c ' " + EvsRoot() + "/m/' /proc/self/mountinfo").stdout_data, "0\n");
  std::string snapshots = Ctr("snapshots --snapshotter evs ls");
  EXPECT_EQ(std::count(snapshots.begin(), snapshots.end(), '\n'), 1) << "only the header";

  // The retried pull converts the layer, once containerd has redialled the
  // new daemon (calls fail with Unavailable until its gRPC connection's
  // backoff lets it reconnect; the bound guards a hang).
  bool pulled = false;
  for (int i = 0; i < 300 && !pulled; ++i) {
    pulled = Sh("ctr-remote --address " + CtrSocket() +
                " --namespace evs-test images rpull --plain-http --snapshotter evs " + ref +
                " >/dev/null 2>&1")
                 .exit_code == 0;
    if (!pulled) ::usleep(100000);
  }
  ASSERT_TRUE(pulled) << Tail(EvsLog());
  EXPECT_EQ(CountInLog(EvsLog(), "layer prepared remotely"), 1);
  EXPECT_EQ(Run(ref, "k9", "cat /ok.txt"), "converted after all\n");
}

}  // namespace
}  // namespace evs::integration
