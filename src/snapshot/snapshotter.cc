#include "evs/snapshot/snapshotter.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <optional>

#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/lazy/lazy_layer.h"
#include "evs/lazy/lazy_layer_process.h"
#include "evs/oci/chain_id.h"
#include "evs/oci/media_types.h"
#include "evs/snapshot/filter.h"
#include "evs/snapshot/mounts.h"
#include "evs/verity/format.h"

namespace evs::snapshot {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// Removes a directory tree when destroyed unless dismissed: the deferred
// clean-up of a half-made snapshot directory (overlay.go createSnapshot).
class DirGuard {
 public:
  explicit DirGuard(std::string path) : path_(std::move(path)) {}
  ~DirGuard() {
    if (path_.empty()) return;
    Status s = RemoveTree(path_);
    if (!s.ok()) {
      EVS_LOG(kWarning) << "clean-up failed" << Kv("error", s.ToString());
    }
  }
  void Move(std::string path) { path_ = std::move(path); }
  void Dismiss() { path_.clear(); }

 private:
  std::string path_;
};

Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) return ErrnoError(errno, StrCat("mkdir ", path));
  // mkdir(2) applies the umask; the root of a snapshot must be exactly 0755
  // (containerd's testsuite checks it), whatever umask the daemon has.
  if (::chmod(path.c_str(), mode) != 0) return ErrnoError(errno, StrCat("chmod ", path));
  return OkStatus();
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

// What a lazy layer uses now: the blocks its cache file holds (a sparse
// file filled as blocks arrive: its allocated bytes, not its size) and the
// inode count of its EROFS image, which the kernel reports for the mount
// (fs/erofs/super.c erofs_statfs: f_ffree = ULLONG_MAX - inodes). A file
// or mount not there counts 0.
Usage LazyLayerUsage(const std::string& cache_file, const std::string& mount) {
  Usage u;
  struct stat st;
  if (::stat(cache_file.c_str(), &st) == 0) u.size = static_cast<int64_t>(st.st_blocks) * 512;
  struct statfs fs;
  if (!mount.empty() && ::statfs(mount.c_str(), &fs) == 0 && fs.f_type == EROFS_SUPER_MAGIC_V1 &&
      fs.f_files >= fs.f_ffree) {
    u.inodes = static_cast<int64_t>(fs.f_files - fs.f_ffree);
  }
  return u;
}

std::optional<int64_t> ParseId(const std::string& name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::strtoll(name.c_str(), nullptr, 10);
}

}  // namespace

struct Snapshotter::ReconcileReport {
  int snapshot_dirs_removed = 0;
  int layer_dirs_removed = 0;
  int layers_removed = 0;
  int staging_removed = 0;
  int stale_mounts_removed = 0;
  int layers_mounted = 0;
  int layers_missing = 0;
  int snapshots_missing_dirs = 0;
  int caches_removed = 0;
};

Result<std::unique_ptr<Snapshotter>> Snapshotter::Open(const SnapshotterOptions& options) {
  auto start = std::chrono::steady_clock::now();
  if (options.root.empty() || options.root[0] != '/') {
    return InvalidArgumentError("root \"", options.root, "\" must be an absolute path");
  }
  std::unique_ptr<Snapshotter> s(new Snapshotter(options));
  const std::string& root = s->options_.root;
  EVS_RETURN_IF_ERROR(MakeDirs(root, 0700));

  std::string lock_path = JoinPath(root, "lock");
  s->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd_ < 0) return ErrnoError(errno, StrCat("open ", lock_path));
  if (::flock(s->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return FailedPreconditionError("root ", root, " is in use by another containerd-evs-grpc (",
                                   lock_path, " is locked)");
  }

  EVS_RETURN_IF_ERROR(MakeDirs(JoinPath(root, "snapshots"), 0700));
  EVS_ASSIGN_OR_RETURN(s->store_, MetadataStore::Open(JoinPath(root, "metadata.db")));
  EVS_ASSIGN_OR_RETURN(s->layers_, LayerStore::Open(JoinPath(root, "layers")));

  {
    // The probe image: an empty layer built the way every layer is built.
    std::string empty = JoinPath(s->layers_->staging_dir(), "probe-XXXXXX");
    if (::mkdtemp(empty.data()) == nullptr) return ErrnoError(errno, StrCat("mkdtemp ", empty));
    DirGuard empty_guard(empty);
    EVS_ASSIGN_OR_RETURN(StagedLayer probe, s->layers_->BuildFromDirectory(empty, "probe"));
    LayerMounterOptions mo;
    mo.mount_dir = JoinPath(root, "m");
    mo.scratch_dir = empty;
    mo.verity = options.verity;
    mo.verifier_command = options.verifier_command;
    EVS_ASSIGN_OR_RETURN(s->mounter_, LayerMounter::Create(mo, probe.image_path()));
  }
  // containerd's overlay snapshotter adds index=off when the kernel has the
  // option (overlay.go supportsIndex).
  s->overlay_index_off_ = ::access("/sys/module/overlay/parameters/index", F_OK) == 0;

  EVS_RETURN_IF_ERROR(s->Reconcile(/*at_start=*/true));
  EVS_LOG(kInfo) << "snapshotter ready" << Kv("root", root)
                 << Kv("verity", VerityModeName(s->mounter_->verity()))
                 << Kv("backing", BackingModeName(s->mounter_->backing()))
                 << Kv("ms", static_cast<int64_t>(MillisSince(start)));
  return s;
}

Snapshotter::~Snapshotter() {
  if (!closed_) (void)Close();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

VerityMode Snapshotter::verity() const { return mounter_->verity(); }
BackingMode Snapshotter::backing() const { return mounter_->backing(); }

std::string Snapshotter::SnapshotDir(int64_t id) const {
  return JoinPath(JoinPath(options_.root, "snapshots"), std::to_string(id));
}

Status Snapshotter::CheckOpen() const {
  if (closed_) return UnavailableError("snapshotter at ", options_.root, " is shutting down");
  return OkStatus();
}

Result<std::vector<std::string>> Snapshotter::MountedLowers(int64_t parent_id) {
  std::vector<std::string> lowers;
  if (parent_id == 0) return lowers;
  EVS_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> chain, store_->Ancestors(parent_id));
  for (const SnapshotRecord& ancestor : chain) {
    if (ancestor.kind != Kind::kCommitted || ancestor.layer_id == 0) {
      return DataLossError("snapshot ", ancestor.key, " is a parent but holds no layer");
    }
    // Mount() is cheap when the layer is mounted and healthy, and mounts it
    // again when its verifier process died.
    EVS_ASSIGN_OR_RETURN(LayerRecord layer, store_->GetLayer(ancestor.layer_id));
    EVS_RETURN_IF_ERROR(MountLayer(layer).Annotate(StrCat("snapshot ", ancestor.key)));
    lowers.push_back(mounter_->MountPath(ancestor.layer_id));
  }
  return lowers;
}

