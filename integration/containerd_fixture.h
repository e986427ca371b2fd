// The integration tests' world: Debian's containerd 1.6 with evs as its
// proxy snapshotter, docker-registry and runc, all started by the test in a
// scratch directory (own config, sockets, root and state). Images are built
// by the test with tar + umoci and pushed with skopeo.
//
// Needs root, erofs, overlay, containerd, runc, ctr, umoci, skopeo,
// docker-registry and a static busybox (busybox-static); SetUp skips with the
// reason otherwise.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "local_registry.h"
#include "test_util.h"

namespace evs::integration {

std::string DaemonBinary();
// 'single-quoted' for /bin/sh.
std::string Quote(const std::string& s);

// One layer of a test image: files to write (path → content), whiteouts
// (".wh.<name>" entries) and opaque directories (".wh..wh..opq").
struct LayerSpec {
  std::map<std::string, std::string> files;
  std::vector<std::string> whiteouts;
  std::vector<std::string> opaque_dirs;
  bool busybox = false;  // /bin/busybox with sh, cat, ls, sleep, echo links
};

// What a fixture starts. The defaults are the unpack-path tests' world.
struct WorldOptions {
  // containerd's CRI plugin on, with snapshotter = "evs",
  // disable_snapshot_annotations = false and the registry hosts directory
  // (reference/remote-snapshotters.md §1).
  bool cri = false;
  // The registry logs every request with its user agent.
  bool registry_access_log = false;
  // The registry wants this user and password (htpasswd): the fixture's
  // skopeo calls pass them, evs reads them from DockerConfig() (its
  // --docker-config), pulls pass them with --user (PullUser()).
  std::string registry_user, registry_password;
};

class ContainerdWithEvs : public ::testing::Test {
 protected:
  explicit ContainerdWithEvs(WorldOptions options = {}) : options_(options) {}
  void SetUp() override;
  void TearDown() override;

  static std::string Tail(const std::string& path, int lines = 40);

  // Starts the daemon with the fixture's root and socket, debug logging,
  // the hosts directory of HostsDir() (unless `extra` names another), plus
  // `extra` flags.
  void StartEvs(const std::vector<std::string>& extra = {});
  void StartContainerd();

  std::string EvsRoot() const { return dir_.Join("evs"); }
  std::string EvsSocket() const { return dir_.Join("evs.sock"); }
  std::string EvsLog() const { return dir_.Join("evs.log"); }
  std::string CtrSocket() const { return dir_.Join("ctd/containerd.sock"); }
  // containerd's and (unless a test points evs elsewhere) evs's registry
  // hosts directory: plain http for the test registry.
  std::string HostsDir() const { return dir_.Join("certs.d"); }
  // Writes <dir>/<registry>/hosts.toml sending `registry`'s requests to
  // `server` ("http://127.0.0.1:port").
  static void WriteHostsToml(const std::string& dir, const std::string& registry,
                             const std::string& server);
  // The Docker config.json the daemon is started with when the registry
  // wants a password (WorldOptions::registry_user).
  std::string DockerConfig() const { return dir_.Join("docker-config.json"); }
  // " --user USER:PASSWORD" for ctr and ctr-remote pulls (and " --creds …"
  // for skopeo and evs), or "" for an open registry.
  std::string PullUser() const;
  std::string Creds() const;

  std::string CtrCommand(const std::string& args, const std::string& ns = "evs-test") const;
  // Runs ctr; fails the test on a non-zero exit; returns its output.
  std::string Ctr(const std::string& args, const std::string& ns = "evs-test",
                  int timeout_ms = 300000);

  // Builds an image from `layers` (bottom first) and pushes it; returns its
  // reference.
  std::string PushImage(const std::string& name, const std::vector<LayerSpec>& layers);
  // The digests of the layer blobs of a pushed image, bottom first (from
  // the registry's storage).
  std::vector<std::string> LayerDigests(const std::string& ref);

  // Starts `ctr-remote images rpull` of `ref` in the background (output in
  // rpull.log); returns its pid.
  std::string StartRpull(const std::string& ref);

  void Pull(const std::string& ref) {
    Ctr("images pull --plain-http --snapshotter evs" + PullUser() + " " + ref);
  }
  // `ctr run --rm` of `script` under /bin/sh; returns its output.
  std::string Run(const std::string& ref, const std::string& id, const std::string& script,
                  const std::string& ns = "evs-test");

  // Three layers: files deleted (whiteout) and a directory made opaque in
  // the second, so a container must not see them.
  std::vector<LayerSpec> HidingImage();
  // The output of HidingImageScript() on HidingImage().
  static std::string HidingImageScript();
  static std::string HidingImageOutput();
  // 128 layers: busybox in the first, layers/<i> and `which` (= i) in each.
  static std::vector<LayerSpec> DeepImage();

  // Starts container `id` of `ref` that reads /etc/greeting, /data/kept.txt
  // and /opaque/new.txt (HidingImage()) in a loop, recording each round in
  // `out` (a host directory): the last output in r, the count in n, failed
  // rounds in errors.
  void StartReader(const std::string& ref, const std::string& id, const std::string& out);
  // Drops the page cache, then waits for two more successful rounds of that
  // reader (the bound only guards a hang); false if they did not come.
  bool ReaderRounds(const std::string& out);

  // Times the log mentions `needle`.
  int CountInLog(const std::string& path, const std::string& needle);

  WorldOptions options_;
  evs::testing::TempDir dir_{"evs-it"};
  std::unique_ptr<evs::testing::LocalRegistry> registry_;
  evs::testing::ChildProcess evs_;
  evs::testing::ChildProcess containerd_;
  std::vector<std::string> evs_flags_;  // the extra flags of the last StartEvs
};

}  // namespace evs::integration
