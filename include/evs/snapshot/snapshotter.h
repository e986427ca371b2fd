// Snapshotter: containerd's snapshotter semantics over EROFS layers
// (DESIGN.md §1, §3, §6; containerd snapshots/snapshotter.go for the
// contract, snapshots/overlay/overlay.go and snapshots/storage/bolt.go for
// the exact behaviour this follows).
//
// Layout under the root (DESIGN.md §3):
//   metadata.db              snapshots, labels, layers (MetadataStore)
//   snapshots/<id>/fs, work  active and view snapshots
//   layers/sha256/<hex>/     committed layer images (LayerStore)
//   m/<layer id>/            their read-only mounts (LayerMounter)
//
// Every mutation follows one pattern: validate, build the new files under a
// temporary name, open one metadata transaction, record, rename into place,
// commit; whatever was half-made is removed if a step fails. On Open the
// snapshotter reconciles metadata with disk and logs what it did.
//
// Thread-safe. Metadata operations are serialised; the expensive parts run
// outside the lock — Commit's conversion of a directory into an image, a
// convert-on-pull download, a lazy layer's attach (its tree fetch) — so
// they run in parallel and other calls do not wait for them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/lazy/annotations.h"
#include "evs/lazy/lazy_layer_process.h"
#include "evs/snapshot/layer_mounter.h"
#include "evs/snapshot/layer_store.h"
#include "evs/snapshot/metadata_store.h"
#include "evs/snapshot/types.h"

namespace evs::snapshot {

// The label containerd puts on a Prepare during an unpacking pull, naming
// the chain ID the layer will be committed as (reference/
// remote-snapshotters.md §1 "How a remote snapshot is prepared").
inline constexpr const char* kTargetRefLabel = "containerd.io/snapshot.ref";

// What Prepare asks a RemoteLayerSource for.
struct RemoteLayerRequest {
  std::string key;     // the Prepare key
  std::string parent;  // name of the committed parent, "" for none
  // The kTargetRefLabel value: the chain ID containerd will look the layer
  // up by (reference/remote-snapshotters.md §1).
  std::string target;
  Labels labels;  // all of Prepare's labels
  // Polled while the request waits; true once the caller has gone away
  // (containerd cancelled the pull). May be empty.
  std::function<bool()> abandoned;
};

// A layer evs can obtain by itself instead of containerd unpacking it
// (convert-on-pull, lazy; DESIGN.md §1). Prepare consults it when the labels
// carry kTargetRefLabel; on success the snapshotter commits the layer under
// that name and Prepare returns AlreadyExists, so containerd skips download
// and unpack. Implementations must be thread-safe.
class RemoteLayerSource {
 public:
  virtual ~RemoteLayerSource() = default;
  // Returns the layer `request` names: staged in `store`'s staging area, or
  // — when the source finds it stored already — a StagedLayer holding only
  // its record's digest (and diff_id when known). Concurrent requests for
  // one layer may get the same object: the snapshotter installs it under
  // its lock, so the first install publishes it and the others find it
  // stored. Any error makes Prepare fall back to an ordinary active
  // snapshot (the snapshotter logs the reason). May block on the network.
  virtual Result<std::shared_ptr<StagedLayer>> Fetch(LayerStore& store,
                                                     const RemoteLayerRequest& request) = 0;
};

struct SnapshotterOptions {
  // Everything lives here; created 0700 if missing.
  std::string root = "/var/lib/containerd-evs";
  // Layer verification (DESIGN.md §5).
  VerityMode verity = VerityMode::kAuto;
  // Optional; not owned; must outlive the snapshotter.
  RemoteLayerSource* remote = nullptr;
  // A remote layer is committed under the chain ID containerd asks for only
  // if its diffID (from its record) chained onto the parent's chain ID gives
  // that chain ID: otherwise a hostile image config, or labels naming
  // another blob, could plant any content under the chain ID of a layer
  // other images share (containerd's unpacker checks the diffID for the
  // same reason). false: trust the source (layers without a diffID).
  bool verify_remote_chain = true;
  // Lazy layers (DESIGN.md §1 "lazy"): a Prepare whose labels carry the
  // dm-verity parameters `evs image convert` puts on a layer
  // (containerd.io/snapshot/evs.org.erofs.dmverity.*) is answered by
  // mounting the layer at once and fetching its blocks on demand, each
  // verified (lazy/lazy_layer.h); it is served by a process of its own
  // (verifier_command … serve-lazy-layer) that survives daemon restarts.
  // Needs verifier_command. Consulted before `remote`.
  bool lazy = true;
  // Given to the lazy layers' processes: containerd's registry hosts
  // directory ("" for none), and the Docker config.json with the registry
  // credentials ("" for the default: $DOCKER_CONFIG, ~/.docker).
  std::string registry_hosts_dir;
  std::string docker_config;
  // Lazy layers complete themselves in the background (lazy/
  // background_fetcher.h); false fetches only what is read.
  bool lazy_background = true;
  // Userspace verification: serve each layer from a process of its own,
  // started as this command followed by `serve-verified-layer …`, so layers
  // under running containers survive a daemon restart (LayerMounterOptions).
  // The daemon sets {"/proc/self/exe"}; empty serves from this process.
  std::vector<std::string> verifier_command;
};

class Snapshotter {
 public:
  // Opens the root (taking an exclusive lock on <root>/lock, so two daemons
  // never share one), migrates metadata, probes how layers mount, and
  // reconciles: removes staging leftovers, directories and layers no
  // committed metadata names, and stale mounts; remounts committed layers.
  // Fails with FailedPrecondition when another process holds the root.
  static Result<std::unique_ptr<Snapshotter>> Open(const SnapshotterOptions& options);
  ~Snapshotter();

