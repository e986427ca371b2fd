// Test helpers for the erofs module: a generator of directory trees with
// every entry kind and edge the round trip must survive, and a snapshot of a
// tree (as the kernel shows it) that two trees are compared with.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "evs/common/status.h"

namespace evs::testing {

// What a tree may hold; each tar format holds a different subset
// (ustar: short names and link targets, no xattrs, no negative mtimes).
struct TreeFeatures {
  bool long_names = true;         // names of 101 and 255 bytes, targets > 100 bytes
  bool deep_paths = true;         // paths longer than 4096 bytes (4232)
  bool xattrs = true;             // user., trusted., security. (root for the latter two)
  bool negative_mtime = true;     // before 1970
  bool devices = true;            // char/block devices, fifos (root)
  bool sockets = false;           // GNU tar skips sockets: only for --from-dir
  bool overlay = false;           // whiteouts as char 0:0 and trusted.overlay.opaque dirs
                                  // (--from-dir); otherwise OCI .wh. files
  bool xattr_on_symlink = false;  // trusted.* on a symlink (--from-dir)
};

// Creates the edge-case tree under `root` (which must exist). Needs root
// for devices, ownership and trusted./security. xattrs.
void BuildEdgeTree(const std::string& root, const TreeFeatures& features);

// Creates `count` empty files in directory `dir` (made), names of varying
// length so that the directory spans many blocks.
void BuildWideDirectory(const std::string& dir, int count);

// Writes `size` pseudo-random bytes (a function of `seed`) to `path`.
void WriteRandomFile(const std::string& path, uint64_t size, uint32_t seed);

// One object as lstat(2) and friends show it.
struct TreeEntry {
  char type = '?';    // - d l c b p s
  uint32_t mode = 0;  // permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;    // seconds
  uint64_t size = 0;    // regular files and symlinks
  std::string content;  // sha256 hex of regular-file data
  std::string target;   // symlink target
  uint32_t rdev_major = 0, rdev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted
  std::string link_group;  // smallest path sharing the inode (non-directories with nlink > 1)
};

using TreeSnapshot = std::map<std::string, TreeEntry>;  // "" is the root

// Snapshots the tree under `root` (paths relative, "" for the root). Uses
// openat below each directory, so paths beyond PATH_MAX are fine.
TreeSnapshot SnapshotTree(const std::string& root);

// Applies OCI layer whiteout semantics to a snapshot of `tar -x` output:
// ".wh.<name>" becomes a char device 0:0 (mode 0, owner and mtime of the
// .wh. file) named <name>; ".wh..wh..opq" disappears and its directory gets
// trusted.overlay.opaque=y.
TreeSnapshot ApplyWhiteouts(TreeSnapshot snapshot);

// Human-readable differences, empty when the snapshots agree. Sizes of
// directories are not compared (filesystems differ there).
std::string DiffSnapshots(const TreeSnapshot& expected, const TreeSnapshot& actual);

}  // namespace evs::testing
