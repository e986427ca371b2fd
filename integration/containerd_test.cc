// End to end: Debian's containerd 1.6 with evs as its proxy snapshotter,
// docker-registry and runc, all started by the test in a scratch directory
// (own config, sockets, root and state). Images are built by the test with
// tar + umoci and pushed with skopeo; `ctr images pull --snapshotter evs`
// unpacks them through evs (the unpack path, DESIGN.md §1), `ctr run` starts
// containers on them.
//
// Needs root, erofs, overlay, containerd, runc, ctr, umoci, skopeo,
// docker-registry and a static busybox (busybox-static); skips with the
// reason otherwise.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "evs/common/file.h"
#include "local_registry.h"
#include "test_util.h"

namespace evs::integration {
namespace {

using evs::testing::ChildProcess;
using evs::testing::LocalRegistry;
using evs::testing::ReadFileOrDie;
using evs::testing::Sh;
using evs::testing::ShOk;
using evs::testing::TempDir;
using evs::testing::WriteFile;

std::string DaemonBinary() { return evs::testing::BuildDir() + "/plugin/containerd-evs-grpc"; }

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

bool WaitForSocket(const std::string& path, const ChildProcess& process) {
  for (int i = 0; i < 3000; ++i) {  // the bound is only against a hang
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    if (!process.running()) return false;
    ::usleep(10000);
  }
  return false;
}

// One layer of a test image: files to write (path → content), whiteouts
// (".wh.<name>" entries) and opaque directories (".wh..wh..opq").
struct LayerSpec {
  std::map<std::string, std::string> files;
  std::vector<std::string> whiteouts;
  std::vector<std::string> opaque_dirs;
  bool busybox = false;  // /bin/busybox with sh, cat, ls, sleep, echo links
};

class ContainerdWithEvs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!evs::testing::IsRoot()) GTEST_SKIP() << "needs root";
    for (const char* fs : {"erofs", "overlay"}) {
      if (!evs::testing::KernelHasFilesystem(fs)) GTEST_SKIP() << "needs " << fs;
    }
    for (const char* p : {"containerd", "ctr", "runc", "containerd-shim-runc-v2", "umoci", "skopeo",
                          "docker-registry", "tar"}) {
      if (!evs::testing::HaveProgram(p)) GTEST_SKIP() << "needs " << p << " in PATH";
    }
    if (::access("/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs /bin/busybox (busybox-static)";
    if (::access(DaemonBinary().c_str(), X_OK) != 0) GTEST_SKIP() << "needs " << DaemonBinary();

    auto registry = LocalRegistry::Start();
    if (!registry.ok()) GTEST_SKIP() << registry.status().message();
    registry_ = std::move(*registry);
    StartEvs();
    StartContainerd();
  }

  void TearDown() override {
    if (containerd_.running()) {
      // Containers first, so their shims unmount the rootfs.
      Sh(CtrCommand("task ls -q") + " | xargs -r -n1 " + CtrCommand("task kill -s KILL") +
         " >/dev/null 2>&1; sleep 0.2; " + CtrCommand("task ls -q") + " | xargs -r -n1 " +
         CtrCommand("task rm -f") + " >/dev/null 2>&1; " + CtrCommand("c ls -q") + " | xargs -r " +
         CtrCommand("c rm") + " >/dev/null 2>&1");
    }
    containerd_.Stop();
    evs_.Stop();
    evs::testing::KillProcessesMentioning(dir_.path() + "/");
    if (HasFailure()) {
      std::cerr << "--- evs log (tail) ---\n"
                << Tail(EvsLog()) << "--- containerd log (tail) ---\n"
                << Tail(dir_.Join("containerd.log"));
    }
  }

  static std::string Tail(const std::string& path) {
    return Sh("tail -n 40 " + Quote(path)).stdout_data;
  }

  void StartEvs() {
    auto p = ChildProcess::Start({DaemonBinary(), "--root", EvsRoot(), "--address", EvsSocket(),
                                  "--config", "/dev/null", "--log-level", "debug"},
                                 EvsLog());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    evs_ = std::move(*p);
    ASSERT_TRUE(WaitForSocket(EvsSocket(), evs_)) << Tail(EvsLog());
  }

  void StartContainerd() {
    std::string d = dir_.Join("ctd");
    WriteFile(d + "/config.toml",
              "version = 2\n"
              "root = \"" +
                  d +
                  "/root\"\n"
                  "state = \"" +
                  d +
                  "/state\"\n"
                  "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                  "[grpc]\n  address = \"" +
                  CtrSocket() +
                  "\"\n"
                  "[ttrpc]\n  address = \"" +
                  CtrSocket() +
                  ".ttrpc\"\n"
                  "[proxy_plugins]\n"
                  "  [proxy_plugins.evs]\n"
                  "    type = \"snapshot\"\n"
                  "    address = \"" +
                  EvsSocket() + "\"\n");
    auto p = ChildProcess::Start({"containerd", "--config", d + "/config.toml"},
                                 dir_.Join("containerd.log"));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    containerd_ = std::move(*p);
    ASSERT_TRUE(WaitForSocket(CtrSocket(), containerd_)) << Tail(dir_.Join("containerd.log"));
  }

  std::string EvsRoot() const { return dir_.Join("evs"); }
  std::string EvsSocket() const { return dir_.Join("evs.sock"); }
  std::string EvsLog() const { return dir_.Join("evs.log"); }
  std::string CtrSocket() const { return dir_.Join("ctd/containerd.sock"); }
  std::string CtrCommand(const std::string& args) const {
    return "ctr --address " + CtrSocket() + " --namespace evs-test " + args;
  }
  // Runs ctr; fails the test on a non-zero exit; returns stdout.
  std::string Ctr(const std::string& args, int timeout_ms = 300000) {
    return ShOk(CtrCommand(args) + " 2>&1", timeout_ms);
  }

  // Builds an image from `layers` (bottom first) and pushes it; returns its
  // reference.
  std::string PushImage(const std::string& name, const std::vector<LayerSpec>& layers) {
    std::string work = dir_.Join("build-" + name);
    std::string layout = work + "/oci";
    ShOk("umoci init --layout " + Quote(layout) + " && umoci new --image " + Quote(layout + ":v1"));
    for (size_t i = 0; i < layers.size(); ++i) {
      const LayerSpec& spec = layers[i];
      std::string tree = work + "/l" + std::to_string(i);
      EXPECT_TRUE(MakeDirs(tree).ok());
      if (spec.busybox) {
        ShOk("mkdir -p " + Quote(tree + "/bin") + " && cp /bin/busybox " + Quote(tree + "/bin/") +
             " && for a in sh cat ls sleep echo; do ln -s busybox " + Quote(tree + "/bin/") +
             "$a; done");
      }
      for (const auto& [path, content] : spec.files) WriteFile(tree + "/" + path, content);
      for (const std::string& w : spec.whiteouts) {
        WriteFile(tree + "/" + Dirname(w) + "/.wh." + Basename(w), "");
      }
      for (const std::string& o : spec.opaque_dirs) WriteFile(tree + "/" + o + "/.wh..wh..opq", "");
      std::string tar = tree + ".tar";
      ShOk("tar --numeric-owner --owner=0 --group=0 -C " + Quote(tree) + " -cf " + Quote(tar) +
           " . && umoci raw add-layer --image " + Quote(layout + ":v1") + " " + Quote(tar));
    }
    ShOk("umoci config --image " + Quote(layout + ":v1") + " --config.cmd /bin/sh");
    std::string ref = registry_->host() + "/evs-test/" + name + ":v1";
    ShOk("skopeo copy --quiet --dest-tls-verify=false oci:" + Quote(layout + ":v1") + " docker://" +
         ref);
    return ref;
  }

  void Pull(const std::string& ref) { Ctr("images pull --plain-http --snapshotter evs " + ref); }

  // `ctr run --rm` of `script` under /bin/sh; returns its output.
  std::string Run(const std::string& ref, const std::string& id, const std::string& script) {
    return Ctr("run --rm --snapshotter evs " + ref + " " + id + " /bin/sh -c " + Quote(script));
  }

  std::vector<LayerSpec> HidingImage() {
    LayerSpec base;
    base.busybox = true;
    base.files = {{"etc/greeting", "hello from layer 1\n"},
                  {"data/gone.txt", "deleted above\n"},
                  {"data/kept.txt", "kept\n"},
                  {"opaque/old.txt", "hidden by an opaque directory\n"},
                  {"opaque/sub/older.txt", "also hidden\n"}};
    LayerSpec upper;
    upper.files = {{"etc/greeting", "hello from layer 2\n"}, {"opaque/new.txt", "new\n"}};
    upper.whiteouts = {"data/gone.txt"};
    upper.opaque_dirs = {"opaque"};
    LayerSpec top;
    top.files = {{"top.txt", "top\n"}};
    return {base, upper, top};
  }

  TempDir dir_{"evs-it"};
  std::unique_ptr<LocalRegistry> registry_;
  ChildProcess evs_;
  ChildProcess containerd_;
};

TEST_F(ContainerdWithEvs, APulledImageRunsAndFilesRemovedInUpperLayersStayHidden) {
  std::string ref = PushImage("hiding", HidingImage());
  Pull(ref);
  std::string out = Run(ref, "c1",
                        "cat /etc/greeting; echo data:; ls /data; echo opaque:; ls /opaque; "
                        "test -e /data/gone.txt && echo LEAK-gone; "
                        "test -e /opaque/old.txt && echo LEAK-old; "
                        "test -e /opaque/sub && echo LEAK-sub; cat /top.txt");
  EXPECT_EQ(out, "hello from layer 2\ndata:\nkept.txt\nopaque:\nnew.txt\ntop\n");
  // Three layers were converted and are mounted read-only, one per layer.
  EXPECT_EQ(Sh("ls " + Quote(EvsRoot() + "/layers/sha256") + " | wc -l").stdout_data, "3\n");
  EXPECT_EQ(Sh("grep -cE ' " + EvsRoot() + "/m/[0-9]+ ' /proc/self/mountinfo").stdout_data, "3\n");
  // containerd sees the committed chain through evs.
  std::string snapshots = Ctr("snapshots --snapshotter evs ls");
  EXPECT_EQ(std::count(snapshots.begin(), snapshots.end(), '\n'), 4) << snapshots;  // + header
}

TEST_F(ContainerdWithEvs, AContainerWritesToItsOwnUpperLayerOnly) {
  std::string ref = PushImage("writes", HidingImage());
  Pull(ref);
  EXPECT_EQ(Run(ref, "w1", "echo changed > /etc/greeting; rm /data/kept.txt; cat /etc/greeting"),
            "changed\n");
  EXPECT_EQ(Run(ref, "w2", "cat /etc/greeting; ls /data"), "hello from layer 2\nkept.txt\n");
}

TEST_F(ContainerdWithEvs, AnImageOf128LayersRuns) {
  std::vector<LayerSpec> layers(128);
  layers[0].busybox = true;
  for (int i = 0; i < 128; ++i) {
    layers[i].files["layers/" + std::to_string(i)] = std::to_string(i) + "\n";
    layers[i].files["which"] = std::to_string(i) + "\n";
  }
  std::string ref = PushImage("deep", layers);
  Pull(ref);
  EXPECT_EQ(Run(ref, "deep1", "ls /layers | wc -l; cat /which /layers/0 /layers/127"),
            "128\n127\n0\n127\n");
}

TEST_F(ContainerdWithEvs, RemovingTheImageRemovesEveryLayerEvsStored) {
  std::string ref = PushImage("removed", HidingImage());
  Pull(ref);
  EXPECT_EQ(Sh("ls " + Quote(EvsRoot() + "/layers/sha256") + " | wc -l").stdout_data, "3\n");
  Ctr("images rm --sync " + ref);
  std::string left = Ctr("snapshots --snapshotter evs ls");
  EXPECT_EQ(std::count(left.begin(), left.end(), '\n'), 1) << "only the header: " << left;
  EXPECT_EQ(
      Sh("ls -A " + Quote(EvsRoot() + "/layers/sha256") + " " + Quote(EvsRoot() + "/snapshots") +
         " " + Quote(EvsRoot() + "/m"))
          .stdout_data,
      EvsRoot() + "/layers/sha256:\n\n" + EvsRoot() + "/m:\n\n" + EvsRoot() + "/snapshots:\n");
  EXPECT_EQ(Sh("grep -c ' " + EvsRoot() + "/' /proc/self/mountinfo").stdout_data, "0\n");
}

TEST_F(ContainerdWithEvs, ARunningContainerKeepsReadingItsFilesAcrossDaemonRestarts) {
  std::string ref = PushImage("restart", HidingImage());
  Pull(ref);
  // The container reads two files from its layers in a loop and records each
  // round in a host directory: the count in n, failures in errors.
  std::string out = dir_.Join("out");
  ASSERT_TRUE(MakeDirs(out).ok());
  Ctr("run -d --snapshotter evs --mount type=bind,src=" + out + ",dst=/out,options=rbind:rw " +
      ref + " reader /bin/sh -c " +
      Quote("i=0; while true; do i=$((i+1)); "
            "if cat /etc/greeting /data/kept.txt /opaque/new.txt > /out/r.tmp; "
            "then mv /out/r.tmp /out/r; echo $i > /out/n.tmp; mv /out/n.tmp /out/n; "
            "else echo $i >> /out/errors; fi; sleep 0.05; done"));
  // Waits for two more successful rounds (the bound only guards a hang);
  // dropping the page cache first makes them read through the layer mounts.
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
  const std::string expected = "hello from layer 2\nkept\nnew\n";
  ASSERT_TRUE(rounds());
  EXPECT_EQ(ReadFileOrDie(out + "/r"), expected);

  // A graceful stop: the layers under the container stay mounted.
  evs_.Stop();
  EXPECT_NE(ReadFileOrDie(EvsLog()).find("left_in_use=3"), std::string::npos) << Tail(EvsLog());
  EXPECT_TRUE(rounds()) << "while the daemon is down";
  StartEvs();
  EXPECT_TRUE(rounds()) << "after a restart";

  // kill -9, then a new daemon takes over the stale mounts.
  ASSERT_EQ(::kill(evs_.pid(), SIGKILL), 0);
  evs_.Stop();
  EXPECT_TRUE(rounds()) << "after kill -9";
  StartEvs();
  EXPECT_TRUE(rounds()) << "after the second restart";

  EXPECT_EQ(ReadFileOrDie(out + "/r"), expected);
  EXPECT_EQ(Sh("cat " + Quote(out + "/errors") + " 2>/dev/null").stdout_data, "")
      << "rounds that failed to read";
  // The restarted daemon serves new containers from the same image, once
  // containerd has redialled it (its first call on the dead connection fails
  // with Unavailable, which clients retry).
  bool reached = false;
  for (int i = 0; i < 100 && !reached; ++i) {
    reached = Sh(CtrCommand("snapshots --snapshotter evs ls")).exit_code == 0;
    if (!reached) ::usleep(100000);
  }
  ASSERT_TRUE(reached);
  EXPECT_EQ(Run(ref, "after", "cat /top.txt"), "top\n");
}

TEST_F(ContainerdWithEvs, ACorruptedByteInAStoredLayerFailsReadsOfThatFileAndIsLogged) {
  LayerSpec base;
  base.busybox = true;
  base.files = {{"big.bin", std::string(256 * 1024, 'Z')}, {"small.txt", "intact\n"}};
  std::string ref = PushImage("corrupt", {base});
  Pull(ref);
  // Flip one byte inside big.bin's data in the stored layer file.
  std::string image = Sh("ls " + Quote(EvsRoot()) + "/layers/sha256/*/layer.erofs").stdout_data;
  while (!image.empty() && image.back() == '\n') image.pop_back();
  std::string bytes = ReadFileOrDie(image);
  size_t at = bytes.find(std::string(4096, 'Z'));
  ASSERT_NE(at, std::string::npos);
  ShOk("printf 'Y' | dd of=" + Quote(image) + " bs=1 seek=" + std::to_string(at + 7) +
       " conv=notrunc status=none && sync && echo 3 > /proc/sys/vm/drop_caches");
  std::string out =
      Sh(CtrCommand("run --rm --snapshotter evs " + ref + " c-corrupt /bin/sh -c " +
                    Quote("cat /small.txt; cat /big.bin > /dev/null || echo READ-FAILED")) +
         " 2>&1")
          .stdout_data;
  EXPECT_NE(out.find("intact"), std::string::npos) << out;
  EXPECT_NE(out.find("Input/output error"), std::string::npos) << out;
  EXPECT_NE(out.find("READ-FAILED"), std::string::npos) << out;
  std::string log = ReadFileOrDie(EvsLog());
  std::string layer_hex = Basename(Dirname(image));
  EXPECT_NE(log.find("verified read failed"), std::string::npos);
  EXPECT_NE(log.find("layer sha256:" + layer_hex), std::string::npos) << Tail(EvsLog());
  EXPECT_NE(log.find("data block"), std::string::npos) << Tail(EvsLog());
}

}  // namespace
}  // namespace evs::integration
