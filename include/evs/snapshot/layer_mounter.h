// LayerMounter: mounts committed layer images read-only at m/<layer id>
// (DESIGN.md §3, §5, §6) and owns those mounts.
//
// How an image is mounted is decided once, when the mounter is created:
// - backing: file-backed EROFS (Linux ≥ 6.12) or a read-only loop device,
//   found by mounting a probe image once, not by failing and retrying on
//   every mount (containerd issue #13121);
// - verification (DESIGN.md §5): `kernel` (dm-verity), `userspace` (EROFS
//   over a FUSE file that checks every block against the tree), or `off`
//   (only when configured). `auto` picks kernel, then userspace, and never
//   falls to off by itself.
// A mount point directory exists only while its layer is mounted, so a stale
// lowerdir naming it fails loudly (ENOENT) instead of showing an empty layer.
//
// Not thread-safe: the snapshotter serialises calls — except StartLazy,
// which may run alongside any other call (see there).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/mount.h"
#include "evs/common/status.h"
#include "evs/snapshot/metadata_store.h"

namespace evs::lazy {
struct LazyLayerArgs;
}  // namespace evs::lazy

namespace evs::verity {
class DeviceMapper;
class DmVerityDevices;
class DmVerityErofsMount;
class VerifiedErofsMount;
}  // namespace evs::verity

namespace evs::snapshot {

enum class VerityMode { kAuto, kKernel, kUserspace, kOff };
// "auto", "kernel", "userspace", "off"; anything else is InvalidArgument.
Result<VerityMode> ParseVerityMode(std::string_view text);
std::string_view VerityModeName(VerityMode mode);

enum class BackingMode { kFile, kLoop };
std::string_view BackingModeName(BackingMode mode);

struct LayerMounterOptions {
  std::string mount_dir;    // <root>/m
  std::string scratch_dir;  // where the probe mount point is made
  VerityMode verity = VerityMode::kAuto;
  // Userspace mode: FUSE threads per layer (each layer is its own FUSE
  // file; two keep a local disk busy without a thread pile-up at 100+
  // layers).
  int userspace_threads = 2;
  // Userspace mode: when set, each layer is served by a process of its own
  // started as `verifier_command… serve-verified-layer …`
  // (verified_layer_process.h), which outlives a daemon restart; a new
  // daemon adopts the layers such processes still serve. Empty: served by
  // threads of this process (tests), ending with it.
  std::vector<std::string> verifier_command;
};

class LayerMounter {
 private:
  struct Mounted;  // one mounted layer (below)

 public:
  // Resolves the verification mode and probes the backing by mounting
  // `probe_image` (any small valid EROFS image) once. Fails with
  // FailedPrecondition naming the mode when the requested verification is
  // not available here (e.g. `kernel` without /dev/mapper/control).
  static Result<std::unique_ptr<LayerMounter>> Create(const LayerMounterOptions& options,
                                                      const std::string& probe_image);
  ~LayerMounter();

  VerityMode verity() const { return verity_; }
  BackingMode backing() const { return backing_; }

  // m/<id>: short on purpose, so that 128 lowerdirs fit the kernel's
  // 4096-byte mount option limit.
  std::string MountPath(int64_t layer_id) const;
  // m/<id>.verity: in userspace mode, the FUSE file serving the verified
  // bytes of the layer file, which EROFS is mounted from.
  std::string VerifiedFilePath(int64_t layer_id) const;

  // Mounts `image_path` (the layer `layer`) read-only at MountPath(layer.id)
  // unless this mounter already did and the mount still works (a layer
  // whose verifier process died is mounted again). Errors name the layer
  // digest and path. Costs one mount(2) (plus a loop device or verification
  // setup); nothing when already mounted.
  Status Mount(const LayerRecord& layer, const std::string& image_path);
  // Mounts a lazy layer (DESIGN.md §1 "lazy") read-only at
  // MountPath(layer.id): EROFS over a FUSE file whose missing blocks are
  // fetched from the registry and verified against the tree
  // (lazy/lazy_layer.h), served by a `serve-lazy-layer` process of its own
  // (lazy/lazy_layer_process.h) that outlives a daemon restart and is
  // adopted by the next daemon, as verifier processes are. Whatever the
  // verity mode, every block is verified. Needs the verifier command
  // (Unimplemented without). Like Mount(), nothing when already mounted and
  // working. Blocks for the hash tree fetch when the cache lacks it; errors
  // (the registry's, DataLoss for a tree that does not match) name the
  // layer.
  //
  // `complete`: the layer's cache holds all of it, verified (lazy::
  // LazyLayer::IsComplete); this is its record with the salt from the
  // file's verity superblock. Unless its lazy process still serves it
  // (mounted, or adopted after a restart: running containers read through
  // it), it is then mounted from the cache file with Mount(), like a local
  // layer: no registry, no lazy process, and per the verity mode (kernel:
  // dm-verity, no FUSE).
  Status MountLazy(const LayerRecord& layer, const lazy::LazyLayerArgs& args,
                   const LayerRecord* complete = nullptr);