Result<std::vector<Mount>> Snapshotter::MountsFor(const SnapshotRecord& record) {
  MountState state;
  state.kind = record.kind;
  std::string dir = SnapshotDir(record.id);
  state.fs_dir = JoinPath(dir, "fs");
  state.work_dir = JoinPath(dir, "work");
  state.overlay_index_off = overlay_index_off_;
  EVS_ASSIGN_OR_RETURN(state.lowers, MountedLowers(record.parent_id));
  return BuildMounts(state);
}

Result<std::vector<Mount>> Snapshotter::Prepare(const std::string& key, const std::string& parent,
                                                const Labels& labels,
                                                std::function<bool()> abandoned) {
  // The convert-on-pull and lazy paths (DESIGN.md §1) plug in here: when
  // containerd names the chain ID this layer will be committed as, evs may
  // produce the layer itself and answer AlreadyExists.
  if ((options_.remote != nullptr || options_.lazy) && labels.count(kTargetRefLabel) != 0) {
    EVS_RETURN_IF_ERROR(ValidateLabels(labels).Annotate(StrCat("snapshot ", key)));
    Status s = PrepareRemote(key, parent, labels, std::move(abandoned));
    if (s.code() == Code::kAlreadyExists) return s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      EVS_RETURN_IF_ERROR(CheckOpen());
      ++remote_fallbacks_;
    }
    EVS_LOG(kInfo) << "remote layer not used; falling back to unpack" << Kv("key", key)
                   << Kv("target", labels.at(kTargetRefLabel)) << Kv("reason", s.ToString());
  }
  return CreateSnapshot(Kind::kActive, key, parent, labels);
}

namespace {

// The chain ID a committed snapshot stands for: containerd labels what its
// unpacker commits with kTargetRefLabel (so does evs), and names it
// "<namespace>/<n>/<chain ID>" (metadata/snapshot.go createKey).
std::optional<Digest> ChainIdOf(const SnapshotRecord& r) {
  auto label = r.labels.find(kTargetRefLabel);
  if (label != r.labels.end()) {
    auto d = Digest::Parse(label->second);
    if (d.ok()) return *d;
  }
  auto d = Digest::Parse(r.key.substr(r.key.rfind('/') + 1));
  if (d.ok()) return *d;
  return std::nullopt;
}

}  // namespace

Status Snapshotter::PrepareRemote(const std::string& key, const std::string& parent,
                                  const Labels& labels, std::function<bool()> abandoned) {
  if (key.empty()) return InvalidArgumentError("snapshot key must not be empty");
  RemoteLayerRequest request;
  request.key = key;
  request.parent = parent;
  request.target = labels.at(kTargetRefLabel);
  request.labels = labels;
  request.abandoned = std::move(abandoned);
  {
    // Already here (an earlier pull): nothing to fetch.
    std::lock_guard<std::mutex> lock(mu_);
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing,
                         store_->FindSnapshot(request.target));
    if (existing) {
      EVS_ASSIGN_OR_RETURN(bool reusable, Reusable(*existing, request));
      if (reusable) return AlreadyExistsError("snapshot ", request.target, ": already exists");
    }
  }
  auto start = std::chrono::steady_clock::now();
  // A layer of an image made by `evs image convert` is attached lazily
  // (its labels carry its dm-verity parameters); any other goes to the
  // convert-on-pull source.
  auto lazy_layer = options_.lazy ? lazy::RemoteLayerFromLabels(labels)
                                  : Result<lazy::RemoteLayer>(NotFoundError("lazy pulling is off"));
  if (lazy_layer.ok()) {
    Status s = PrepareLazy(request, *lazy_layer);
    if (s.code() == Code::kAlreadyExists) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++remote_committed_;
      }
      EVS_LOG(kInfo) << "lazy layer prepared" << Kv("key", key) << Kv("target", request.target)
                     << Kv("layer", lazy_layer->descriptor.digest.ToString())
                     << Kv("ms", static_cast<int64_t>(MillisSince(start)));
    }
    return s;
  }
  if (lazy_layer.status().code() != Code::kNotFound) return lazy_layer.status();
  if (options_.remote == nullptr)
    return NotFoundError("not a lazy layer, and convert-on-pull is off");
  EVS_ASSIGN_OR_RETURN(std::shared_ptr<StagedLayer> staged,
                       options_.remote->Fetch(*layers_, request));
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  Status s = CommitRemote(request, staged.get());
  if (s.code() == Code::kAlreadyExists) {
    ++remote_committed_;
    EVS_LOG(kInfo) << "layer prepared remotely" << Kv("key", key) << Kv("target", request.target)
                   << Kv("layer", staged->record().digest)
                   << Kv("ms", static_cast<int64_t>(MillisSince(start)));
  }
  return s;
}

Result<bool> Snapshotter::Reusable(const SnapshotRecord& existing,
                                   const RemoteLayerRequest& request) {
  if (existing.kind != Kind::kCommitted || existing.parent_key != request.parent) return false;
  EVS_ASSIGN_OR_RETURN(LayerRecord layer, store_->GetLayer(existing.layer_id));
  if (!layer.lazy()) return true;
  auto wanted = lazy::RemoteLayerFromLabels(request.labels);
  return wanted.ok() && wanted->descriptor.digest.ToString() == layer.digest &&
         wanted->verity.root_digest.hex() == layer.root_digest;
}

