// Snapshotter with real kernel mounts: EROFS layers, overlayfs, the
// reconcile after a crash, shared layers, concurrency. Needs root, erofs and
// overlay; skips otherwise.
#include "evs/snapshot/snapshotter.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/oci/chain_id.h"
#include "evs/verity/dm_verity.h"
#include "test_util.h"

namespace evs::snapshot {
namespace {

using evs::testing::ReadFileOrDie;
using evs::testing::TempDir;
using evs::testing::WriteFile;

#define EVS_REQUIRE_MOUNTS()                                                            \
  do {                                                                                  \
    EVS_REQUIRE_ROOT();                                                                 \
    if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "needs erofs";     \
    if (!evs::testing::KernelHasFilesystem("overlay")) GTEST_SKIP() << "needs overlay"; \
  } while (0)

// Mounts what the snapshotter returned, the way containerd's mount.All does
// for these two types.
Result<MountPoint> MountAt(const std::vector<Mount>& mounts, const std::string& target) {
  if (mounts.size() != 1) return InternalError("expected one mount, got ", mounts.size());
  const Mount& m = mounts[0];
  bool ro = false;
  std::string data;
  for (const std::string& o : m.options) {
    if (o == "ro") {
      ro = true;
    } else if (o == "rw" || o == "rbind") {
    } else {
      data += (data.empty() ? "" : ",") + o;
    }
  }
  MakeDirs(target).ToString();
  if (m.type == "bind") {
    EVS_ASSIGN_OR_RETURN(MountPoint mp,
                         MountPoint::Mount(m.source, target, "", MS_BIND | MS_REC, ""));
    if (ro && ::mount("", target.c_str(), "", MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
      return ErrnoError(errno, "remount ro");
    }
    return mp;
  }
  return MountPoint::Mount(m.source, target, m.type, ro ? MS_RDONLY : 0, data);
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

int MountsUnder(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string a, b, c, d, mp;
    f >> a >> b >> c >> d >> mp;
    if (mp.rfind(dir + "/", 0) == 0) ++n;
  }
  return n;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

class SnapshotterTest : public ::testing::TestWithParam<VerityMode> {
 protected:
  void SetUp() override {
    if (!evs::testing::IsRoot() || !evs::testing::KernelHasFilesystem("erofs") ||
        !evs::testing::KernelHasFilesystem("overlay")) {
      GTEST_SKIP() << "needs root, erofs and overlay";
    }
    if (GetParam() == VerityMode::kUserspace && ::access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "userspace verification needs /dev/fuse";
    }
    if (GetParam() == VerityMode::kKernel && !verity::OpenDeviceMapper().ok()) {
      GTEST_SKIP() << "kernel verification needs device-mapper (none here); these run in a qemu "
                      "guest: tests/verity/qemu/run_guest_test.sh";
    }
    Open();
  }
  void TearDown() override {
    if (sn_) {
      EXPECT_TRUE(sn_->Close().ok());
      sn_.reset();
    }
  }
  void Open() {
    SnapshotterOptions options;
    options.root = root();
    options.verity = GetParam();
    auto s = Snapshotter::Open(options);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    sn_ = std::move(*s);
    ASSERT_EQ(sn_->verity(), GetParam());
  }
  void Reopen() {
    ASSERT_TRUE(sn_->Close().ok());
    sn_.reset();
    Open();
  }
  std::string root() const { return dir_.Join("root"); }
  std::string work(const std::string& name) const { return dir_.Join("work/" + name); }
  // Mounts one layer makes: EROFS, plus its FUSE file in userspace mode.
  int PerLayer() const { return GetParam() == VerityMode::kUserspace ? 2 : 1; }
  // The layer mount points under m/ (without userspace mode's FUSE files).
  std::vector<std::string> LayerDirs() const {
    std::vector<std::string> out;
    for (const std::string& n : List(root() + "/m")) {
      if (n.find('.') == std::string::npos) out.push_back(n);
    }
    return out;
  }

  // Prepares `key` on `parent`, lets `fill` change the mounted tree, and
  // commits it as `name`.
  template <typename Fill>
  void Layer(const std::string& name, const std::string& parent, Fill fill) {
    std::string key = name + "-active";
    auto mounts = sn_->Prepare(key, parent, {});
    ASSERT_TRUE(mounts.ok()) << mounts.status().ToString();
    std::string target = work(key);
    {
      auto mp = MountAt(*mounts, target);
      ASSERT_TRUE(mp.ok()) << mp.status().ToString();
      fill(target);
      ASSERT_TRUE(mp->Unmount().ok());
    }
    Status s = sn_->Commit(name, key, {});
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  TempDir dir_{"evs-snapshotter"};
  std::unique_ptr<Snapshotter> sn_;
};

TEST_P(SnapshotterTest, CommittedLayersStackAndAViewSeesTheirUnion) {
  Layer("base", "", [](const std::string& t) {
    WriteFile(t + "/etc/hostname", "base\n");
    WriteFile(t + "/bin/tool", "v1");
    ASSERT_EQ(::chmod((t + "/bin/tool").c_str(), 0755), 0);
  });
  Layer("top", "base", [](const std::string& t) { WriteFile(t + "/bin/tool", "v2"); });
  auto view = sn_->View("look", "top", {});
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  auto mp = MountAt(*view, work("look"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_EQ(ReadFileOrDie(work("look") + "/etc/hostname"), "base\n");
  EXPECT_EQ(ReadFileOrDie(work("look") + "/bin/tool"), "v2");
  struct stat st;
  ASSERT_EQ(::stat((work("look") + "/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  // A view is read-only.
  EXPECT_NE(::mkdir((work("look") + "/new").c_str(), 0755), 0);
}

TEST_P(SnapshotterTest, CommitStoresTheUpperDirectoryAsAnErofsImageAndRemovesIt) {
  Layer("one", "", [](const std::string& t) { WriteFile(t + "/f", "x"); });
  auto layers = List(root() + "/layers/sha256");
  ASSERT_EQ(layers.size(), 1u);
  std::string image = root() + "/layers/sha256/" + layers[0] + "/layer.erofs";
  EXPECT_EQ(ReadFileOrDie(image).substr(1024, 4), std::string("\xe2\xe1\xf5\xe0", 4))
      << "EROFS superblock magic at 1024";
  // Only the new active snapshot's directory would be here; the committed
  // one's upper directory is gone.
  EXPECT_TRUE(List(root() + "/snapshots").empty());
  auto m = LayerDirs();
  ASSERT_EQ(m.size(), 1u);
  EXPECT_TRUE(IsMountPoint(root() + "/m/" + m[0]));
}

TEST_P(SnapshotterTest, DeletionsAndOpaqueDirectoriesInUpperLayersHideLowerFiles) {
  Layer("lower", "", [](const std::string& t) {
    WriteFile(t + "/gone", "deleted above");
    WriteFile(t + "/dir/old1", "1");
    WriteFile(t + "/dir/old2", "2");
    WriteFile(t + "/kept", "k");
  });
  Layer("upper", "lower", [](const std::string& t) {
    ASSERT_EQ(::unlink((t + "/gone").c_str()), 0);
    evs::testing::ShOk("rm -rf '" + t + "/dir'");
    ASSERT_EQ(::mkdir((t + "/dir").c_str(), 0755), 0);  // overlayfs makes it opaque
    WriteFile(t + "/dir/new", "n");
  });
  // A container on top (a new active snapshot) must not see what was removed.
  auto mounts = sn_->Prepare("container", "upper", {});
  ASSERT_TRUE(mounts.ok()) << mounts.status().ToString();
  auto mp = MountAt(*mounts, work("c"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_FALSE(Exists(work("c") + "/gone"));
  EXPECT_EQ(List(work("c") + "/dir"), (std::vector<std::string>{"new"}));
  EXPECT_EQ(ReadFileOrDie(work("c") + "/kept"), "k");
  ASSERT_TRUE(mp->Unmount().ok());

  // In the upper layer's image itself: a 0:0 whiteout and an opaque xattr.
  bool found = false;
  for (const std::string& id : LayerDirs()) {
    std::string layer = root() + "/m/" + id;
    struct stat st;
    if (::lstat((layer + "/gone").c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) continue;
    found = true;
    EXPECT_EQ(st.st_rdev, makedev(0, 0));
    char value[8] = {};
    EXPECT_EQ(::getxattr((layer + "/dir").c_str(), "trusted.overlay.opaque", value, sizeof value),
              1);
    EXPECT_EQ(value[0], 'y');
  }
  EXPECT_TRUE(found) << "no layer mount holds the whiteout";
}

TEST_P(SnapshotterTest, IdenticalLayersAreStoredOnceAndRemovedWithTheLastSnapshot) {
  auto same = [](const std::string& t) {
    WriteFile(t + "/same", "identical content");
    ASSERT_EQ(::chmod(t.c_str(), 0755), 0);
    struct timespec times[2] = {{1000000, 0}, {1000000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (t + "/same").c_str(), times, 0), 0);
    ASSERT_EQ(::utimensat(AT_FDCWD, t.c_str(), times, 0), 0);
  };
  Layer("a", "", same);
  Layer("b", "", same);
  EXPECT_EQ(List(root() + "/layers/sha256").size(), 1u);
  EXPECT_EQ(LayerDirs().size(), 1u);
  ASSERT_TRUE(sn_->Remove("a").ok());
  EXPECT_EQ(List(root() + "/layers/sha256").size(), 1u) << "b still holds the layer";
  EXPECT_EQ(MountsUnder(root()), PerLayer());
  ASSERT_TRUE(sn_->Remove("b").ok());
  EXPECT_TRUE(List(root() + "/layers/sha256").empty());
  EXPECT_EQ(MountsUnder(root()), 0);
  EXPECT_TRUE(List(root() + "/m").empty());
}

TEST_P(SnapshotterTest, UsageMeasuresActiveSnapshotsAndReportsLayerSizes) {
  auto mounts = sn_->Prepare("active", "", {});
  ASSERT_TRUE(mounts.ok());
  {
    auto mp = MountAt(*mounts, work("a"));
    ASSERT_TRUE(mp.ok());
    WriteFile(work("a") + "/big", std::string(100000, 'z'));
    WriteFile(work("a") + "/d/small", "s");
  }
  auto active = sn_->GetUsage("active");
  ASSERT_TRUE(active.ok()) << active.status().ToString();
  EXPECT_GE(active->size, 100000);
  EXPECT_EQ(active->inodes, 4);  // root, big, d, d/small
  ASSERT_TRUE(sn_->Commit("done", "active", {}).ok());
  auto committed = sn_->GetUsage("done");
  ASSERT_TRUE(committed.ok());
  EXPECT_GE(committed->size, 100000) << "the layer file holds the data";
  EXPECT_EQ(committed->inodes, 4);
  auto missing = sn_->GetUsage("nope");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
}

TEST_P(SnapshotterTest, ContainerdErrorsForKeysParentsAndKinds) {
  ASSERT_TRUE(sn_->Prepare("k", "", {}).ok());
  EXPECT_EQ(sn_->Prepare("k", "", {}).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(sn_->View("k", "", {}).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(sn_->Prepare("x", "missing", {}).status().code(), Code::kNotFound);
  EXPECT_EQ(sn_->Prepare("x", "k", {}).status().code(), Code::kInvalidArgument)
      << "parent must be committed";
  EXPECT_EQ(sn_->Commit("c", "missing", {}).code(), Code::kNotFound);
  ASSERT_TRUE(sn_->Commit("c", "k", {}).ok());
  EXPECT_EQ(sn_->Commit("c", "k", {}).code(), Code::kAlreadyExists);
  EXPECT_EQ(sn_->Mounts("c").status().code(), Code::kFailedPrecondition);
  ASSERT_TRUE(sn_->View("v", "c", {}).ok());
  EXPECT_EQ(sn_->Commit("c2", "v", {}).code(), Code::kFailedPrecondition) << "views do not commit";
  EXPECT_EQ(sn_->Remove("c").code(), Code::kFailedPrecondition) << "c has a child";
  EXPECT_TRUE(sn_->Remove("v").ok());
  EXPECT_TRUE(sn_->Remove("c").ok());
  EXPECT_EQ(sn_->Remove("c").code(), Code::kNotFound);
  EXPECT_EQ(sn_->Stat("c").status().code(), Code::kNotFound);
  EXPECT_EQ(sn_->Prepare("", "", {}).status().code(), Code::kInvalidArgument);
}

TEST_P(SnapshotterTest, LabelsOver4096BytesAreInvalidArgumentAndNothingIsCreated) {
  Labels ok = {{"k", std::string(4095, 'v')}};
  EXPECT_TRUE(sn_->Prepare("fits", "", ok).ok());
  Labels big = {{"key", std::string(4094, 'v')}};
  auto r = sn_->Prepare("too-big", "", big);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("key"), std::string::npos);
  EXPECT_EQ(sn_->Stat("too-big").status().code(), Code::kNotFound);
  Info update;
  update.name = "fits";
  update.labels = big;
  EXPECT_EQ(sn_->Update(update, {"labels.key"}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(List(root() + "/snapshots").size(), 1u);
}

TEST_P(SnapshotterTest, HostileKeysAreDataNeverPaths) {
  const std::vector<std::string> keys = {"../../../../etc/passwd",
                                         "/absolute/path",
                                         std::string("nul\0inside", 10),
                                         "new\nline",
                                         std::string(8192, 'k'),
                                         "snapshots/1",
                                         "..",
                                         "m/1"};
  for (const std::string& key : keys) {
    auto r = sn_->Prepare(key, "", {{key.substr(0, 100), "v"}});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto info = sn_->Stat(key);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->name, key);
  }
  // Directories are named by id only; nothing was created outside the root.
  for (const std::string& n : List(root() + "/snapshots")) {
    EXPECT_EQ(n.find_first_not_of("0123456789"), std::string::npos) << n;
  }
  EXPECT_EQ(List(root() + "/snapshots").size(), keys.size());
  ASSERT_TRUE(sn_->Commit("c", "../../../../etc/passwd", {}).ok());
  for (const std::string& key : keys) {
    if (key != "../../../../etc/passwd") {
      EXPECT_TRUE(sn_->Remove(key).ok());
    }
  }
  EXPECT_TRUE(sn_->Remove("c").ok());
  EXPECT_TRUE(List(root() + "/snapshots").empty());
}

TEST_P(SnapshotterTest, UpdateChangesOnlyTheNamedLabels) {
  ASSERT_TRUE(sn_->Prepare("k", "", {{"a", "1"}, {"b", "2"}}).ok());
  Info info;
  info.name = "k";
  info.labels = {{"b", "20"}, {"c", "3"}};
  auto one = sn_->Update(info, {"labels.b"});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->labels, (Labels{{"a", "1"}, {"b", "20"}}));
  auto removed = sn_->Update(info, {"labels.a"});  // absent in info: removed
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->labels, (Labels{{"b", "20"}}));
  auto all = sn_->Update(info, {"labels"});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->labels, (Labels{{"b", "20"}, {"c", "3"}}));
  EXPECT_EQ(sn_->Update(info, {"parent"}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(sn_->Update(info, {"name"}).status().code(), Code::kInvalidArgument);
  auto stat = sn_->Stat("k");
  ASSERT_TRUE(stat.ok());
  EXPECT_EQ(stat->labels, (Labels{{"b", "20"}, {"c", "3"}}));
  EXPECT_GE(stat->updated_ns, stat->created_ns);
}

TEST_P(SnapshotterTest, ListAppliesContainerdFilters) {
  ASSERT_TRUE(sn_->Prepare("a", "", {{"containerd.io/gc.root", "x"}}).ok());
  ASSERT_TRUE(sn_->Commit("a-c", "a", {{"l", "1"}}).ok());
  ASSERT_TRUE(sn_->Prepare("b", "a-c", {}).ok());
  auto names = [&](std::vector<std::string> filters) {
    auto infos = sn_->List(filters);
    EXPECT_TRUE(infos.ok()) << infos.status().ToString();
    std::vector<std::string> out;
    if (infos.ok()) {
      for (const Info& i : *infos) out.push_back(i.name);
    }
    return out;
  };
  EXPECT_EQ(names({}), (std::vector<std::string>{"a-c", "b"}));
  EXPECT_EQ(names({"kind==active"}), (std::vector<std::string>{"b"}));
  EXPECT_EQ(names({"parent==a-c"}), (std::vector<std::string>{"b"}));
  EXPECT_EQ(names({"labels.l==1", "name==b"}), (std::vector<std::string>{"a-c", "b"}));
  EXPECT_EQ(sn_->List({"name=="}).status().code(), Code::kInvalidArgument);
}

TEST_P(SnapshotterTest, ReopenRemovesWhatACrashLeftAndRemountsCommittedLayers) {
  Layer("base", "", [](const std::string& t) { WriteFile(t + "/f", "base"); });
  auto mounts = sn_->Prepare("container", "base", {});
  ASSERT_TRUE(mounts.ok());
  ASSERT_TRUE(sn_->Close().ok());
  sn_.reset();
  // What a daemon killed half-way leaves behind: a temporary snapshot
  // directory, an upper directory whose row is gone, a staged layer, a layer
  // directory without a row, and a mount under m/ (mounts left by a killed
  // daemon stay).
  ASSERT_TRUE(MakeDirs(root() + "/snapshots/new-abc123/fs").ok());
  ASSERT_TRUE(MakeDirs(root() + "/snapshots/999/fs").ok());
  ASSERT_TRUE(MakeDirs(root() + "/layers/tmp/XyZ123").ok());
  WriteFile(root() + "/layers/tmp/XyZ123/layer.erofs", "partial");
  std::string orphan = root() + "/layers/sha256/" + std::string(64, 'e');
  WriteFile(orphan + "/layer.erofs", "orphan");
  ASSERT_TRUE(MakeDirs(root() + "/m/77").ok());
  ASSERT_EQ(::mount("tmpfs", (root() + "/m/77").c_str(), "tmpfs", 0, nullptr), 0);

  Open();
  EXPECT_FALSE(Exists(root() + "/snapshots/new-abc123"));
  EXPECT_FALSE(Exists(root() + "/snapshots/999"));
  EXPECT_TRUE(List(root() + "/layers/tmp").empty());
  EXPECT_FALSE(Exists(orphan));
  EXPECT_FALSE(Exists(root() + "/m/77"));
  // What metadata names survived, and works.
  auto again = sn_->Mounts("container");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto mp = MountAt(*again, work("c"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_EQ(ReadFileOrDie(work("c") + "/f"), "base");
}

TEST_P(SnapshotterTest, ASecondSnapshotterOnTheSameRootIsRefused) {
  SnapshotterOptions options;
  options.root = root();
  options.verity = VerityMode::kOff;
  auto second = Snapshotter::Open(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(root()), std::string::npos);
}

TEST_P(SnapshotterTest, CloseLeavesLayersUnderAMountedOverlayAndUnmountsTheRest) {
  Layer("used", "", [](const std::string& t) { WriteFile(t + "/u", "u"); });
  Layer("idle", "", [](const std::string& t) { WriteFile(t + "/i", "i"); });
  auto mounts = sn_->Prepare("container", "used", {});
  ASSERT_TRUE(mounts.ok());
  auto mp = MountAt(*mounts, work("c"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  ASSERT_TRUE(sn_->Close().ok());
  sn_.reset();
  // The container's overlay and the layer under it remain; the idle layer
  // was unmounted.
  EXPECT_EQ(MountsUnder(root()), PerLayer());
  EXPECT_EQ(ReadFileOrDie(work("c") + "/u"), "u");
  ASSERT_TRUE(mp->Unmount().ok());
  Open();  // and the next start takes over cleanly
  EXPECT_EQ(MountsUnder(root()), 2 * PerLayer());
}

TEST_P(SnapshotterTest, ThirtyTwoConcurrentPrepareCommitRemoveStreamsLeaveNothing) {
  constexpr int kStreams = 32;
  constexpr int kRounds = 4;
  Layer("shared-base", "", [](const std::string& t) { WriteFile(t + "/base", "b"); });
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      for (int r = 0; r < kRounds; ++r) {
        std::string key = StrCat("s", s, "-r", r);
        auto mounts = sn_->Prepare(key, "shared-base", {});
        if (!mounts.ok()) {
          ++failures;
          continue;
        }
        // Write into the upper directory directly: the content differs per
        // stream, so every commit makes its own layer.
        std::string upper;
        for (const std::string& o : (*mounts)[0].options) {
          if (o.rfind("upperdir=", 0) == 0) upper = o.substr(9);
        }
        WriteFile(upper + "/file", key);
        if (!sn_->Commit(key + "-c", key, {}).ok()) ++failures;
        if (!sn_->Remove(key + "-c").ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto left = sn_->List({});
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].name, "shared-base");
  EXPECT_TRUE(List(root() + "/snapshots").empty());
  EXPECT_EQ(List(root() + "/layers/sha256").size(), 1u);
  EXPECT_TRUE(List(root() + "/layers/tmp").empty());
  EXPECT_EQ(MountsUnder(root()), PerLayer());
}

TEST_P(SnapshotterTest, CleanupRemovesDirectoriesNothingReferences) {
  ASSERT_TRUE(MakeDirs(root() + "/snapshots/4242/fs").ok());
  std::string orphan = root() + "/layers/sha256/" + std::string(64, 'd');
  WriteFile(orphan + "/layer.erofs", "orphan");
  ASSERT_TRUE(sn_->Prepare("kept", "", {}).ok());
  ASSERT_TRUE(sn_->Cleanup().ok());
  EXPECT_FALSE(Exists(root() + "/snapshots/4242"));
  EXPECT_FALSE(Exists(orphan));
  EXPECT_EQ(List(root() + "/snapshots").size(), 1u);
}

TEST_P(SnapshotterTest, ACorruptedByteInALayerFileFailsReadsOfThatFileWithEio) {
  if (GetParam() == VerityMode::kOff) GTEST_SKIP() << "verification is off";
  Layer("l", "", [](const std::string& t) {
    WriteFile(t + "/big", std::string(256 * 1024, 'Q'));
    WriteFile(t + "/other", "fine");
  });
  ASSERT_TRUE(sn_->Close().ok());
  sn_.reset();
  // Flip one byte inside the data of /big, below the hash tree.
  auto layers = List(root() + "/layers/sha256");
  ASSERT_EQ(layers.size(), 1u);
  std::string image = root() + "/layers/sha256/" + layers[0] + "/layer.erofs";
  std::string bytes = ReadFileOrDie(image);
  size_t at = bytes.find(std::string(4096, 'Q'));
  ASSERT_NE(at, std::string::npos);
  evs::testing::ShOk("printf 'X' | dd of=" + image + " bs=1 seek=" + std::to_string(at + 100) +
                     " conv=notrunc status=none && sync && echo 3 > /proc/sys/vm/drop_caches");
  Open();
  auto view = sn_->View("v", "l", {});
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  auto mp = MountAt(*view, work("v"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_EQ(ReadFileOrDie(work("v") + "/other"), "fine") << "other blocks still read";
  int fd = ::open((work("v") + "/big").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string buf(256 * 1024, '\0');
  ssize_t n = ::read(fd, buf.data(), buf.size());
  int err = errno;
  ::close(fd);
  EXPECT_EQ(n, -1) << "the corrupted block must never be returned";
  EXPECT_EQ(err, EIO);
}

// A RemoteLayerSource that converts a local tar file, the way convert-on-pull
// converts a downloaded blob (LayerStore::BuildFromBlob): enough to pin down
// what Prepare does with the hook the convert-on-pull and lazy paths plug
// into.
class TarLayerSource : public RemoteLayerSource {
 public:
  explicit TarLayerSource(std::string tar) : tar_(std::move(tar)) {}
  Result<std::shared_ptr<StagedLayer>> Fetch(LayerStore& store,
                                             const RemoteLayerRequest& request) override {
    ++calls;
    if (request.labels.count("fail")) {
      return UnavailableError("registry unreachable for ", request.key);
    }
    EVS_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(tar_));
    UniqueFd fd(::open(tar_.c_str(), O_RDONLY | O_CLOEXEC));
    FdSource source(fd.get(), tar_);
    EVS_ASSIGN_OR_RETURN(StagedLayer staged,
                         store.BuildFromBlob(&source, Digest::Sha256Of(bytes), {}));
    return std::make_shared<StagedLayer>(std::move(staged));
  }
  int calls = 0;

 private:
  std::string tar_;
};

// Chain IDs as containerd computes them (image-spec config.md).
std::string Chain(const std::vector<Digest>& diff_ids) { return oci::ChainId(diff_ids).ToString(); }

class RemoteLayerTest : public SnapshotterTest {
 protected:
  // A tar of one file; its digest is both blob digest and diffID.
  Digest MakeTar(const std::string& name, const std::string& file, const std::string& content) {
    std::string tree = dir_.Join("tree-" + name);
    WriteFile(tree + "/" + file, content);
    std::string tar = dir_.Join(name + ".tar");
    // Plain options: in the qemu guest (tests/verity/qemu) this is
    // busybox's tar. The tests run as root, so the owner is root anyway.
    evs::testing::ShOk("tar -C '" + tree + "' -cf '" + tar + "' .");
    return Digest::Sha256Of(ReadFileOrDie(tar));
  }
  void OpenWith(RemoteLayerSource* source, bool verify_chain = true) {
    if (sn_) {
      ASSERT_TRUE(sn_->Close().ok());
      sn_.reset();
    }
    SnapshotterOptions options;
    options.root = root();
    options.verity = GetParam();
    options.remote = source;
    options.verify_remote_chain = verify_chain;
    auto opened = Snapshotter::Open(options);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    sn_ = std::move(*opened);
  }
  void CloseNow() {
    ASSERT_TRUE(sn_->Close().ok());
    sn_.reset();  // before the source goes out of scope
  }
  // An unpacked base layer named the way containerd names it.
  std::string Base(const std::string& ns = "default", int n = 1) {
    std::string name = ns + "/" + std::to_string(n) + "/" + base_chain_;
    Layer(name, "", [](const std::string& t) { WriteFile(t + "/base", "b"); });
    return name;
  }
  const std::string base_chain_ = Digest::Sha256Of("base").ToString();
};

TEST_P(RemoteLayerTest, ARemoteLayerIsCommittedUnderItsRefAndPrepareAnswersAlreadyExists) {
  Digest diff = MakeTar("remote", "remote.txt", "fetched by evs");
  TarLayerSource source(dir_.Join("remote.tar"));
  OpenWith(&source);
  std::string base = Base();

  // Without the ref label the hook is not consulted.
  ASSERT_TRUE(sn_->Prepare("plain", base, {}).ok());
  EXPECT_EQ(source.calls, 0);
  // With it, evs commits the layer under the ref and containerd is told the
  // snapshot exists, so it skips download and unpack.
  std::string target = Chain({*Digest::Parse(base_chain_), diff});
  Labels labels = {{kTargetRefLabel, target}, {"containerd.io/snapshot/cri.layer-digest", "x"}};
  auto r = sn_->Prepare("extract-2", base, labels);
  EXPECT_EQ(r.status().code(), Code::kAlreadyExists) << r.status().ToString();
  EXPECT_EQ(source.calls, 1);
  auto info = sn_->Stat(target);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->kind, Kind::kCommitted);
  EXPECT_EQ(info->parent, base);
  EXPECT_EQ(info->labels, labels) << "containerd finds it by its ref label and parent";
  EXPECT_EQ(sn_->Stat("extract-2").status().code(), Code::kNotFound);
  // Stored once, under its blob digest.
  EXPECT_TRUE(Exists(root() + "/layers/sha256/" + diff.hex() + "/layer.erofs"));
  // A second pull of the same layer finds it without fetching.
  EXPECT_EQ(sn_->Prepare("extract-2b", base, labels).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(source.calls, 1);
  auto view = sn_->View("look", target, {});
  ASSERT_TRUE(view.ok());
  auto mp = MountAt(*view, work("look"));
  ASSERT_TRUE(mp.ok()) << mp.status().ToString();
  EXPECT_EQ(ReadFileOrDie(work("look") + "/remote.txt"), "fetched by evs");
  EXPECT_EQ(ReadFileOrDie(work("look") + "/base"), "b");
  ASSERT_TRUE(mp->Unmount().ok());
  auto stats = sn_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->remote_committed, 1);

  // When the source fails, Prepare falls back to an ordinary active
  // snapshot that containerd unpacks into.
  Labels failing = {{kTargetRefLabel, Chain({diff})}, {"fail", "1"}};
  auto fallback = sn_->Prepare("extract-3", "", failing);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  auto active = sn_->Stat("extract-3");
  ASSERT_TRUE(active.ok());
  EXPECT_EQ(active->kind, Kind::kActive);
  EXPECT_EQ(sn_->Stat(Chain({diff})).status().code(), Code::kNotFound);
  stats = sn_->GetStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->remote_fallbacks, 1);
  CloseNow();
}

TEST_P(RemoteLayerTest, ALayerWhoseDiffIdDoesNotChainToTheRefIsNotCommitted) {
  Digest diff = MakeTar("remote", "remote.txt", "some other layer");
  TarLayerSource source(dir_.Join("remote.tar"));
  OpenWith(&source);
  std::string base = Base();
  // Labels that make evs fetch a blob other than the one the chain ID
  // stands for (a hostile client or image config) must not plant it there.
  std::string claimed = Chain({*Digest::Parse(base_chain_), Digest::Sha256Of("the real layer")});
  auto r = sn_->Prepare("extract", base, {{kTargetRefLabel, claimed}});
  ASSERT_TRUE(r.ok()) << "falls back to unpacking: " << r.status().ToString();
  EXPECT_EQ(sn_->Stat(claimed).status().code(), Code::kNotFound);
  EXPECT_EQ(sn_->Stat("extract")->kind, Kind::kActive);
  EXPECT_FALSE(Exists(root() + "/layers/sha256/" + diff.hex()));
  EXPECT_TRUE(List(root() + "/layers/tmp").empty());
  // A parent that names no chain ID cannot be checked either.
  Layer("unnamed", "", [](const std::string& t) { WriteFile(t + "/x", "x"); });
  std::string on_unnamed = Chain({Digest::Sha256Of("unnamed"), diff});
  ASSERT_TRUE(sn_->Prepare("extract-u", "unnamed", {{kTargetRefLabel, on_unnamed}}).ok());
  EXPECT_EQ(sn_->Stat(on_unnamed).status().code(), Code::kNotFound);
  // The correct chain ID is accepted.
  std::string right = Chain({*Digest::Parse(base_chain_), diff});
  EXPECT_EQ(sn_->Prepare("extract-ok", base, {{kTargetRefLabel, right}}).status().code(),
            Code::kAlreadyExists);
  CloseNow();
}

TEST_P(RemoteLayerTest, WithoutChainChecksTheSourceIsTrusted) {
  MakeTar("remote", "remote.txt", "trusted");
  TarLayerSource source(dir_.Join("remote.tar"));
  OpenWith(&source, /*verify_chain=*/false);
  std::string base = Base();
  EXPECT_EQ(sn_->Prepare("extract", base, {{kTargetRefLabel, "chain-2"}}).status().code(),
            Code::kAlreadyExists);
  EXPECT_EQ(sn_->Stat("chain-2")->kind, Kind::kCommitted);
  CloseNow();
}

TEST_P(RemoteLayerTest, OneChainIdOnDifferentlyNamedParentsIsCommittedOncePerParent) {
  // Two containerd namespaces unpacked the same base layer: the same chain
  // ID under two names. A remote layer on top of each has one chain ID, and
  // containerd looks it up by ref label and parent (metadata/snapshot.go).
  Digest diff = MakeTar("remote", "remote.txt", "shared");
  TarLayerSource source(dir_.Join("remote.tar"));
  OpenWith(&source);
  std::string base1 = Base("ns1", 1);
  std::string base2 = Base("ns2", 7);
  std::string target = Chain({*Digest::Parse(base_chain_), diff});
  auto before = sn_->GetStats();
  ASSERT_TRUE(before.ok());
  for (const std::string& parent : {base1, base2}) {
    auto r = sn_->Prepare("ns/extract " + parent, parent, {{kTargetRefLabel, target}});
    EXPECT_EQ(r.status().code(), Code::kAlreadyExists) << r.status().ToString();
    auto found = sn_->List(
        {"labels.\"containerd.io/snapshot.ref\"==" + target + ",parent==\"" + parent + "\""});
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    ASSERT_EQ(found->size(), 1u) << parent;
    EXPECT_EQ((*found)[0].kind, Kind::kCommitted);
    EXPECT_EQ((*found)[0].parent, parent);
  }
  EXPECT_EQ(source.calls, 2);
  auto after = sn_->GetStats();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->layers_shared - before->layers_shared, 1) << "the layer is stored once";
  EXPECT_TRUE(Exists(root() + "/layers/sha256/" + diff.hex()));
  CloseNow();
}

INSTANTIATE_TEST_SUITE_P(Verity, SnapshotterTest,
                         ::testing::Values(VerityMode::kOff, VerityMode::kUserspace,
                                           VerityMode::kKernel),
                         [](const auto& info) { return std::string(VerityModeName(info.param)); });
INSTANTIATE_TEST_SUITE_P(Verity, RemoteLayerTest,
                         ::testing::Values(VerityMode::kOff, VerityMode::kUserspace,
                                           VerityMode::kKernel),
                         [](const auto& info) { return std::string(VerityModeName(info.param)); });

}  // namespace
}  // namespace evs::snapshot
