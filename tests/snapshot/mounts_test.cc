// BuildMounts: the mounts containerd receives for each snapshot shape
// (DESIGN.md §6).
#include "evs/snapshot/mounts.h"

#include <gtest/gtest.h>

namespace evs::snapshot {
namespace {

MountState State(Kind kind, std::vector<std::string> lowers, bool index_off = true) {
  MountState s;
  s.kind = kind;
  s.fs_dir = "/r/snapshots/7/fs";
  s.work_dir = "/r/snapshots/7/work";
  s.lowers = std::move(lowers);
  s.overlay_index_off = index_off;
  return s;
}

TEST(BuildMounts, ActiveWithoutParentsIsAWritableBindOfItsDirectory) {
  EXPECT_EQ(BuildMounts(State(Kind::kActive, {})),
            (std::vector<Mount>{{"bind", "/r/snapshots/7/fs", {"rw", "rbind"}}}));
}

TEST(BuildMounts, ViewWithoutParentsIsAReadOnlyBind) {
  EXPECT_EQ(BuildMounts(State(Kind::kView, {})),
            (std::vector<Mount>{{"bind", "/r/snapshots/7/fs", {"ro", "rbind"}}}));
}

TEST(BuildMounts, ActiveWithParentsIsAnOverlayNearestParentFirst) {
  EXPECT_EQ(BuildMounts(State(Kind::kActive, {"/r/m/3", "/r/m/1"})),
            (std::vector<Mount>{{"overlay",
                                 "overlay",
                                 {"index=off", "workdir=/r/snapshots/7/work",
                                  "upperdir=/r/snapshots/7/fs", "lowerdir=/r/m/3:/r/m/1"}}}));
}

TEST(BuildMounts, IndexOffOnlyWhenTheKernelHasIt) {
  auto m = BuildMounts(State(Kind::kActive, {"/r/m/1"}, /*index_off=*/false));
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].options[0], "workdir=/r/snapshots/7/work");
}

TEST(BuildMounts, ViewOfOneLayerIsAReadOnlyBindOfItsMount) {
  EXPECT_EQ(BuildMounts(State(Kind::kView, {"/r/m/4"})),
            (std::vector<Mount>{{"bind", "/r/m/4", {"ro", "rbind"}}}));
}

TEST(BuildMounts, ViewOfSeveralLayersIsAReadOnlyOverlayWithoutUpper) {
  EXPECT_EQ(
      BuildMounts(State(Kind::kView, {"/r/m/4", "/r/m/2"})),
      (std::vector<Mount>{{"overlay", "overlay", {"index=off", "lowerdir=/r/m/4:/r/m/2", "ro"}}}));
}

TEST(BuildMounts, A128LayerLowerdirFitsTheKernelLimitUnderTheDefaultRoot) {
  std::vector<std::string> lowers;
  for (int i = 1000; i < 1128; ++i)
    lowers.push_back("/var/lib/containerd-evs/m/" + std::to_string(i));
  auto m = BuildMounts(State(Kind::kActive, lowers));
  size_t total = 0;
  for (const auto& o : m[0].options) total += o.size() + 1;
  // containerd shortens options ≥ 3584 bytes itself; evs paths stay below
  // the kernel's 4096-byte page either way.
  EXPECT_LT(total, 4096u);
}

}  // namespace
}  // namespace evs::snapshot