Status Snapshotter::NameRemote(const RemoteLayerRequest& request, std::string* name,
                               std::optional<SnapshotRecord>* parent) {
  // Named by the target, as containerd's own snapshotters would; when that
  // name holds a layer this request cannot reuse (on another parent: the
  // same chain ID reached through differently named parents, e.g. from two
  // namespaces; or a lazy layer with other labels), by the Prepare key:
  // containerd finds it by label and parent, not by name.
  *name = request.target;
  EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing, store_->FindSnapshot(*name));
  if (existing) {
    EVS_ASSIGN_OR_RETURN(bool reusable, Reusable(*existing, request));
    if (reusable) {
      return AlreadyExistsError("snapshot ", *name, ": already exists (committed meanwhile)");
    }
    *name = request.key;
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> taken, store_->FindSnapshot(*name));
    if (taken) return FailedPreconditionError("snapshot key ", *name, " is taken");
  }
  parent->reset();
  if (!request.parent.empty()) {
    EVS_ASSIGN_OR_RETURN(*parent, store_->FindSnapshot(request.parent));
    if (!*parent || (*parent)->kind != Kind::kCommitted) {
      return FailedPreconditionError("parent ", request.parent, " is not a committed snapshot");
    }
  }
  return OkStatus();
}

namespace {

// DESIGN.md §1: a layer must be what the chain ID says, whoever wrote the
// labels. ChainID(parent…layer) = sha256(ChainID(parent) + " " +
// DiffID(layer)) (image-spec config.md).
Status CheckChain(const std::string& diff_id, const std::optional<SnapshotRecord>& parent,
                  const std::string& target, const std::string& layer) {
  if (diff_id.empty()) {
    return FailedPreconditionError("layer ", layer,
                                   ": its diffID is unknown, so it cannot be checked against "
                                   "chain ID ",
                                   target);
  }
  EVS_ASSIGN_OR_RETURN(Digest diff, Digest::Parse(diff_id));
  Digest chain = diff;
  if (parent) {
    std::optional<Digest> parent_chain = ChainIdOf(*parent);
    if (!parent_chain) {
      return FailedPreconditionError("parent ", parent->key, " names no chain ID, so layer ", layer,
                                     " cannot be checked against ", target);
    }
    std::vector<Digest> ids = {*parent_chain, diff};
    chain = oci::ChainId(ids);
  }
  if (chain.ToString() != target) {
    return FailedPreconditionError("layer ", layer, " (diffID ", diff_id, ") on parent \"",
                                   parent ? parent->key : "", "\" is chain ID ", chain.ToString(),
                                   ", not the requested ", target,
                                   ": the labels name another layer");
  }
  return OkStatus();
}

}  // namespace

Status Snapshotter::CommitRemote(const RemoteLayerRequest& request, StagedLayer* staged) {
  EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
  std::string name;
  std::optional<SnapshotRecord> parent;
  EVS_RETURN_IF_ERROR(NameRemote(request, &name, &parent));
  SnapshotRecord r;
  r.kind = Kind::kCommitted;
  r.key = name;
  r.labels = request.labels;
  if (parent) r.parent_id = parent->id;

  const std::string digest = staged->record().digest;
  EVS_ASSIGN_OR_RETURN(std::optional<LayerRecord> stored, store_->FindLayer(digest));
  if (options_.verify_remote_chain) {
    std::string diff_id = staged->record().diff_id;
    if (stored && !stored->diff_id.empty()) {
      if (!diff_id.empty() && diff_id != stored->diff_id) {
        return DataLossError("layer ", digest, ": converted with diffID ", diff_id,
                             " but stored with ", stored->diff_id);
      }
      diff_id = stored->diff_id;
    }
    EVS_RETURN_IF_ERROR(CheckChain(diff_id, parent, request.target, digest));
  }

  bool published = false;
  EVS_ASSIGN_OR_RETURN(LayerRecord layer, InstallLayer(staged, &published));
  Status st = [&]() -> Status {
    r.layer_id = layer.id;
    r.usage = layer.usage;
    r.created_ns = r.updated_ns = NowNs();
    EVS_RETURN_IF_ERROR(store_->InsertSnapshot(r).status());
    return txn->Commit();
  }();
  if (!st.ok()) {
    if (published) (void)UndoInstall(layer);
    return st.Annotate(StrCat("commit remote layer ", digest, " as ", name));
  }
  if (!published) ++layers_shared_;
  return AlreadyExistsError("snapshot ", request.target, ": already exists (prepared by evs as ",
                            name, ")");
}

Result<std::vector<Mount>> Snapshotter::View(const std::string& key, const std::string& parent,
                                             const Labels& labels) {
  return CreateSnapshot(Kind::kView, key, parent, labels);
}

Result<std::vector<Mount>> Snapshotter::CreateSnapshot(Kind kind, const std::string& key,
                                                       const std::string& parent,
                                                       const Labels& labels) {
  if (key.empty()) return InvalidArgumentError("snapshot key must not be empty");
  EVS_RETURN_IF_ERROR(ValidateLabels(labels).Annotate(StrCat("snapshot ", key)));

  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
  EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> existing, store_->FindSnapshot(key));
  if (existing) return AlreadyExistsError("snapshot ", key, ": already exists");

  SnapshotRecord record;
  record.kind = kind;
  record.key = key;
  record.labels = labels;
  record.created_ns = record.updated_ns = NowNs();
  if (!parent.empty()) {
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> p, store_->FindSnapshot(parent));
    if (!p) return NotFoundError("parent snapshot ", parent, " does not exist");
    if (p->kind != Kind::kCommitted) {
      return InvalidArgumentError("parent ", parent, " is not a committed snapshot");
    }
    record.parent_id = p->id;
    record.parent_key = p->key;
  }
  EVS_ASSIGN_OR_RETURN(std::vector<std::string> lowers, MountedLowers(record.parent_id));

  // Build the directory under a temporary name, record it, rename it into
  // place, commit (overlay.go createSnapshot).
  std::string snapshots_dir = JoinPath(options_.root, "snapshots");
  std::string tmp = JoinPath(snapshots_dir, "new-XXXXXX");
  if (::mkdtemp(tmp.data()) == nullptr) {
    return ErrnoError(errno, StrCat("snapshot ", key, ": create directory in ", snapshots_dir));
  }
  DirGuard guard(tmp);
  std::string fs = JoinPath(tmp, "fs");
  EVS_RETURN_IF_ERROR(MakeDir(fs, 0755));
  if (kind == Kind::kActive) EVS_RETURN_IF_ERROR(MakeDir(JoinPath(tmp, "work"), 0711));
  if (!lowers.empty()) {
    // The new root starts out owned like the parent's root (overlay.go).
    struct stat st;
    if (::stat(lowers[0].c_str(), &st) != 0) return ErrnoError(errno, StrCat("stat ", lowers[0]));
    if (::lchown(fs.c_str(), st.st_uid, st.st_gid) != 0) {
      return ErrnoError(errno, StrCat("chown ", fs));
    }
  }
  EVS_ASSIGN_OR_RETURN(record.id, store_->InsertSnapshot(record));
  std::string dir = SnapshotDir(record.id);
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    return ErrnoError(errno, StrCat("snapshot ", key, ": rename ", tmp, " to ", dir));
  }
  guard.Move(dir);
  EVS_RETURN_IF_ERROR(FsyncDir(snapshots_dir));
  EVS_RETURN_IF_ERROR(txn->Commit().Annotate(StrCat("snapshot ", key)));
  guard.Dismiss();

  MountState state;
  state.kind = kind;
  state.fs_dir = JoinPath(dir, "fs");
  state.work_dir = JoinPath(dir, "work");
  state.lowers = std::move(lowers);
  state.overlay_index_off = overlay_index_off_;
  return BuildMounts(state);
}

