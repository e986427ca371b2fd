// End to end through the unpack path (DESIGN.md §1): `ctr images pull
// --snapshotter evs` has containerd download and unpack each layer into an
// active snapshot that evs turns into EROFS on Commit; `ctr run` starts
// containers on them. The world (containerd 1.6, docker-registry, runc, the
// daemon) is integration/containerd_fixture.h's.
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

TEST_F(ContainerdWithEvs, APulledImageRunsAndFilesRemovedInUpperLayersStayHidden) {
  std::string ref = PushImage("hiding", HidingImage());
  Pull(ref);
  EXPECT_EQ(Run(ref, "c1", HidingImageScript()), HidingImageOutput());
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
  std::string ref = PushImage("deep", DeepImage());
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
  ASSERT_NO_FATAL_FAILURE(StartReader(ref, "reader", out));
  const std::string expected = "hello from layer 2\nkept\nnew\n";
  ASSERT_TRUE(ReaderRounds(out));
  EXPECT_EQ(ReadFileOrDie(out + "/r"), expected);

  // A graceful stop: the layers under the container stay mounted.
  evs_.Stop();
  EXPECT_NE(ReadFileOrDie(EvsLog()).find("left_in_use=3"), std::string::npos) << Tail(EvsLog());
  EXPECT_TRUE(ReaderRounds(out)) << "while the daemon is down";
  StartEvs();
  EXPECT_TRUE(ReaderRounds(out)) << "after a restart";

  // kill -9, then a new daemon takes over the stale mounts.
  ASSERT_EQ(::kill(evs_.pid(), SIGKILL), 0);
  evs_.Stop();
  EXPECT_TRUE(ReaderRounds(out)) << "after kill -9";
  StartEvs();
  EXPECT_TRUE(ReaderRounds(out)) << "after the second restart";

  EXPECT_EQ(ReadFileOrDie(out + "/r"), expected);
  EXPECT_EQ(Sh("cat " + Quote(out + "/errors") + " 2>/dev/null").stdout_data, "")
      << "rounds that failed to read";
  // Both new daemons took over the verifier processes of the three layers
  // (none was started twice, none was left behind).
  if (ReadFileOrDie(EvsLog()).find("verity=userspace") != std::string::npos) {
    EXPECT_EQ(CountInLog(EvsLog(), "adopted a layer its verifier process still serves"), 6)
        << Tail(EvsLog());
  }
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
