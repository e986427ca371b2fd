// Mount construction: a small pure function from a snapshot's state to the
// mounts handed to containerd (DESIGN.md §6; the shape of containerd's
// snapshots/overlay/overlay.go mounts()). No I/O, no allocation beyond the
// result.
#pragma once

#include <string>
#include <vector>

#include "evs/snapshot/types.h"

namespace evs::snapshot {

struct MountState {
  Kind kind = Kind::kActive;  // kActive or kView
  std::string fs_dir;         // snapshots/<id>/fs: the upper (active) or empty root
  std::string work_dir;       // snapshots/<id>/work (active with parents only)
  // Read-only mount points of the parents' layers, nearest parent first
  // (overlayfs takes lowerdir in that order, topmost first).
  std::vector<std::string> lowers;
  // Add "index=off" to overlay mounts (when the kernel has the option):
  // committed layers are remounted after a restart, and an index would tie
  // an upper directory to the lower file handles it was first mounted with.
  bool overlay_index_off = true;
};

// - active, no parents: a read-write bind of fs_dir;
// - active with parents: overlay with lowerdir, upperdir, workdir;
// - view, no parents: a read-only bind of the empty fs_dir;
// - view of one parent: a read-only bind of that layer's mount point;
// - view of several: a read-only overlay of the lowers (no upper).
std::vector<Mount> BuildMounts(const MountState& state);

}  // namespace evs::snapshot