Result<std::vector<Mount>> Snapshotter::Mounts(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> r, store_->FindSnapshot(key));
  if (!r) return NotFoundError("snapshot ", key, " does not exist");
  if (r->kind != Kind::kActive && r->kind != Kind::kView) {
    return FailedPreconditionError("snapshot ", key, " is not active or view");
  }
  return MountsFor(*r);
}

std::string Snapshotter::CacheDir(const std::string& digest) const {
  std::string hex = digest.substr(digest.find(':') + 1);
  return JoinPath(JoinPath(options_.root, "cache"), hex);
}

Result<lazy::LazyLayerArgs> Snapshotter::LazyArgsFor(const LayerRecord& layer) const {
  lazy::LazyLayerArgs args;
  EVS_ASSIGN_OR_RETURN(args.layer.repository, oci::Reference::Parse(layer.lazy_repository));
  args.layer.descriptor.media_type = std::string(oci::kErofsLayer);
  EVS_ASSIGN_OR_RETURN(args.layer.descriptor.digest, Digest::Parse(layer.digest));
  args.layer.descriptor.size = static_cast<int64_t>(layer.file_size);
  EVS_ASSIGN_OR_RETURN(args.layer.verity.root_digest,
                       Digest::Parse(StrCat(layer.hash_algorithm, ":", layer.root_digest)));
  args.layer.verity.hash_offset = layer.hash_offset;
  args.layer.verity.block_size = layer.block_size;
  args.cache_dir = CacheDir(layer.digest);
  args.target = mounter_->MountPath(layer.id);
  args.hosts_dir = options_.registry_hosts_dir;
  args.docker_config = options_.docker_config;
  args.node_dir = JoinPath(options_.root, "lazy");
  args.background = options_.lazy_background;
  EVS_RETURN_IF_ERROR(MakeDirs(Dirname(args.cache_dir), 0700));
  return args;
}

Status Snapshotter::MountLayer(const LayerRecord& layer) {
  if (!layer.lazy()) {
    EVS_ASSIGN_OR_RETURN(std::string image, layers_->ImagePathFor(layer.digest));
    return mounter_->Mount(layer, image);
  }
  // lazy/lazy_layer_process.h: what the layer's process needs to fetch and
  // verify it.
  EVS_ASSIGN_OR_RETURN(lazy::LazyLayerArgs args, LazyArgsFor(layer));
  // (Only when not mounted: a mounted layer stays as it is.)
  std::optional<LayerRecord> complete;
  if (!mounter_->IsMounted(layer.id)) complete = CompleteLazyLayer(layer, args.cache_dir);
  return mounter_->MountLazy(layer, args, complete ? &*complete : nullptr);
}

std::optional<LayerRecord> Snapshotter::CompleteLazyLayer(const LayerRecord& layer,
                                                          const std::string& cache_dir) const {
  auto root = Digest::Parse(StrCat(layer.hash_algorithm, ":", layer.root_digest));
  if (!root.ok() || !lazy::LazyLayer::IsComplete(cache_dir, *root)) return std::nullopt;
  // The salt is in the verity superblock only (the labels carry the root
  // digest and hash offset). Not covered by the root digest, but a wrong
  // one fails every block's check, so it need not be trusted.
  const std::string file = lazy::LazyLayer::LayerFile(cache_dir);
  std::string sb(verity::kSuperblockSize, '\0');
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  Result<size_t> got =
      fd ? PreadFull(fd.get(), sb.data(), sb.size(), static_cast<off_t>(layer.hash_offset), file)
         : Result<size_t>(ErrnoError(errno, StrCat("open ", file)));
  if (got.ok() && *got != sb.size()) got = DataLossError(file, ": ends inside the superblock");
  Result<verity::VerityParams> params =
      got.ok() ? verity::DecodeSuperblock(sb, file) : Result<verity::VerityParams>(got.status());
  if (!params.ok()) {
    EVS_LOG(kWarning) << "complete lazy layer's verity superblock unreadable; serving it lazily"
                      << Kv("layer", layer.digest) << Kv("error", params.status().ToString());
    return std::nullopt;
  }
  LayerRecord local = layer;
  local.salt = verity::SaltHex(params->salt);
  return local;
}

Status Snapshotter::RemoveLayerFiles(const LayerRecord& layer) {
  EVS_RETURN_IF_ERROR(mounter_->Unmount(layer.id));
  if (layer.lazy()) return lazy::LazyLayer::RemoveCache(CacheDir(layer.digest));
  return layers_->Remove(layer.digest);
}

