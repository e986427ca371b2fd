// A layer mount in userspace verification mode, served by a process of its
// own (DESIGN.md §5 `userspace`). The FUSE file that verifies every block
// lives as long as the process serving it; running the server outside the
// daemon lets a daemon restart, upgrade or crash leave the layers under
// running containers readable (the complaint peers' users have most,
// reference/remote-snapshotters.md §4.1).
//
// The daemon starts one per mounted layer (`containerd-evs-grpc
// serve-verified-layer …`, see VerifiedLayerArgv), reads one status line
// from it, and stops it with SIGTERM. The process runs in its own session,
// so signals for the daemon's process group do not reach it; on SIGTERM it
// unmounts and exits, or, while a container's overlay still reads the layer,
// keeps serving and retries every second until the layer is released.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "evs/common/status.h"

namespace evs::snapshot {

inline constexpr const char* kServeVerifiedLayerCommand = "serve-verified-layer";

struct VerifiedLayerArgs {
  std::string layer_file;  // layers/sha256/<hex>/layer.erofs
  uint64_t hash_offset = 0;
  std::string root_digest;  // "sha256:<hex>"
  std::string fuse_file;    // m/<id>.verity
  std::string target;       // m/<id>
  std::string name;         // "layer sha256:…" for logs
  int threads = 2;
};

// The arguments after the program name:
// {"serve-verified-layer", layer_file, hash_offset, root_digest, fuse_file,
//  target, name, threads}.
std::vector<std::string> VerifiedLayerArgv(const VerifiedLayerArgs& args);
// Parses what VerifiedLayerArgv made (argv[0] is the command word).
// InvalidArgument naming the bad field.
Result<VerifiedLayerArgs> ParseVerifiedLayerArgv(const std::vector<std::string>& argv);

// The process's main: mounts, writes "ok\n" (or "error: <message>\n") to
// `status_fd` and closes it, then serves until SIGTERM or SIGINT and the
// layer is released. Returns the exit code. Call before any other thread
// exists (it blocks signals for the whole process).
int ServeVerifiedLayer(const VerifiedLayerArgs& args, int status_fd);

}  // namespace evs::snapshot