  // A lazy layer mounted by StartLazy and not yet handed to the mounter.
  // Destroying it undoes the mount: the layer's process is stopped (it
  // unmounts) and the mount point and pid file are removed.
  class PendingMount {
   public:
    PendingMount(PendingMount&&) noexcept;
    PendingMount& operator=(PendingMount&&) noexcept;
    ~PendingMount();
    int64_t layer_id() const { return layer_id_; }

   private:
    friend class LayerMounter;
    PendingMount();
    void Undo();
    int64_t layer_id_ = 0;
    std::string pid_file_;
    std::unique_ptr<Mounted> mounted_;
  };
  // MountLazy's slow part — starting the layer's process, which fetches
  // and checks the hash tree and mounts the layer at MountPath(layer.id) —
  // for a layer id nothing else mounts or adopts (a layer row inserted
  // just now): it touches no state of the mounter, so the caller may run
  // it without serialising it with other calls, as long as RemoveStale is
  // told the id is busy meanwhile. Install() finishes it. Errors as for
  // MountLazy; nothing stays mounted on error.
  Result<PendingMount> StartLazy(const LayerRecord& layer, const lazy::LazyLayerArgs& args) const;
  // Takes over a mount StartLazy made (serialised like every other call).
  void Install(PendingMount pending);

  bool IsMounted(int64_t layer_id) const { return mounts_.count(layer_id) != 0; }
  size_t mounted() const { return mounts_.size(); }
  // Unmounts and removes the mount point; not mounted is OK. A running
  // container is not affected: overlayfs holds its own private clones of its
  // lower layers' mounts.
  Status Unmount(int64_t layer_id);
  // Unmounts everything this mounter mounted; returns the first error after
  // trying all.
  Status UnmountAll();

  // Shutdown: unmounts the layers no other mount uses and leaves the others
  // in place (forgetting them). A layer is in use when another mount in
  // this mount namespace shares its device (a bind of it) or is an overlay
  // naming its mount point in lowerdir. (containerd shortens a lowerdir
  // option longer than ~3.5 KiB to paths relative to their common parent;
  // those cannot be attributed and count as unused. Unmounting such a layer
  // does not disturb the overlay: it holds private clones of its lower
  // mounts.) Costs one read of /proc/self/mountinfo. Returns how many were
  // left.
  Result<int> ReleaseForShutdown();

  // Unmounts and removes whatever is under mount_dir and not mounted by
  // this mounter (left by a previous daemon that crashed), except what
  // belongs to the layers in `busy` (StartLazy in progress). Returns how
  // many entries it removed.
  Result<int> RemoveStale(const std::set<int64_t>& busy = {});

 private:
  LayerMounter();
  // One mounted layer: exactly one of the three owners is set.
  struct Mounted {
    Mounted();
    Mounted(Mounted&&) noexcept;
    Mounted& operator=(Mounted&&) noexcept;
    ~Mounted();
    Status Unmount();
    void Release();    // leaves the mounts in place and forgets them
    MountPoint plain;  // off
    std::unique_ptr<verity::VerifiedErofsMount> fuse;    // userspace
    std::unique_ptr<verity::DmVerityErofsMount> kernel;  // kernel
    std::string target;
    std::string device;  // "major:minor" of the mounted EROFS
    // Userspace mode with a verifier process: its pid and a pidfd to wait
    // for its exit (it may not be our child: adopted after a restart).
    pid_t verifier = -1;
    UniqueFd verifier_fd;
  };
  Status MountWithVerifierProcess(const LayerRecord& layer, const std::string& image_path,
                                  uint64_t hash_offset, const Digest& root, Mounted* mounted);
  // Starts `verifier_command… args…`, records its pid in
  // PidFilePath(layer_id) (at once, so that a daemon that dies meanwhile
  // leaves a process the next one can find and stop) and reads its status
  // line from fd 3.
  Status StartServer(int64_t layer_id, const std::vector<std::string>& args,
                     Mounted* mounted) const;
  // True (and `mounted` filled) when mounts_ holds a working mount of the
  // layer; a mount whose serving process died is forgotten.
  bool StillMounted(const LayerRecord& layer);
  // Takes over m/<id> when a live process from an earlier daemon (command
  // word `command`, FUSE file `fuse_file`) still serves it; false when there
  // is nothing to adopt.
  bool Adopt(int64_t layer_id, std::string_view command, const std::string& fuse_file,
             Mounted* mounted);
  // Unmounts whatever an earlier daemon left at m/<id> and m/<id>.verity.
  Status ClearStale(int64_t layer_id);
  std::string PidFilePath(int64_t layer_id) const;
  std::set<int64_t> LayersInUse() const;
  std::string mount_dir_;
  VerityMode verity_ = VerityMode::kOff;
  BackingMode backing_ = BackingMode::kFile;
  int threads_ = 2;
  std::vector<std::string> verifier_command_;
  std::map<int64_t, Mounted> mounts_;
  std::unique_ptr<verity::DeviceMapper> dm_;
  std::unique_ptr<verity::DmVerityDevices> dm_devices_;
};

}  // namespace evs::snapshot