Status Snapshotter::PrepareLazy(const RemoteLayerRequest& request,
                                const lazy::RemoteLayer& remote) {
  const std::string digest = remote.descriptor.digest.ToString();
  // Whether the request can be answered at all (its name, parent and
  // chain), before anything is reserved or fetched; under the lock.
  auto check = [&](std::string* name, std::optional<SnapshotRecord>* parent) -> Status {
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_RETURN_IF_ERROR(NameRemote(request, name, parent));
    // An EROFS layer is not compressed: its diffID is its blob digest
    // (docs/lazy.md), so the labels must name the blob the chain ID stands
    // for. Its content is then checked block by block against the root
    // digest from the same labels.
    if (options_.verify_remote_chain) {
      EVS_RETURN_IF_ERROR(CheckChain(digest, *parent, request.target, digest));
    }
    return OkStatus();
  };

  LayerRecord layer;
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
      std::string name;
      std::optional<SnapshotRecord> parent;
      EVS_RETURN_IF_ERROR(check(&name, &parent));
      EVS_ASSIGN_OR_RETURN(std::optional<LayerRecord> stored, store_->FindLayer(digest));
      if (stored && attaching_.count(stored->id) != 0) {
        // Another request is attaching this layer: wait for it (without
        // the lock), then look again.
        txn.reset();
        attach_done_.wait(lock);
        continue;
      }
      if (stored) {
        if (!stored->lazy() || stored->root_digest != remote.verity.root_digest.hex()) {
          return FailedPreconditionError("layer ", digest,
                                         " is stored with other verity parameters than the "
                                         "labels name");
        }
        // Mounted already (cheap), or mounted again over its cache.
        EVS_RETURN_IF_ERROR(MountLayer(*stored));
        return CommitLazy(request, *stored, std::move(txn));
      }
      // Reserve the layer: its row gives it its id, so its process can
      // mount it at m/<id> while the lock is free. Until a snapshot holds
      // it, attaching_ keeps Cleanup off it; after a crash the row is
      // unreferenced and the next start removes it (and stops the process,
      // whose pid file names it).
      layer.digest = digest;
      layer.file_size = static_cast<uint64_t>(remote.descriptor.size);
      layer.image_size = remote.verity.hash_offset;
      layer.block_size = remote.verity.block_size;
      layer.hash_block_size = 4096;  // LayerFileSize's layout (lazy/annotations.h)
      layer.hash_type = 1;
      layer.root_digest = remote.verity.root_digest.hex();
      layer.hash_offset = remote.verity.hash_offset;
      layer.hash_algorithm = std::string(HashAlgorithmName(remote.verity.root_digest.algorithm()));
      layer.lazy_repository = remote.repository.Name();
      layer.created_ns = NowNs();
      EVS_ASSIGN_OR_RETURN(layer.id, store_->InsertLayer(layer));
      EVS_RETURN_IF_ERROR(txn->Commit().Annotate(StrCat("reserve lazy layer ", digest)));
      attaching_.insert(layer.id);
      break;
    }
  }

  // The attach: the layer's process fetches the hash tree (one ranged GET,
  // or none when the cache has it), checks it and mounts the layer. Other
  // snapshot calls go on meanwhile.
  EVS_LOG(kDebug) << "attaching lazy layer" << Kv("layer", digest) << Kv("id", layer.id)
                  << Kv("key", request.key);
  std::optional<LayerMounter::PendingMount> pending;
  Status started = [&]() -> Status {
    EVS_ASSIGN_OR_RETURN(lazy::LazyLayerArgs args, LazyArgsFor(layer));
    EVS_ASSIGN_OR_RETURN(LayerMounter::PendingMount mount, mounter_->StartLazy(layer, args));
    pending.emplace(std::move(mount));
    return OkStatus();
  }();

  std::unique_lock<std::mutex> lock(mu_);
  attaching_.erase(layer.id);
  attach_done_.notify_all();
  Status st = [&]() -> Status {
    EVS_RETURN_IF_ERROR(started);
    EVS_RETURN_IF_ERROR(CheckOpen());
    mounter_->Install(std::move(*pending));
    pending.reset();
    EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    return CommitLazy(request, layer, std::move(txn));
  }();
  if (st.code() == Code::kAlreadyExists) {
    auto refs = store_->LayerReferences(layer.id);
    if (refs.ok() && *refs > 0) return st;
    // Answered by a snapshot committed meanwhile on another layer: this
    // one is not needed.
  }
  // Nothing of a layer no snapshot holds stays: its process and mount (a
  // pending one is stopped here), its row, its cache (with the tree it may
  // have fetched).
  pending.reset();
  Status undo = [&]() -> Status {
    EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    EVS_RETURN_IF_ERROR(store_->DeleteLayer(layer.id));
    EVS_RETURN_IF_ERROR(txn->Commit());
    return RemoveLayerFiles(layer);
  }();
  if (!undo.ok()) {
    EVS_LOG(kWarning) << "lazy layer left for cleanup" << Kv("layer", digest)
                      << Kv("error", undo.ToString());
  }
  if (st.code() == Code::kAlreadyExists) return st;
  return st.Annotate(StrCat("lazy layer ", digest));
}

Status Snapshotter::CommitLazy(const RemoteLayerRequest& request, const LayerRecord& layer,
                               std::unique_ptr<MetadataStore::Transaction> txn) {
  std::string name;
  std::optional<SnapshotRecord> parent;
  EVS_RETURN_IF_ERROR(NameRemote(request, &name, &parent));
  const std::string& digest = layer.digest;
  if (options_.verify_remote_chain) {
    EVS_RETURN_IF_ERROR(CheckChain(digest, parent, request.target, digest));
  }
  SnapshotRecord r;
  r.kind = Kind::kCommitted;
  r.key = name;
  r.labels = request.labels;
  if (parent) r.parent_id = parent->id;
  r.layer_id = layer.id;
  r.created_ns = r.updated_ns = NowNs();
  EVS_RETURN_IF_ERROR(store_->InsertSnapshot(r).status());
  EVS_RETURN_IF_ERROR(txn->Commit().Annotate(StrCat("lazy layer ", digest, " as ", name)));
  return AlreadyExistsError("snapshot ", request.target, ": already exists (lazy, as ", name, ")");
}

