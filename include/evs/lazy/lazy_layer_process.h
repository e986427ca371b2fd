// A lazy layer served by a process of its own, so that it outlives the
// daemon: a daemon restart, upgrade or crash leaves the layers under
// running containers readable — cached blocks and misses alike, and the
// background fetch goes on (the complaint users of stargz, nydus and SOCI
// have most, reference/remote-snapshotters.md §4.1). The same pattern as
// snapshot/verified_layer_process.h for local layers: the daemon starts
// `containerd-evs-grpc serve-lazy-layer …` (LazyLayerArgv), reads one
// status line, records the pid, adopts the process after a restart, and
// stops it with SIGTERM when the layer is no longer needed.
//
// The process has its own RegistryClient (credentials from the Docker
// config at docker_config — the daemon passes its own — mirrors from
// hosts_dir; expired tokens are fetched again as usual) and, unless
// disabled, its own BackgroundFetcher: the background bandwidth and
// concurrency limits are then per layer, not per daemon (docs/lazy.md,
// "Limits").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/lazy/lazy_block_source.h"

namespace evs::lazy {

inline constexpr const char* kServeLazyLayerCommand = "serve-lazy-layer";

struct LazyLayerArgs {
  RemoteLayer layer;      // repository ("host/repo"), digest, size, verity parameters
  std::string cache_dir;  // <root>/cache/<hex>
  std::string target;     // the EROFS mount point
  std::string hosts_dir;  // containerd's certs.d; empty for none
  // Registry credentials (registry::DockerConfigCredentials::Load): a
  // Docker config.json; empty for the default ($DOCKER_CONFIG, then
  // ~/.docker/config.json, in the process's environment). Read once, when
  // the process starts.
  std::string docker_config;
  // Where the layer processes of one daemon coordinate their fetches
  // (lazy/foreground_activity.h: a miss in any layer pauses every layer's
  // background fetch; background fetches are limited per node). Empty:
  // this process alone.
  std::string node_dir;
  uint32_t fetch_size = 0;            // 0: LazyFetchOptions' default
  uint64_t background_bandwidth = 0;  // bytes/s; 0: BackgroundFetchOptions' default
  bool background = true;             // complete the layer in the background
};

// The arguments after the program name: {"serve-lazy-layer", repository,
// digest, size, root_digest, hash_offset, block_size, cache_dir, target,
// hosts_dir or "-", docker_config or "-", node_dir or "-", fetch_size,
// background_bandwidth,
// "background" or "no-background"}.
std::vector<std::string> LazyLayerArgv(const LazyLayerArgs& args);
// Parses what LazyLayerArgv made (argv[0] is the command word).
// InvalidArgument naming the bad field.
Result<LazyLayerArgs> ParseLazyLayerArgv(const std::vector<std::string>& argv);

// The process's main: attaches the layer (LazyLayer::Attach), writes
// "ok\n" (or "error: <message>\n") to `status_fd` and closes it, then serves
// until SIGTERM or SIGINT and the layer is released — while a container
// still reads it, it keeps serving and retries every second (a second
// SIGINT gives up). Runs in a session of its own, so signals for the
// daemon's process group do not reach it. Returns the exit code. Call
// before any other thread exists (it blocks signals for the process).
int ServeLazyLayer(const LazyLayerArgs& args, int status_fd);

}  // namespace evs::lazy
