// evs-verify-layer: serves one layer in userspace verification mode
// (evs/snapshot/verified_layer_process.h). containerd-evs-grpc starts one per
// mounted layer; it is a program of its own, linked without gRPC, so that
// starting it costs a couple of milliseconds rather than the daemon's
// dynamic linking (it runs once per layer a pull commits).
//
//   evs-verify-layer serve-verified-layer LAYER_FILE HASH_OFFSET ROOT_DIGEST
//       FUSE_FILE TARGET NAME THREADS        (status line on fd 3)
#include <cstdio>
#include <string>
#include <vector>

#include "evs/snapshot/verified_layer_process.h"

int main(int argc, char** argv) {
  auto args =
      evs::snapshot::ParseVerifiedLayerArgv(std::vector<std::string>(argv + 1, argv + argc));
  if (!args.ok()) {
    std::fprintf(stderr, "evs-verify-layer: %s\n", args.status().message().c_str());
    return 2;
  }
  return evs::snapshot::ServeVerifiedLayer(*args, 3);
}