Result<LayerRecord> Snapshotter::InstallLayer(StagedLayer* staged, bool* published) {
  *published = false;
  const std::string digest = staged->record().digest;
  EVS_ASSIGN_OR_RETURN(std::optional<LayerRecord> existing, store_->FindLayer(digest));
  if (existing) {
    // Stored once: the identical layer is already here (and mounted).
    if (existing->lazy()) {
      return FailedPreconditionError("layer ", digest, " is stored as a lazy layer");
    }
    if (!mounter_->IsMounted(existing->id)) EVS_RETURN_IF_ERROR(MountLayer(*existing));
    return *existing;
  }
  EVS_ASSIGN_OR_RETURN(bool fresh, layers_->Publish(staged));
  if (!fresh) {
    // A directory without a row: a crash after publishing and before the
    // transaction committed. Replace it with this complete copy.
    EVS_LOG(kWarning) << "replacing unrecorded layer directory" << Kv("layer", digest);
    EVS_RETURN_IF_ERROR(layers_->Remove(digest));
    EVS_ASSIGN_OR_RETURN(fresh, layers_->Publish(staged));
    if (!fresh) return InternalError("layer ", digest, ": cannot publish");
  }
  *published = true;
  LayerRecord record = staged->record();
  EVS_ASSIGN_OR_RETURN(record.id, store_->InsertLayer(record));
  EVS_ASSIGN_OR_RETURN(std::string image, layers_->ImagePathFor(digest));
  EVS_RETURN_IF_ERROR(mounter_->Mount(record, image));
  return record;
}

Status Snapshotter::UndoInstall(const LayerRecord& layer) { return RemoveLayerFiles(layer); }

Status Snapshotter::Commit(const std::string& name, const std::string& key, const Labels& labels) {
  if (name.empty()) return InvalidArgumentError("committed snapshot name must not be empty");
  EVS_RETURN_IF_ERROR(ValidateLabels(labels).Annotate(StrCat("snapshot ", name)));
  auto start = std::chrono::steady_clock::now();

  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> taken, store_->FindSnapshot(name));
    if (taken) return AlreadyExistsError("committed snapshot ", name, ": already exists");
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> r, store_->FindSnapshot(key));
    if (!r) return NotFoundError("snapshot ", key, " does not exist");
    if (r->kind != Kind::kActive)
      return FailedPreconditionError("snapshot ", key, " is not active");
    if (committing_.count(r->id)) {
      return FailedPreconditionError("snapshot ", key, " is already being committed");
    }
    id = r->id;
    committing_.insert(id);
  }
  struct Unmark {
    Snapshotter* s;
    int64_t id;
    ~Unmark() {
      std::lock_guard<std::mutex> lock(s->mu_);
      s->committing_.erase(id);
    }
  } unmark{this, id};

  // The expensive part, outside the lock.
  std::string dir = SnapshotDir(id);
  EVS_LOG(kDebug) << "converting upper directory" << Kv("key", key) << Kv("path", dir);
  EVS_ASSIGN_OR_RETURN(StagedLayer staged,
                       layers_->BuildFromDirectory(JoinPath(dir, "fs"), StrCat("snapshot ", key)));
  const std::string digest = staged.record().digest;
  double convert_ms = MillisSince(start);

  {
    std::lock_guard<std::mutex> lock(mu_);
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    bool published = false;
    EVS_ASSIGN_OR_RETURN(LayerRecord layer, InstallLayer(&staged, &published));
    Status s = [&]() -> Status {
      EVS_RETURN_IF_ERROR(store_->CommitSnapshot(id, name, layer.id, layer.usage, labels, NowNs()));
      return txn->Commit();
    }();
    if (!s.ok()) {
      if (published) (void)UndoInstall(layer);
      return s.Annotate(StrCat("commit ", key, " as ", name));
    }
    ++commits_;
    if (!published) ++layers_shared_;
    convert_seconds_ += convert_ms / 1000.0;
    EVS_LOG(kInfo) << "snapshot committed" << Kv("key", key) << Kv("name", name)
                   << Kv("layer", digest) << Kv("stored", published ? "new" : "shared")
                   << Kv("convert_ms", static_cast<int64_t>(convert_ms))
                   << Kv("ms", static_cast<int64_t>(MillisSince(start)));
  }
  // The upper directory is no longer named by any metadata; a failure here
  // leaves it for Cleanup (and the next start).
  Status rm = RemoveTree(dir);
  if (!rm.ok()) {
    EVS_LOG(kWarning) << "upper directory left for cleanup" << Kv("name", name)
                      << Kv("error", rm.ToString());
  }
  return OkStatus();
}

Status Snapshotter::Remove(const std::string& key) {
  std::optional<SnapshotRecord> removed;
  std::optional<LayerRecord> dropped_layer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    EVS_ASSIGN_OR_RETURN(removed, store_->FindSnapshot(key));
    if (!removed) return NotFoundError("snapshot ", key, " does not exist");
    if (committing_.count(removed->id)) {
      return FailedPreconditionError("snapshot ", key, " is being committed; cannot remove it");
    }
    EVS_ASSIGN_OR_RETURN(bool children, store_->HasChildren(removed->id));
    if (children) {
      return FailedPreconditionError("cannot remove snapshot ", key, ": it has children");
    }
    EVS_RETURN_IF_ERROR(store_->DeleteSnapshot(removed->id));
    if (removed->layer_id != 0) {
      EVS_ASSIGN_OR_RETURN(int64_t refs, store_->LayerReferences(removed->layer_id));
      if (refs == 0) {
        EVS_ASSIGN_OR_RETURN(dropped_layer, store_->GetLayer(removed->layer_id));
        EVS_RETURN_IF_ERROR(store_->DeleteLayer(removed->layer_id));
      }
    }
    EVS_RETURN_IF_ERROR(txn->Commit().Annotate(StrCat("remove ", key)));
    // Files go after the commit: the key is gone either way, and what is
    // left behind on failure is found by Cleanup (overlay.go Remove).
    if (dropped_layer) {
      Status s = RemoveLayerFiles(*dropped_layer);
      if (!s.ok()) {
        EVS_LOG(kWarning) << "layer left for cleanup" << Kv("layer", dropped_layer->digest)
                          << Kv("error", s.ToString());
      }
    }
  }
  if (removed->kind != Kind::kCommitted) {
    Status s = RemoveTree(SnapshotDir(removed->id));
    if (!s.ok()) {
      EVS_LOG(kWarning) << "snapshot directory left for cleanup" << Kv("key", key)
                        << Kv("error", s.ToString());
    }
  }
  return OkStatus();
}

