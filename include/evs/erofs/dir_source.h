// The directory walk: turns a directory tree — typically the committed upper
// directory of an overlay snapshot — into LayerEntry values for an
// ErofsWriter, so that the snapshotter's unpack path (DESIGN.md §1) builds
// images exactly as the tar path does.
//
// Overlayfs conventions pass through unchanged (reference/erofs-and-dm-
// verity-format.md §1.6): a whiteout is a char device 0:0 and stays one; an
// opaque directory keeps its trusted.overlay.opaque xattr. Overlayfs's
// bookkeeping xattrs that only make sense for the upper layer they were
// written in (trusted./user.overlay.origin, .impure, .nlink, .upper, .uuid)
// are dropped; trusted./user.overlay.metacopy and .redirect, whose meaning
// depends on the lower layers, are an error (containerd mounts without
// metacopy and redirect_dir, so a committed upper directory has neither).
#pragma once

#include <string>

#include "evs/common/status.h"
#include "evs/erofs/writer.h"

namespace evs::erofs {

struct DirSourceOptions {
  // Names the directory in error messages; the path when empty.
  std::string input_name;
};

// Adds the root and everything below `root` to `writer`, depth-first,
// parents before children, names in byte order (deterministic: the same tree
// gives the same entries). Symlinks are not followed; file data is read from
// the files as the writer consumes it; files with several links become one
// kRegular entry and kHardlink entries to its first path. Works with
// relative opens (openat) below each directory, so paths longer than
// PATH_MAX are fine; holds one open descriptor per directory level.
//
// Errors: any failure to read the tree (naming the path), an xattr the rules
// above refuse, and whatever the writer returns. The writer is left with a
// sticky error; the caller abandons the output.
Status AddDirectory(const std::string& root, ErofsWriter* writer,
                    const DirSourceOptions& options = {});

}  // namespace evs::erofs