  // Creates an active snapshot `key` on top of the committed `parent` (""
  // for none) and returns the mounts for its writable root. Errors:
  // AlreadyExists (key taken), NotFound (no parent), InvalidArgument (parent
  // not committed, empty key, a label over 4096 bytes).
  //
  // With a RemoteLayerSource and kTargetRefLabel among the labels, evs
  // first tries to produce the layer itself: on success it commits it under
  // the target (or, when a snapshot of that name with another parent
  // exists, under `key`), labelled like the request, and returns
  // AlreadyExists; containerd then finds it by label and parent
  // (metadata/snapshot.go createSnapshot). On any failure it logs the
  // reason and creates the active snapshot as above. `abandoned` is polled
  // while a remote layer is awaited.
  Result<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                     const Labels& labels,
                                     std::function<bool()> abandoned = nullptr);
  // Like Prepare, for a read-only view.
  Result<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                  const Labels& labels);
  // The mounts of an active or view snapshot. NotFound, or
  // FailedPrecondition for a committed one.
  Result<std::vector<Mount>> Mounts(const std::string& key);
  // Turns active snapshot `key` into committed `name`: its upper directory
  // becomes layer.erofs with its verity tree (stored once per content),
  // which is mounted read-only; then the directory is removed. Labels
  // replace the active snapshot's. Errors: AlreadyExists (name taken),
  // NotFound (no key), FailedPrecondition (not active, or a commit of it is
  // in progress). Costs a read of the whole upper directory.
  Status Commit(const std::string& name, const std::string& key, const Labels& labels);
  // Removes a snapshot and, once nothing references them, its directory and
  // layer. NotFound, or FailedPrecondition when it has children.
  Status Remove(const std::string& key);
  Result<Info> Stat(const std::string& key);
  // Updates labels: `fieldpaths` "labels" (replace all) or "labels.<key>"
  // (one label; an empty or absent value removes it); none means all
  // mutable fields. Any other path is InvalidArgument.
  Result<Info> Update(const Info& info, const std::vector<std::string>& fieldpaths);
  // Active: measured now from the upper directory (O(files)). Committed: the
  // layer file's allocated bytes and its inode count — for a lazy layer,
  // measured now: the bytes its cache file holds so far (it grows as blocks
  // arrive, up to the layer's size) and the inodes of its mounted EROFS
  // image (0 while it is not mounted). View: zero.
  Result<Usage> GetUsage(const std::string& key);
  // Snapshots matching any of `filters` (filter.h); InvalidArgument on a
  // syntax error.
  Result<std::vector<Info>> List(const std::vector<std::string>& filters);
  // Removes directories, layers and mounts that nothing references.
  Status Cleanup();
  // Shutdown: unmounts every layer mount that no other mount uses (a layer
  // under a running container's overlay is left in place) and releases the
  // root lock. Further calls fail with Unavailable.
  Status Close();

  // Figures for monitoring (the daemon's Prometheus endpoint). Costs one
  // pass over the metadata.
  struct Stats {
    int64_t active = 0, views = 0, committed = 0;  // snapshots by kind
    int64_t layers = 0;                            // layer images stored
    int64_t layer_bytes = 0;                       // their allocated bytes (lazy: cached so far)
    int64_t layers_mounted = 0;
    int64_t commits = 0;           // since start
    int64_t layers_shared = 0;     // commits that found their layer stored
    double convert_seconds = 0;    // time spent building layer images
    int64_t remote_committed = 0;  // Prepares answered with a layer evs obtained
    int64_t remote_fallbacks = 0;  // Prepares that fell back to unpacking
  };
  Result<Stats> GetStats();

  const std::string& root() const { return options_.root; }
  VerityMode verity() const;
  BackingMode backing() const;

 private:
  explicit Snapshotter(SnapshotterOptions options) : options_(std::move(options)) {}
  struct ReconcileReport;

  // The remote path of Prepare: AlreadyExists when the layer is committed
  // (now or before); any other status is the reason to fall back.
  Status PrepareRemote(const std::string& key, const std::string& parent, const Labels& labels,
                       std::function<bool()> abandoned);
  // Commits a fetched remote layer (under mu_).
  Status CommitRemote(const RemoteLayerRequest& request, StagedLayer* staged);
  // The lazy path of PrepareRemote. Takes mu_ itself: a layer not stored
  // yet is reserved (its row inserted, so that it has its mount point
  // m/<id>) under the lock, attached outside it, and committed under it
  // again; a request for a layer another request is attaching waits for
  // that attach.
  Status PrepareLazy(const RemoteLayerRequest& request, const lazy::RemoteLayer& remote);
  // Records a committed snapshot holding the stored lazy layer `layer`
  // under `txn` (under mu_); AlreadyExists on success, like CommitRemote.
  Status CommitLazy(const RemoteLayerRequest& request, const LayerRecord& layer,
                    std::unique_ptr<MetadataStore::Transaction> txn);
  // The record to mount a lazy layer with from its cache file when the
  // cache is complete and verified (its salt read from the file); nullopt
  // otherwise.
  std::optional<LayerRecord> CompleteLazyLayer(const LayerRecord& layer,
                                               const std::string& cache_dir) const;
  // What the layer's process needs to fetch and verify a lazy layer.
  Result<lazy::LazyLayerArgs> LazyArgsFor(const LayerRecord& layer) const;
  // The name to commit a remote layer under and its parent record; the
  // AlreadyExists answer when an equivalent snapshot exists (Reusable).
  Status NameRemote(const RemoteLayerRequest& request, std::string* name,
                    std::optional<SnapshotRecord>* parent);
  // Whether committed snapshot `existing` can answer `request`: same parent,
  // and its content is trusted for it — a layer stored in full was checked
  // against its chain ID; a lazy one only against its labels, so it answers
  // only requests naming the same blob and tree.
  Result<bool> Reusable(const SnapshotRecord& existing, const RemoteLayerRequest& request);
  // Mounts a stored or lazy layer (idempotent).
  Status MountLayer(const LayerRecord& layer);
  // Deletes what a layer's row named: its mount and its file (layers/…, or
  // a lazy layer's cache).
  Status RemoveLayerFiles(const LayerRecord& layer);
  std::string CacheDir(const std::string& digest) const;
  Result<std::vector<Mount>> CreateSnapshot(Kind kind, const std::string& key,
                                            const std::string& parent, const Labels& labels);
  // Installs a staged layer under an open transaction: reuses an identical
  // stored layer or publishes, records and mounts this one. `published` is
  // set when a new directory was published (to undo it if the transaction
  // fails).
  Result<LayerRecord> InstallLayer(StagedLayer* staged, bool* published);
  Status UndoInstall(const LayerRecord& layer);
  Result<std::vector<std::string>> MountedLowers(int64_t parent_id);
  Result<std::vector<Mount>> MountsFor(const SnapshotRecord& record);
  Status CheckOpen() const;
  Status Reconcile(bool at_start);

  std::string SnapshotDir(int64_t id) const;

  SnapshotterOptions options_;
  std::mutex mu_;
  bool closed_ = false;
  int lock_fd_ = -1;
  bool overlay_index_off_ = true;
  std::unique_ptr<MetadataStore> store_;
  std::unique_ptr<LayerStore> layers_;
  std::unique_ptr<LayerMounter> mounter_;
  std::set<int64_t> committing_;  // active snapshot ids being converted
  // Lazy layers reserved and being attached outside the lock (PrepareLazy):
  // their rows have no snapshot yet, but Cleanup must not take them.
  std::set<int64_t> attaching_;
  std::condition_variable attach_done_;  // with mu_: an attach ended
  int64_t commits_ = 0;
  int64_t layers_shared_ = 0;
  double convert_seconds_ = 0;
  int64_t remote_committed_ = 0;
  int64_t remote_fallbacks_ = 0;
};

}  // namespace evs::snapshot