Result<Info> Snapshotter::Stat(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> r, store_->FindSnapshot(key));
  if (!r) return NotFoundError("snapshot ", key, " does not exist");
  return r->ToInfo();
}

Result<Info> Snapshotter::Update(const Info& info, const std::vector<std::string>& fieldpaths) {
  if (info.name.empty()) return InvalidArgumentError("snapshot name must not be empty");
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
  EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> r, store_->FindSnapshot(info.name));
  if (!r) return NotFoundError("snapshot ", info.name, " does not exist");

  // snapshots/storage/bolt.go UpdateInfo.
  Labels labels = r->labels;
  if (fieldpaths.empty()) {
    labels = info.labels;
  } else {
    for (const std::string& path : fieldpaths) {
      if (path.rfind("labels.", 0) == 0) {
        std::string k = path.substr(7);
        auto it = info.labels.find(k);
        labels[k] = it == info.labels.end() ? std::string() : it->second;
      } else if (path == "labels") {
        labels = info.labels;
      } else {
        return InvalidArgumentError("cannot update \"", path, "\" field on snapshot ", info.name);
      }
    }
  }
  std::erase_if(labels, [](const auto& kv) { return kv.second.empty(); });
  EVS_RETURN_IF_ERROR(ValidateLabels(labels).Annotate(StrCat("snapshot ", info.name)));
  int64_t now = NowNs();
  EVS_RETURN_IF_ERROR(store_->UpdateLabels(r->id, labels, now));
  EVS_RETURN_IF_ERROR(txn->Commit().Annotate(StrCat("update ", info.name)));
  r->labels = std::move(labels);
  r->updated_ns = now;
  return r->ToInfo();
}

Result<Usage> Snapshotter::GetUsage(const std::string& key) {
  std::string upper;
  std::string lazy_file, lazy_mount;
  {
    std::lock_guard<std::mutex> lock(mu_);
    EVS_RETURN_IF_ERROR(CheckOpen());
    EVS_ASSIGN_OR_RETURN(std::optional<SnapshotRecord> r, store_->FindSnapshot(key));
    if (!r) return NotFoundError("snapshot ", key, " does not exist");
    if (r->kind == Kind::kCommitted && r->layer_id != 0) {
      EVS_ASSIGN_OR_RETURN(LayerRecord layer, store_->GetLayer(r->layer_id));
      if (layer.lazy()) {
        lazy_file = lazy::LazyLayer::LayerFile(CacheDir(layer.digest));
        lazy_mount = mounter_->MountPath(layer.id);
      }
    }
    if (lazy_file.empty()) {
      if (r->kind != Kind::kActive) return r->usage;
      upper = JoinPath(SnapshotDir(r->id), "fs");
    }
  }
  if (!lazy_file.empty()) return LazyLayerUsage(lazy_file, lazy_mount);
  // Measured outside the lock: it walks the whole upper directory.
  EVS_ASSIGN_OR_RETURN(DiskUsage du, MeasureDiskUsage(upper));
  return Usage{du.bytes, du.inodes};
}

Result<std::vector<Info>> Snapshotter::List(const std::vector<std::string>& filters) {
  EVS_ASSIGN_OR_RETURN(SnapshotFilter filter, SnapshotFilter::Parse(filters));
  std::vector<Info> out;
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  EVS_RETURN_IF_ERROR(store_->ForEachSnapshot([&](const SnapshotRecord& r) {
    Info info = r.ToInfo();
    if (filter.Matches(info)) out.push_back(std::move(info));
    return OkStatus();
  }));
  return out;
}

Result<Snapshotter::Stats> Snapshotter::GetStats() {
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  Stats stats;
  EVS_RETURN_IF_ERROR(store_->ForEachSnapshot([&](const SnapshotRecord& r) {
    if (r.kind == Kind::kActive) ++stats.active;
    if (r.kind == Kind::kView) ++stats.views;
    if (r.kind == Kind::kCommitted) ++stats.committed;
    return OkStatus();
  }));
  EVS_RETURN_IF_ERROR(store_->ForEachLayer([&](const LayerRecord& l) {
    ++stats.layers;
    stats.layer_bytes += l.lazy() ? LazyLayerUsage(lazy::LazyLayer::LayerFile(CacheDir(l.digest)),
                                                   /*mount=*/"")
                                        .size
                                  : l.usage.size;
    return OkStatus();
  }));
  stats.layers_mounted = static_cast<int64_t>(mounter_->mounted());
  stats.commits = commits_;
  stats.layers_shared = layers_shared_;
  stats.convert_seconds = convert_seconds_;
  stats.remote_committed = remote_committed_;
  stats.remote_fallbacks = remote_fallbacks_;
  return stats;
}

Status Snapshotter::Cleanup() {
  std::lock_guard<std::mutex> lock(mu_);
  EVS_RETURN_IF_ERROR(CheckOpen());
  return Reconcile(/*at_start=*/false);
}

