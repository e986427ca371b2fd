// evs-verify-layer: serves one layer in userspace verification mode
// (evs/snapshot/verified_layer_process.h), or one lazy layer
// (evs/lazy/lazy_layer_process.h). containerd-evs-grpc starts one per
// mounted layer; it is a program of its own, linked without gRPC, so that
// starting it costs a couple of milliseconds rather than the daemon's
// dynamic linking (it runs once per layer a pull commits).
//
//   evs-verify-layer serve-verified-layer LAYER_FILE HASH_OFFSET ROOT_DIGEST
//       FUSE_FILE TARGET NAME THREADS        (status line on fd 3)
//   evs-verify-layer serve-lazy-layer …      (lazy/lazy_layer_process.h)
#include <cstdio>
#include <string>
#include <vector>

#include "evs/lazy/lazy_layer_process.h"
#include "evs/snapshot/verified_layer_process.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == evs::lazy::kServeLazyLayerCommand) {
    auto args = evs::lazy::ParseLazyLayerArgv(std::vector<std::string>(argv + 1, argv + argc));
    if (!args.ok()) {
      std::fprintf(stderr, "evs-verify-layer: %s\n", args.status().message().c_str());
      return 2;
    }
    return evs::lazy::ServeLazyLayer(*args, 3);
  }
  auto args =
      evs::snapshot::ParseVerifiedLayerArgv(std::vector<std::string>(argv + 1, argv + argc));
  if (!args.ok()) {
    std::fprintf(stderr, "evs-verify-layer: %s\n", args.status().message().c_str());
    return 2;
  }
  return evs::snapshot::ServeVerifiedLayer(*args, 3);
}
