#include "containerd_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "evs/common/file.h"

namespace evs::integration {

using evs::testing::ChildProcess;
using evs::testing::LocalRegistry;
using evs::testing::Sh;
using evs::testing::ShOk;
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

namespace {

bool WaitForSocket(const std::string& path, const ChildProcess& process) {
  for (int i = 0; i < 3000; ++i) {  // the bound is only against a hang
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    if (!process.running()) return false;
    ::usleep(10000);
  }
  return false;
}

}  // namespace

void ContainerdWithEvs::SetUp() {
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

  evs::testing::LocalRegistryOptions ro;
  ro.access_log = options_.registry_access_log;
  ro.htpasswd_user = options_.registry_user;
  ro.htpasswd_password = options_.registry_password;
  if (!ro.htpasswd_user.empty() && !evs::testing::HaveProgram("htpasswd")) {
    GTEST_SKIP() << "needs htpasswd (apt-get install apache2-utils)";
  }
  auto registry = LocalRegistry::Start(ro);
  if (!registry.ok()) GTEST_SKIP() << registry.status().message();
  registry_ = std::move(*registry);
  WriteHostsToml(HostsDir(), registry_->host(), registry_->url());
  if (!options_.registry_user.empty()) {
    // registry/credentials.h: "auths" with auth = base64(user:password).
    std::string auth =
        ShOk("printf %s " + Quote(options_.registry_user + ":" + options_.registry_password) +
             " | base64 -w0");
    WriteFile(DockerConfig(),
              "{\"auths\":{\"" + registry_->host() + "\":{\"auth\":\"" + auth + "\"}}}\n");
  }
  StartEvs();
  StartContainerd();
}

void ContainerdWithEvs::TearDown() {
  if (containerd_.running()) {
    // Containers first, so their shims unmount the rootfs.
    for (const char* ns : {"evs-test", "k8s.io"}) {
      Sh(CtrCommand("task ls -q", ns) + " | xargs -r -n1 " + CtrCommand("task kill -s KILL", ns) +
         " >/dev/null 2>&1; sleep 0.2; " + CtrCommand("task ls -q", ns) + " | xargs -r -n1 " +
         CtrCommand("task rm -f", ns) + " >/dev/null 2>&1; " + CtrCommand("c ls -q", ns) +
         " | xargs -r " + CtrCommand("c rm", ns) + " >/dev/null 2>&1");
    }
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

std::string ContainerdWithEvs::Tail(const std::string& path, int lines) {
  return Sh("tail -n " + std::to_string(lines) + " " + Quote(path)).stdout_data;
}

void ContainerdWithEvs::WriteHostsToml(const std::string& dir, const std::string& registry,
                                       const std::string& server) {
  WriteFile(dir + "/" + registry + "/hosts.toml", "server = \"" + server + "\"\n");
}

void ContainerdWithEvs::StartEvs(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {DaemonBinary(), "--root",      EvsRoot(),
                                   "--address",    EvsSocket(),   "--config",
                                   "/dev/null",    "--log-level", "debug"};
  if (std::find(extra.begin(), extra.end(), "--registry-config-path") == extra.end()) {
    argv.insert(argv.end(), {"--registry-config-path", HostsDir()});
  }
  if (!options_.registry_user.empty() &&
      std::find(extra.begin(), extra.end(), "--docker-config") == extra.end()) {
    argv.insert(argv.end(), {"--docker-config", DockerConfig()});
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  evs_flags_ = extra;
  // A socket left by a killed daemon would look like the new one's.
  ::unlink(EvsSocket().c_str());
  auto p = ChildProcess::Start(argv, EvsLog());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  evs_ = std::move(*p);
  ASSERT_TRUE(WaitForSocket(EvsSocket(), evs_)) << Tail(EvsLog());
}

void ContainerdWithEvs::StartContainerd() {
  std::string d = dir_.Join("ctd");
  std::string config = "version = 2\nroot = \"" + d + "/root\"\nstate = \"" + d + "/state\"\n";
  if (!options_.cri) config += "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
  config += "[grpc]\n  address = \"" + CtrSocket() + "\"\n[ttrpc]\n  address = \"" + CtrSocket() +
            ".ttrpc\"\n[proxy_plugins]\n  [proxy_plugins.evs]\n    type = \"snapshot\"\n" +
            "    address = \"" + EvsSocket() + "\"\n";
  if (options_.cri) {
    // DESIGN.md §7 / docs/snapshotter.md: what a Kubernetes node sets.
    config +=
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
        "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
        "    snapshotter = \"evs\"\n"
        "    disable_snapshot_annotations = false\n"
        "  [plugins.\"io.containerd.grpc.v1.cri\".registry]\n"
        "    config_path = \"" +
        HostsDir() + "\"\n";
  }
  WriteFile(d + "/config.toml", config);
  auto p = ChildProcess::Start({"containerd", "--config", d + "/config.toml"},
                               dir_.Join("containerd.log"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  containerd_ = std::move(*p);
  ASSERT_TRUE(WaitForSocket(CtrSocket(), containerd_)) << Tail(dir_.Join("containerd.log"));
}

std::string ContainerdWithEvs::PullUser() const {
  if (options_.registry_user.empty()) return "";
  return " --user " + Quote(options_.registry_user + ":" + options_.registry_password);
}

std::string ContainerdWithEvs::Creds() const {
  if (options_.registry_user.empty()) return "";
  return " --creds " + Quote(options_.registry_user + ":" + options_.registry_password);
}

std::string ContainerdWithEvs::StartRpull(const std::string& ref) {
  std::string pid =
      Sh("ctr-remote --address " + CtrSocket() +
         " --namespace evs-test images rpull --plain-http --snapshotter evs" + PullUser() + " " +
         ref + " > " + Quote(dir_.Join("rpull.log")) + " 2>&1 & echo $!")
          .stdout_data;
  while (!pid.empty() && pid.back() == '\n') pid.pop_back();
  return pid;
}

std::string ContainerdWithEvs::CtrCommand(const std::string& args, const std::string& ns) const {
  return "ctr --address " + CtrSocket() + " --namespace " + ns + " " + args;
}

std::string ContainerdWithEvs::Ctr(const std::string& args, const std::string& ns, int timeout_ms) {
  return ShOk(CtrCommand(args, ns) + " 2>&1", timeout_ms);
}

std::string ContainerdWithEvs::PushImage(const std::string& name,
                                         const std::vector<LayerSpec>& layers) {
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
  std::string creds =
      options_.registry_user.empty()
          ? ""
          : " --dest-creds " + Quote(options_.registry_user + ":" + options_.registry_password);
  ShOk("skopeo copy --quiet --dest-tls-verify=false" + creds + " oci:" + Quote(layout + ":v1") +
       " docker://" + ref);
  return ref;
}

std::vector<std::string> ContainerdWithEvs::LayerDigests(const std::string& ref) {
  std::string raw = ShOk("skopeo inspect --raw --tls-verify=false" + Creds() + " docker://" + ref);
  std::vector<std::string> digests;
  auto manifest = nlohmann::json::parse(raw, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(manifest.is_discarded()) << raw;
  if (manifest.is_discarded() || !manifest.contains("layers")) return digests;
  for (const auto& layer : manifest["layers"]) digests.push_back(layer.value("digest", ""));
  return digests;
}

std::string ContainerdWithEvs::Run(const std::string& ref, const std::string& id,
                                   const std::string& script, const std::string& ns) {
  return Ctr("run --rm --snapshotter evs " + ref + " " + id + " /bin/sh -c " + Quote(script), ns);
}

std::vector<LayerSpec> ContainerdWithEvs::HidingImage() {
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

std::string ContainerdWithEvs::HidingImageScript() {
  return "cat /etc/greeting; echo data:; ls /data; echo opaque:; ls /opaque; "
         "test -e /data/gone.txt && echo LEAK-gone; "
         "test -e /opaque/old.txt && echo LEAK-old; "
         "test -e /opaque/sub && echo LEAK-sub; cat /top.txt";
}

std::string ContainerdWithEvs::HidingImageOutput() {
  return "hello from layer 2\ndata:\nkept.txt\nopaque:\nnew.txt\ntop\n";
}

int ContainerdWithEvs::CountInLog(const std::string& path, const std::string& needle) {
  std::string text = Sh("cat " + Quote(path)).stdout_data;
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

std::vector<LayerSpec> ContainerdWithEvs::DeepImage() {
  std::vector<LayerSpec> layers(128);
  layers[0].busybox = true;
  for (int i = 0; i < 128; ++i) {
    layers[i].files["layers/" + std::to_string(i)] = std::to_string(i) + "\n";
    layers[i].files["which"] = std::to_string(i) + "\n";
  }
  return layers;
}

void ContainerdWithEvs::StartReader(const std::string& ref, const std::string& id,
                                    const std::string& out) {
  ASSERT_TRUE(MakeDirs(out).ok());
  Ctr("run -d --snapshotter evs --mount type=bind,src=" + out + ",dst=/out,options=rbind:rw " +
      ref + " " + id + " /bin/sh -c " +
      Quote("i=0; while true; do i=$((i+1)); "
            "if cat /etc/greeting /data/kept.txt /opaque/new.txt > /out/r.tmp; "
            "then mv /out/r.tmp /out/r; echo $i > /out/n.tmp; mv /out/n.tmp /out/n; "
            "else echo $i >> /out/errors; fi; sleep 0.05; done"));
}

bool ContainerdWithEvs::ReaderRounds(const std::string& out) {
  ShOk("sync; echo 3 > /proc/sys/vm/drop_caches");
  auto count = [&] {
    std::string n = Sh("cat " + Quote(out + "/n") + " 2>/dev/null").stdout_data;
    return n.empty() ? 0 : std::stoi(n);
  };
  int start = count();
  for (int i = 0; i < 6000 && count() < start + 2; ++i) ::usleep(10000);
  return count() >= start + 2;
}

}  // namespace evs::integration
