// LazyLayer: one lazily loaded layer, mounted — what the snapshotter's
// Prepare sets up for a layer of media type application/vnd.erofs.layer.v1
// (DESIGN.md §1 "lazy"; docs/lazy.md shows the few lines that wire it in).
//
//   registry ──ranged GETs──► LazyBlockSource ──► VerifiedBlockFile ──► EROFS
//                             (cache/<digest>/)    (FUSE file,          mount at
//                                                   verifies blocks)    `target`
//
// Attach fetches and checks the hash tree, then mounts EROFS over the FUSE
// file; the container can start at once. Blocks arrive on demand, each one
// verified, and a BackgroundFetcher completes the layer; a completed layer
// is a verified layer.erofs in the cache directory that the snapshotter can
// mount like any local layer, with no network and no FUSE (IsComplete,
// layer_file()).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "evs/common/cancellation.h"
#include "evs/common/status.h"
#include "evs/lazy/background_fetcher.h"
#include "evs/lazy/lazy_block_source.h"
#include "evs/registry/client.h"
#include "evs/verity/verified_block_file.h"

namespace evs::lazy {

struct LazyLayerOptions {
  LazyFetchOptions fetch;
  // FUSE worker threads. Misses do not hold them: a read the cache cannot
  // answer goes to the FUSE file's miss threads (fuse.miss_threads), so
  // cached reads never wait behind the network. Not more: every request
  // wakes every worker (VerifiedBlockFile polls one descriptor from all of
  // them), and on this 2-core machine 16 threads cut the read throughput of
  // a fully fetched layer to 0.7-0.9 × a local mount, where 8 give 1.06
  // (bench/lazy; docs/requests.md asks for exclusive wake-ups).
  int fuse_threads = 8;
  // The rest of the FUSE file's options (max_read, direct_io, tree cache).
  verity::VerifiedBlockFileOptions fuse;
  // Extra EROFS mount options.
  std::string erofs_options;
  // Not owned; must outlive the layer. Null: no background completion (the
  // layer fills only as it is read, or through FetchAll()).
  BackgroundFetcher* background = nullptr;
  // Runs (on a background worker) when the layer has been fetched
  // completely and verified, or with the error of the final verification.
  std::function<void(const Status&)> on_complete;
  // How often the fetched-block bitmap is made durable (also at Detach).
  // After a crash at most this much of fetching is repeated.
  std::chrono::milliseconds flush_interval{5'000};
};

class LazyLayer {
 public:
  // Mounts `layer` read-only at `target` (an existing, empty directory that
  // is not a mount point) with its cache in `cache_dir` (created if needed;
  // by convention <root>/cache/<digest hex>). `client` must outlive the
  // layer.
  //
  // - Cache complete (IsComplete): mounts from the local file, verified per
  //   block; no network at all.
  // - Otherwise the tree region comes from the cache if it is there and
  //   matches the root digest (no network either: a re-attach after a
  //   restart works with the registry down), else from one ranged GET.
  //
  // Errors: DataLoss when the tree does not match the root digest (the
  // mount is refused: nothing is mounted and nothing of the tree is kept as
  // trusted); FailedPrecondition when another LazyLayer has the cache
  // directory or `target` is already a mount point; Unavailable / NotFound
  // / Unauthenticated from the registry when the tree had to be fetched;
  // Internal for mount failures (no /dev/fuse, no file-backed EROFS). On
  // any error nothing stays mounted. Needs root. Blocks for the tree fetch.
  static Result<std::unique_ptr<LazyLayer>> Attach(registry::RegistryClient* client,
                                                   const RemoteLayer& layer,
                                                   const std::string& cache_dir,
                                                   const std::string& target,
                                                   LazyLayerOptions options = {});
  // Detach(); if the mount is busy it is detached lazily (MNT_DETACH) and
  // its FUSE connection ends: remaining readers get EIO for blocks not yet
  // in their page cache (docs/lazy.md, "Restarts").
  ~LazyLayer();
  LazyLayer(const LazyLayer&) = delete;
  LazyLayer& operator=(const LazyLayer&) = delete;

  // Unmounts EROFS and the FUSE file, stops background work for the layer,
  // makes the bitmap durable and releases the cache directory, which stays
  // for a later Attach. FailedPrecondition (and the layer stays attached
  // and working) while the mount is busy. Idempotent.
  Status Detach();
  // Detach(), then deletes the cache directory: the disk the layer used is
  // released.
  Status Remove();

  // Fetches every missing block now, in the caller's thread, 8 MiB per
  // request (a reader missing a block elsewhere sends its own request; one
  // missing a block of the range in flight waits for it), verifies the
  // whole file and marks the layer complete. For `evs` commands, tests and
  // benchmarks; the daemon relies on the BackgroundFetcher. Stops early
  // with the cancellation's status.
  Status FetchAll(const Cancellation* cancel = nullptr);

  const std::string& target() const { return target_; }
  const std::string& cache_dir() const { return cache_dir_; }
  // The layer file (complete or not): <cache_dir>/layer.erofs.
  std::string layer_file() const;
  // True once every block is fetched and the file verified (now or at
  // attach).
  bool complete() const;
  // True when the layer was attached from a complete cache (no network).
  bool local() const { return source_ == nullptr; }

  struct Stats {
    LazyBlockSource::Stats source;  // zero for a layer attached from a complete cache
    verity::VerifiedBlockFile::Stats file;
    bool complete = false;
  };
  Stats stats() const;

  // True when `cache_dir` holds a complete, verified layer for `root`
  // (reads one small file). Its layer.erofs can then be mounted like any
  // local layer (LayerMounter, dm-verity) with no FUSE in the way.
  static bool IsComplete(const std::string& cache_dir, const Digest& root);
  // Path of the layer file in a cache directory.
  static std::string LayerFile(const std::string& cache_dir);
  // Deletes a cache directory no LazyLayer has attached (Cleanup of layers
  // whose snapshots are gone). FailedPrecondition while one has.
  static Status RemoveCache(const std::string& cache_dir);

 private:
  LazyLayer() = default;
  void StartFlusher();
  void StopFlusher();

  std::string cache_dir_;
  std::string target_;
  LazyLayerOptions options_;
  std::unique_ptr<LayerCache> local_cache_;  // attached from a complete cache: holds its lock
  std::shared_ptr<LazyBlockSource> source_;  // otherwise
  std::unique_ptr<verity::VerifiedErofsMount> mount_;
  bool attached_ = false;

  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  bool flush_stop_ = false;
  std::thread flusher_;
};

}  // namespace evs::lazy