// Metadata is the truth; disk is made to match it. At start nothing is in
// flight; from Cleanup, commits in progress own their snapshot directory and
// their staging directory, which are left alone.
Status Snapshotter::Reconcile(bool at_start) {
  auto start = std::chrono::steady_clock::now();
  ReconcileReport report;

  std::set<int64_t> live_dirs;  // snapshot ids whose directory must stay
  std::map<int64_t, int64_t> layer_refs;
  EVS_RETURN_IF_ERROR(store_->ForEachSnapshot([&](const SnapshotRecord& r) {
    if (r.kind != Kind::kCommitted || committing_.count(r.id)) live_dirs.insert(r.id);
    if (r.layer_id != 0) ++layer_refs[r.layer_id];
    return OkStatus();
  }));

  // 1. Snapshot directories no active or view snapshot names: temporary
  //    directories of interrupted Prepares, upper directories of committed
  //    snapshots, directories of removed ones.
  std::string snapshots_dir = JoinPath(options_.root, "snapshots");
  std::set<int64_t> present;
  for (const std::string& n : ListDir(snapshots_dir)) {
    std::optional<int64_t> id = ParseId(n);
    if (id) present.insert(*id);
    if (id && live_dirs.count(*id)) continue;
    // A Prepare in flight holds the lock, so from Cleanup a "new-" directory
    // is a leftover too.
    Status s = RemoveTree(JoinPath(snapshots_dir, n));
    if (!s.ok()) {
      EVS_LOG(kWarning) << "cannot remove snapshot directory" << Kv("error", s.ToString());
      continue;
    }
    ++report.snapshot_dirs_removed;
  }
  for (int64_t id : live_dirs) {
    if (!present.count(id)) ++report.snapshots_missing_dirs;
  }

  // 2. Layers: rows nothing references go (with their files); directories
  //    no row names go; rows whose file is missing are reported.
  std::set<std::string> known_hex;
  std::vector<LayerRecord> unreferenced;
  std::vector<LayerRecord> referenced;
  std::set<std::string> lazy_hex;  // cache/<hex> directories that stay
  EVS_RETURN_IF_ERROR(store_->ForEachLayer([&](const LayerRecord& l) {
    if (layer_refs.count(l.id)) {
      referenced.push_back(l);
    } else if (attaching_.count(l.id)) {
      // Reserved by a Prepare attaching it outside the lock: its snapshot
      // comes once the attach ends.
      EVS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(l.digest));
      lazy_hex.insert(d.hex());
    } else {
      unreferenced.push_back(l);
    }
    return OkStatus();
  }));
  if (!unreferenced.empty()) {
    EVS_ASSIGN_OR_RETURN(auto txn, store_->Begin());
    for (const LayerRecord& l : unreferenced) EVS_RETURN_IF_ERROR(store_->DeleteLayer(l.id));
    EVS_RETURN_IF_ERROR(txn->Commit());
    for (const LayerRecord& l : unreferenced) {
      EVS_RETURN_IF_ERROR(mounter_->Unmount(l.id));
      ++report.layers_removed;
    }
  }
  for (const LayerRecord& l : referenced) {
    EVS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(l.digest));
    (l.lazy() ? lazy_hex : known_hex).insert(d.hex());
  }
  std::string sha_dir = JoinPath(layers_->dir(), "sha256");
  for (const std::string& n : ListDir(sha_dir)) {
    if (known_hex.count(n)) continue;
    Status s = RemoveTree(JoinPath(sha_dir, n));
    if (!s.ok()) {
      EVS_LOG(kWarning) << "cannot remove layer directory" << Kv("error", s.ToString());
      continue;
    }
    ++report.layer_dirs_removed;
  }
  // Staging entries: at start all are leftovers; from Cleanup, those a
  // commit or a conversion in progress owns stay.
  for (const std::string& n : ListDir(layers_->staging_dir())) {
    if (!at_start && layers_->StagingInUse(n)) continue;
    Status s = RemoveTree(JoinPath(layers_->staging_dir(), n));
    if (s.ok()) ++report.staging_removed;
  }

  // 3. Every referenced layer is mounted (a lazy layer's process adopted,
  //    or started again over its cache).
  for (const LayerRecord& l : referenced) {
    if (mounter_->IsMounted(l.id)) continue;
    if (!l.lazy()) {
      EVS_ASSIGN_OR_RETURN(std::string image, layers_->ImagePathFor(l.digest));
      if (::access(image.c_str(), F_OK) != 0) {
        ++report.layers_missing;
        EVS_LOG(kError) << "layer image missing; snapshots holding it cannot be mounted"
                        << Kv("layer", l.digest) << Kv("path", image);
        continue;
      }
    }
    Status s = MountLayer(l);
    if (!s.ok()) {
      EVS_LOG(kError) << "layer not mounted" << Kv("layer", l.digest) << Kv("error", s.ToString());
      continue;
    }
    ++report.layers_mounted;
  }
  // 4. Whatever else is under m/: mounts (and verifier processes) of layers
  //    nothing references, left by a daemon that was killed. Done after the
  //    mounts above so that layers still served by a verifier process of an
  //    earlier daemon were adopted, not torn down.
  EVS_ASSIGN_OR_RETURN(report.stale_mounts_removed, mounter_->RemoveStale(attaching_));
  // 5. Lazy layer caches no row names (their processes were stopped
  //    above; a FUSE file a killed one left is detached first).
  std::string cache_dir = JoinPath(options_.root, "cache");
  for (const std::string& n : ListDir(cache_dir)) {
    if (lazy_hex.count(n)) continue;
    std::string dir = JoinPath(cache_dir, n);
    std::string fuse = JoinPath(dir, "fuse");
    for (int stacked = 0; stacked < 64 && ::umount2(fuse.c_str(), MNT_DETACH) == 0; ++stacked) {
    }
    Status s = RemoveTree(dir);
    if (!s.ok()) {
      EVS_LOG(kWarning) << "cannot remove lazy layer cache" << Kv("error", s.ToString());
      continue;
    }
    ++report.caches_removed;
  }

  bool changed = report.snapshot_dirs_removed || report.layer_dirs_removed ||
                 report.layers_removed || report.staging_removed || report.stale_mounts_removed ||
                 report.layers_missing || report.snapshots_missing_dirs || report.caches_removed;
  if (at_start || changed) {
    EVS_LOG(kInfo) << (at_start ? "reconciled root" : "cleanup") << Kv("root", options_.root)
                   << Kv("snapshot_dirs_removed", report.snapshot_dirs_removed)
                   << Kv("layers_removed", report.layers_removed)
                   << Kv("layer_dirs_removed", report.layer_dirs_removed)
                   << Kv("staging_removed", report.staging_removed)
                   << Kv("stale_mounts_removed", report.stale_mounts_removed)
                   << Kv("layers_mounted", report.layers_mounted)
                   << Kv("layers_missing", report.layers_missing)
                   << Kv("snapshots_missing_dirs", report.snapshots_missing_dirs)
                   << Kv("caches_removed", report.caches_removed)
                   << Kv("ms", static_cast<int64_t>(MillisSince(start)));
  }
  return OkStatus();
}

Status Snapshotter::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return OkStatus();
  closed_ = true;
  if (!mounter_) return OkStatus();
  auto left = mounter_->ReleaseForShutdown();
  if (!left.ok()) {
    EVS_LOG(kWarning) << "shutdown: some layer mounts could not be unmounted"
                      << Kv("error", left.status().ToString());
    return left.status();
  }
  EVS_LOG(kInfo) << "shutdown: layer mounts released" << Kv("left_in_use", *left);
  return OkStatus();
}

}  // namespace evs::snapshot
