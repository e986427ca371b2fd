// What the daemon's `serve-lazy-layer` subcommand does, as a program of its
// own for lazy_layer_process_test: lazy_layer_server STATUS_FD ARGS…
// (ARGS as LazyLayerArgv makes them).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "evs/lazy/lazy_layer_process.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s STATUS_FD serve-lazy-layer ARGS...\n", argv[0]);
    return 2;
  }
  const int status_fd = std::atoi(argv[1]);
  std::vector<std::string> args(argv + 2, argv + argc);
  auto parsed = evs::lazy::ParseLazyLayerArgv(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "%s\n", parsed.status().ToString().c_str());
    return 2;
  }
  return evs::lazy::ServeLazyLayer(*parsed, status_fd);
}
