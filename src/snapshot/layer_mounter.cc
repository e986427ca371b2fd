#include "evs/snapshot/layer_mounter.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/lazy/lazy_layer.h"
#include "evs/lazy/lazy_layer_process.h"
#include "evs/snapshot/verified_layer_process.h"
#include "evs/verity/dm_verity.h"
#include "evs/verity/format.h"
#include "evs/verity/verified_block_file.h"

namespace evs::snapshot {
namespace {

bool KernelHasDeviceMapperVerity() {
  if (::access("/dev/mapper/control", F_OK) != 0) return false;
  struct stat st;
  // Built in or already loaded; a loadable module that is not loaded yet is
  // found by modprobe in the kernel mode's activation.
  return ::stat("/sys/module/dm_verity", &st) == 0;
}

// Mounts `image` read-only at `target` with the chosen backing.
Result<MountPoint> MountImage(const std::string& image, uint64_t image_size,
                              const std::string& target, BackingMode backing) {
  if (backing == BackingMode::kFile) {
    return MountPoint::Mount(image, target, "erofs", MS_RDONLY, "");
  }
  EVS_ASSIGN_OR_RETURN(LoopDevice loop, LoopDevice::AttachReadOnly(image, 0, image_size));
  EVS_ASSIGN_OR_RETURN(MountPoint mp,
                       MountPoint::Mount(loop.path(), target, "erofs", MS_RDONLY, ""));
  // With autoclear the loop device goes away with the mount.
  loop.Release();
  return mp;
}

// What verification needs, from the layer's row (DESIGN.md §3: no sidecar
// files).
Result<verity::VerityDescriptor> DescriptorOf(const LayerRecord& layer) {
  if (layer.root_digest.empty() || layer.block_size == 0) {
    return FailedPreconditionError("layer ", layer.digest, " has no verity tree recorded");
  }
  verity::VerityDescriptor d;
  d.params.hash_type = layer.hash_type;
  EVS_ASSIGN_OR_RETURN(d.params.algorithm, ParseHashAlgorithm(layer.hash_algorithm));
  d.params.data_block_size = layer.block_size;
  d.params.hash_block_size = layer.hash_block_size;
  d.params.data_blocks = layer.hash_offset / layer.block_size;
  EVS_ASSIGN_OR_RETURN(d.params.salt, verity::ParseSaltHex(layer.salt));
  d.hash_offset = layer.hash_offset;
  EVS_ASSIGN_OR_RETURN(d.root_digest, Digest::Parse(StrCat(HashAlgorithmName(d.params.algorithm),
                                                           ":", layer.root_digest)));
  return d;
}

}  // namespace

LayerMounter::Mounted::Mounted() = default;
LayerMounter::Mounted::Mounted(Mounted&&) noexcept = default;
LayerMounter::Mounted& LayerMounter::Mounted::operator=(Mounted&&) noexcept = default;
LayerMounter::Mounted::~Mounted() = default;

namespace {

// Waits up to `ms` for the process behind `pidfd` to exit.
bool WaitExit(int pidfd, int ms) {
  struct pollfd p = {pidfd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

UniqueFd PidFd(pid_t pid) { return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))); }

extern "C" char** environ;

}  // namespace

Status LayerMounter::Mounted::Unmount() {
  if (verifier > 0) {
    // The process unmounts and exits; it keeps serving (and we give up
    // waiting) only while an overlay still reads the layer.
    if (::kill(verifier, SIGTERM) != 0 && errno != ESRCH) {
      return ErrnoError(errno, StrCat("signal the verifier of ", target));
    }
    bool exited = !verifier_fd.valid() || WaitExit(verifier_fd.get(), 10000);
    ::waitpid(verifier, nullptr, WNOHANG);  // reap it when it is our child
    if (!exited) {
      return FailedPreconditionError(target, ": still in use; its verifier keeps serving it");
    }
    verifier = -1;
    verifier_fd.Reset();
    return OkStatus();
  }
  if (fuse) {
    EVS_RETURN_IF_ERROR(fuse->Unmount());
    fuse.reset();
  }
  if (kernel) {
    EVS_RETURN_IF_ERROR(kernel->Unmount());
    kernel.reset();
  }
  return plain.Unmount();
}

// Verified mounts left in place at shutdown. Their destructors would
// unmount, so they are parked here for the rest of the process instead (an
// in-process FUSE server keeps serving until the process exits).
struct AbandonedMounts {
  std::mutex mu;
  std::vector<std::unique_ptr<verity::VerifiedErofsMount>> fuse;
  std::vector<std::unique_ptr<verity::DmVerityErofsMount>> kernel;
};
AbandonedMounts& Abandoned() {
  static auto* abandoned = new AbandonedMounts();  // never destroyed, on purpose
  return *abandoned;
}

void LayerMounter::Mounted::Release() {
  verifier = -1;  // it keeps serving on its own
  verifier_fd.Reset();
  AbandonedMounts& a = Abandoned();
  std::lock_guard<std::mutex> lock(a.mu);
  if (fuse) a.fuse.push_back(std::move(fuse));
  if (kernel) a.kernel.push_back(std::move(kernel));
  plain.Release();
}

LayerMounter::LayerMounter() = default;

Result<VerityMode> ParseVerityMode(std::string_view text) {
  if (text == "auto") return VerityMode::kAuto;
  if (text == "kernel") return VerityMode::kKernel;
  if (text == "userspace") return VerityMode::kUserspace;
  if (text == "off") return VerityMode::kOff;
  return InvalidArgumentError("verity mode \"", text, "\": want auto, kernel, userspace or off");
}

std::string_view VerityModeName(VerityMode mode) {
  switch (mode) {
    case VerityMode::kAuto:
      return "auto";
    case VerityMode::kKernel:
      return "kernel";
    case VerityMode::kUserspace:
      return "userspace";
    case VerityMode::kOff:
      return "off";
  }
  return "?";
}

std::string_view BackingModeName(BackingMode mode) {
  return mode == BackingMode::kFile ? "file" : "loop";
}

Result<std::unique_ptr<LayerMounter>> LayerMounter::Create(const LayerMounterOptions& options,
                                                           const std::string& probe_image) {
  std::unique_ptr<LayerMounter> m(new LayerMounter());
  m->mount_dir_ = options.mount_dir;
  EVS_RETURN_IF_ERROR(MakeDirs(m->mount_dir_, 0700));

  m->threads_ = options.userspace_threads;
  m->verifier_command_ = options.verifier_command;
  // Resolve the verification mode (DESIGN.md §5): auto is kernel where
  // device-mapper works, else userspace; never off by itself.
  auto open_dm = [&]() -> Status {
    if (!KernelHasDeviceMapperVerity()) {
      return FailedPreconditionError(
          "no device-mapper verity here (/dev/mapper/control or /sys/module/dm_verity missing)");
    }
    EVS_ASSIGN_OR_RETURN(m->dm_, verity::OpenDeviceMapper());
    m->dm_devices_ = std::make_unique<verity::DmVerityDevices>(m->dm_.get());
    return OkStatus();
  };
  bool have_fuse = ::access("/dev/fuse", R_OK | W_OK) == 0;
  switch (options.verity) {
    case VerityMode::kOff:
      m->verity_ = VerityMode::kOff;
      break;
    case VerityMode::kKernel:
      EVS_RETURN_IF_ERROR(open_dm().Annotate("verity mode kernel"));
      m->verity_ = VerityMode::kKernel;
      break;
    case VerityMode::kUserspace:
      if (!have_fuse) return FailedPreconditionError("verity mode userspace: needs /dev/fuse");
      m->verity_ = VerityMode::kUserspace;
      break;
    case VerityMode::kAuto: {
      Status dm = open_dm();
      if (dm.ok()) {
        m->verity_ = VerityMode::kKernel;
      } else if (have_fuse) {
        m->verity_ = VerityMode::kUserspace;
      } else {
        return FailedPreconditionError("verity mode auto: neither kernel (", dm.message(),
                                       ") nor userspace (/dev/fuse missing) verification is "
                                       "available; set verity = \"off\" to run without");
      }
      break;
    }
  }

  // Probe the backing once: a file-backed mount of a tiny image, else loop.
  std::string target = JoinPath(options.scratch_dir, "probe-mnt");
  (void)evs::Unmount(target, /*detach=*/true);
  (void)::rmdir(target.c_str());
  if (::mkdir(target.c_str(), 0700) != 0) return ErrnoError(errno, StrCat("mkdir ", target));
  auto probe = MountPoint::Mount(probe_image, target, "erofs", MS_RDONLY, "");
  if (probe.ok()) {
    m->backing_ = BackingMode::kFile;
    EVS_RETURN_IF_ERROR(probe->Unmount());
  } else {
    m->backing_ = BackingMode::kLoop;
    auto loop = MountImage(probe_image, 0, target, BackingMode::kLoop);
    if (!loop.ok()) {
      ::rmdir(target.c_str());
      return FailedPreconditionError("cannot mount EROFS images here: file-backed mount failed (",
                                     probe.status().message(), "), loop mount failed (",
                                     loop.status().message(), ")");
    }
    EVS_RETURN_IF_ERROR(loop->Unmount());
  }
  ::rmdir(target.c_str());
  if (m->verity_ == VerityMode::kUserspace && m->backing_ != BackingMode::kFile) {
    return FailedPreconditionError(
        "verity mode userspace needs file-backed EROFS mounts (Linux 6.12+); this kernel only "
        "mounts EROFS from block devices: use kernel verification");
  }
  EVS_LOG(kInfo) << "layer mounts" << Kv("backing", BackingModeName(m->backing_))
                 << Kv("verity", VerityModeName(m->verity_));
  return m;
}

LayerMounter::~LayerMounter() = default;

std::string LayerMounter::MountPath(int64_t layer_id) const {
  return JoinPath(mount_dir_, std::to_string(layer_id));
}

std::string LayerMounter::VerifiedFilePath(int64_t layer_id) const {
  return JoinPath(mount_dir_, StrCat(layer_id, ".verity"));
}

bool LayerMounter::StillMounted(const LayerRecord& layer) {
  auto existing = mounts_.find(layer.id);
  if (existing == mounts_.end()) return false;
  Mounted& m = existing->second;
  if (m.verifier <= 0 || !m.verifier_fd.valid() || !WaitExit(m.verifier_fd.get(), 0)) {
    return true;
  }
  // Its serving process is gone, so reads of the layer fail: mount it again
  // for whoever asks next.
  EVS_LOG(kError) << "the verifier process of a layer exited; mounting the layer again"
                  << Kv("layer", layer.digest) << Kv("pid", m.verifier);
  ::waitpid(m.verifier, nullptr, WNOHANG);
  m.Release();
  mounts_.erase(existing);
  return false;
}

Status LayerMounter::Mount(const LayerRecord& layer, const std::string& image_path) {
  if (StillMounted(layer)) return OkStatus();
  std::string target = MountPath(layer.id);
  Mounted mounted;
  mounted.target = target;
  if (verity_ == VerityMode::kUserspace &&
      Adopt(layer.id, kServeVerifiedLayerCommand, VerifiedFilePath(layer.id), &mounted)) {
    EVS_LOG(kInfo) << "adopted a layer its verifier process still serves"
                   << Kv("layer", layer.digest) << Kv("pid", mounted.verifier);
    mounts_[layer.id] = std::move(mounted);
    return OkStatus();
  }
  EVS_RETURN_IF_ERROR(ClearStale(layer.id));
  if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, StrCat("layer ", layer.digest, ": mkdir ", target));
  }
  Status status = [&]() -> Status {
    switch (verity_) {
      case VerityMode::kOff: {
        EVS_ASSIGN_OR_RETURN(mounted.plain,
                             MountImage(image_path, layer.image_size, target, backing_));
        return OkStatus();
      }
      case VerityMode::kKernel: {
        EVS_ASSIGN_OR_RETURN(verity::VerityDescriptor d, DescriptorOf(layer));
        EVS_ASSIGN_OR_RETURN(
            mounted.kernel, verity::DmVerityErofsMount::Mount(*dm_devices_, image_path, d, target));
        return OkStatus();
      }
      case VerityMode::kUserspace:
      case VerityMode::kAuto: {
        EVS_ASSIGN_OR_RETURN(verity::VerityDescriptor d, DescriptorOf(layer));
        if (!verifier_command_.empty()) {
          return MountWithVerifierProcess(layer, image_path, d.hash_offset, d.root_digest,
                                          &mounted);
        }
        verity::VerifiedBlockFileOptions options;
        options.threads = threads_;
        options.tree.layer_name = StrCat("layer ", layer.digest);
        EVS_ASSIGN_OR_RETURN(mounted.fuse, verity::VerifiedErofsMount::MountLayerFile(
                                               image_path, d.hash_offset, d.root_digest,
                                               VerifiedFilePath(layer.id), target, options));
        return OkStatus();
      }
    }
    return InternalError("unknown verity mode");
  }();
  if (!status.ok()) {
    ::rmdir(target.c_str());
    return status.Annotate(StrCat("layer ", layer.digest));
  }
  struct stat st;
  if (::stat(target.c_str(), &st) == 0) {
    mounted.device = StrCat(major(st.st_dev), ":", minor(st.st_dev));
  }
  mounts_[layer.id] = std::move(mounted);
  return OkStatus();
}

Status LayerMounter::MountLazy(const LayerRecord& layer, const lazy::LazyLayerArgs& args,
                               const LayerRecord* complete) {
  if (StillMounted(layer)) return OkStatus();
  if (verifier_command_.empty() && complete == nullptr) {
    return UnimplementedError("layer ", layer.digest,
                              ": lazy layers are served by a process of their own, and no "
                              "command to start one is configured");
  }
  Mounted mounted;
  mounted.target = MountPath(layer.id);
  // lazy/lazy_layer.cc keeps its FUSE file in the cache directory.
  if (Adopt(layer.id, lazy::kServeLazyLayerCommand, JoinPath(args.cache_dir, "fuse"), &mounted)) {
    EVS_LOG(kInfo) << "adopted a lazy layer its process still serves" << Kv("layer", layer.digest)
                   << Kv("pid", mounted.verifier);
    mounts_[layer.id] = std::move(mounted);
    return OkStatus();
  }
  if (complete != nullptr) {
    // Its cache is the whole layer, verified: a local layer now (issue 6:
    // no registry, no lazy machinery; dm-verity in kernel mode).
    EVS_LOG(kInfo) << "lazy layer complete; mounted from its cache like a local layer"
                   << Kv("layer", layer.digest) << Kv("verity", VerityModeName(verity_));
    return Mount(*complete, lazy::LazyLayer::LayerFile(args.cache_dir));
  }
  EVS_RETURN_IF_ERROR(ClearStale(layer.id));
  EVS_ASSIGN_OR_RETURN(PendingMount pending, StartLazy(layer, args));
  Install(std::move(pending));
  return OkStatus();
}

LayerMounter::PendingMount::PendingMount() = default;
LayerMounter::PendingMount::PendingMount(PendingMount&&) noexcept = default;
LayerMounter::PendingMount& LayerMounter::PendingMount::operator=(PendingMount&& other) noexcept {
  if (this != &other) {
    Undo();
    layer_id_ = other.layer_id_;
    pid_file_ = std::move(other.pid_file_);
    mounted_ = std::move(other.mounted_);
  }
  return *this;
}
LayerMounter::PendingMount::~PendingMount() { Undo(); }

void LayerMounter::PendingMount::Undo() {
  if (!mounted_) return;
  Status s = mounted_->Unmount();
  if (!s.ok()) {
    // Nothing uses a mount nobody was told about; the process is stuck.
    EVS_LOG(kWarning) << "lazy layer mount not undone; its process is left to Cleanup"
                      << Kv("path", mounted_->target) << Kv("error", s.ToString());
    mounted_->Release();
  } else {
    ::unlink(pid_file_.c_str());
    ::rmdir(mounted_->target.c_str());
  }
  mounted_.reset();
}

Result<LayerMounter::PendingMount> LayerMounter::StartLazy(const LayerRecord& layer,
                                                           const lazy::LazyLayerArgs& args) const {
  if (verifier_command_.empty()) {
    return UnimplementedError("layer ", layer.digest,
                              ": lazy layers are served by a process of their own, and no "
                              "command to start one is configured");
  }
  const std::string target = MountPath(layer.id);
  if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, StrCat("layer ", layer.digest, ": mkdir ", target));
  }
  auto mounted = std::make_unique<Mounted>();
  mounted->target = target;
  lazy::LazyLayerArgs serve = args;
  serve.target = target;
  Status status = StartServer(layer.id, lazy::LazyLayerArgv(serve), mounted.get());
  if (!status.ok()) {
    ::rmdir(target.c_str());
    return status.Annotate(StrCat("lazy layer ", layer.digest));
  }
  struct stat st;
  if (::stat(target.c_str(), &st) == 0) {
    mounted->device = StrCat(major(st.st_dev), ":", minor(st.st_dev));
  }
  EVS_LOG(kInfo) << "lazy layer mounted" << Kv("layer", layer.digest)
                 << Kv("repository", layer.lazy_repository) << Kv("pid", mounted->verifier);
  PendingMount pending;
  pending.layer_id_ = layer.id;
  pending.pid_file_ = PidFilePath(layer.id);
  pending.mounted_ = std::move(mounted);
  return pending;
}

void LayerMounter::Install(PendingMount pending) {
  if (!pending.mounted_) return;
  mounts_[pending.layer_id_] = std::move(*pending.mounted_);
  pending.mounted_.reset();
}

Status LayerMounter::Unmount(int64_t layer_id) {
  auto it = mounts_.find(layer_id);
  if (it == mounts_.end()) return OkStatus();
  EVS_RETURN_IF_ERROR(it->second.Unmount());
  std::string target = MountPath(layer_id);
  mounts_.erase(it);
  ::unlink(PidFilePath(layer_id).c_str());
  if (::rmdir(target.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, StrCat("rmdir ", target));
  }
  return OkStatus();
}

Status LayerMounter::UnmountAll() {
  Status first;
  std::vector<int64_t> ids;
  for (const auto& [id, m] : mounts_) ids.push_back(id);
  for (int64_t id : ids) {
    Status s = Unmount(id);
    if (!s.ok()) {
      EVS_LOG(kWarning) << "layer mount left in place" << Kv("path", MountPath(id))
                        << Kv("error", s.ToString());
      mounts_[id].Release();
      mounts_.erase(id);
      if (first.ok()) first = s;
    }
  }
  return first;
}

namespace {

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = s.find(sep, start);
    out.emplace_back(s.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

}  // namespace

std::set<int64_t> LayerMounter::LayersInUse() const {
  std::set<int64_t> used;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::istringstream fields(line);
    std::string id, parent, device, root, mountpoint;
    fields >> id >> parent >> device >> root >> mountpoint;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string fstype, source, superopts;
    tail >> fstype >> source >> superopts;
    for (const auto& [layer_id, m] : mounts_) {
      if (used.count(layer_id)) continue;
      if (!m.device.empty() && device == m.device && mountpoint != m.target) {
        used.insert(layer_id);
      }
    }
    if (fstype != "overlay") continue;
    for (const std::string& opt : Split(superopts, ',')) {
      if (opt.rfind("lowerdir=", 0) != 0) continue;
      for (const std::string& element : Split(std::string_view(opt).substr(9), ':')) {
        for (const auto& [layer_id, m] : mounts_) {
          if (element == m.target) used.insert(layer_id);
        }
      }
    }
  }
  return used;
}

Result<int> LayerMounter::ReleaseForShutdown() {
  std::set<int64_t> used = LayersInUse();
  int left = 0;
  for (int64_t id : used) {
    auto it = mounts_.find(id);
    if (it == mounts_.end()) continue;
    it->second.Release();
    mounts_.erase(it);
    ++left;
  }
  EVS_RETURN_IF_ERROR(UnmountAll());
  return left;
}

std::string LayerMounter::PidFilePath(int64_t layer_id) const {
  return JoinPath(mount_dir_, StrCat(layer_id, ".pid"));
}

Status LayerMounter::MountWithVerifierProcess(const LayerRecord& layer,
                                              const std::string& image_path, uint64_t hash_offset,
                                              const Digest& root, Mounted* mounted) {
  VerifiedLayerArgs args;
  args.layer_file = image_path;
  args.hash_offset = hash_offset;
  args.root_digest = root.ToString();
  args.fuse_file = VerifiedFilePath(layer.id);
  args.target = MountPath(layer.id);
  args.name = StrCat("layer ", layer.digest);
  args.threads = threads_;
  return StartServer(layer.id, VerifiedLayerArgv(args), mounted);
}

Status LayerMounter::StartServer(int64_t layer_id, const std::vector<std::string>& args,
                                 Mounted* mounted) const {
  std::vector<std::string> argv = verifier_command_;
  argv.insert(argv.end(), args.begin(), args.end());

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe for the verifier");
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The status pipe becomes fd 3 (dup2 clears close-on-exec).
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), 3);
  std::vector<char*> cargv;
  for (std::string& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  write_end.Reset();
  if (rc != 0) return ErrnoError(rc, StrCat("start the verifier ", argv[0]));
  // Before waiting for its status (a lazy layer's tree may take a while
  // over a slow link): a daemon killed meanwhile leaves a pid file, so the
  // next one finds the process (RemoveStale) instead of leaving it running.
  const std::string pid_file = PidFilePath(layer_id);
  (void)WriteFileAtomic(pid_file, StrCat(pid, "\n"));
  std::string status;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n > 0) {
      status.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  if (status != "ok\n") {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::unlink(pid_file.c_str());
    while (!status.empty() && status.back() == '\n') status.pop_back();
    return InternalError(args.empty() ? "" : args[0],
                         " process: ", status.empty() ? "exited without a status" : status);
  }
  mounted->verifier = pid;
  mounted->verifier_fd = PidFd(pid);
  return OkStatus();
}

bool LayerMounter::Adopt(int64_t layer_id, std::string_view command, const std::string& fuse_file,
                         Mounted* mounted) {
  if (verifier_command_.empty()) return false;
  std::string target = MountPath(layer_id);
  if (!IsMountPoint(target)) return false;
  auto text = ReadFileToString(PidFilePath(layer_id), 64);
  if (!text.ok()) return false;
  pid_t pid = static_cast<pid_t>(std::atoi(text->c_str()));
  if (pid <= 1) return false;
  // The process must be a server of that kind serving this very mount point.
  auto cmdline = ReadFileToString(StrCat("/proc/", pid, "/cmdline"), 1 << 16);
  if (!cmdline.ok()) return false;
  std::string want = std::string(command) + '\0';
  if (cmdline->find(want) == std::string::npos ||
      cmdline->find('\0' + target + '\0') == std::string::npos) {
    return false;
  }
  // Its FUSE connection must be alive: a dead one answers ENOTCONN.
  struct stat st;
  if (::stat(fuse_file.c_str(), &st) != 0) return false;
  UniqueFd pidfd = PidFd(pid);
  if (!pidfd.valid()) return false;
  if (::stat(target.c_str(), &st) == 0) {
    mounted->device = StrCat(major(st.st_dev), ":", minor(st.st_dev));
  }
  mounted->verifier = pid;
  mounted->verifier_fd = std::move(pidfd);
  return true;
}

Status LayerMounter::ClearStale(int64_t layer_id) {
  for (const std::string& path : {MountPath(layer_id), VerifiedFilePath(layer_id)}) {
    // Not IsMountPoint(): a FUSE mount whose server died fails every stat
    // (ENOTCONN). umount2 fails with EINVAL once nothing is mounted there.
    for (int stacked = 0; stacked < 64 && ::umount2(path.c_str(), MNT_DETACH) == 0; ++stacked) {
    }
  }
  ::unlink(VerifiedFilePath(layer_id).c_str());
  ::unlink(PidFilePath(layer_id).c_str());
  return OkStatus();
}

Result<int> LayerMounter::RemoveStale(const std::set<int64_t>& busy) {
  DIR* d = ::opendir(mount_dir_.c_str());
  if (d == nullptr) return ErrnoError(errno, StrCat("opendir ", mount_dir_));
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  int removed = 0;
  for (const std::string& n : names) {
    char* end = nullptr;
    long long id = std::strtoll(n.c_str(), &end, 10);
    // m/<id>, m/<id>.verity and m/<id>.pid belong to layer <id>: kept while
    // it is mounted (an adopted process's pid file included, or the next
    // start could not adopt it).
    bool ours =
        end != nullptr && end != n.c_str() &&
        (*end == '\0' || std::string_view(end) == ".verity" || std::string_view(end) == ".pid");
    if (ours && (IsMounted(id) || busy.count(id) != 0)) continue;
    std::string path = JoinPath(mount_dir_, n);
    if (ours && std::string_view(end) == ".pid") {
      // A verifier process serving a layer nothing needs: ask it to stop
      // (it unmounts and exits once no container reads the layer).
      auto text = ReadFileToString(path, 64);
      pid_t pid = text.ok() ? static_cast<pid_t>(std::atoi(text->c_str())) : 0;
      auto cmdline = ReadFileToString(StrCat("/proc/", pid, "/cmdline"), 1 << 16);
      bool server =
          cmdline.ok() &&
          (cmdline->find(std::string(kServeVerifiedLayerCommand) + '\0') != std::string::npos ||
           cmdline->find(std::string(lazy::kServeLazyLayerCommand) + '\0') != std::string::npos);
      if (pid > 1 && server && cmdline->find('\0' + MountPath(id) + '\0') != std::string::npos) {
        ::kill(pid, SIGTERM);
        UniqueFd pidfd = PidFd(pid);
        if (pidfd.valid()) WaitExit(pidfd.get(), 10000);
      }
    }
    // A daemon that was killed left its mounts; detach them (containers
    // that use them hold their own clones).
    for (int stacked = 0; stacked < 64 && ::umount2(path.c_str(), MNT_DETACH) == 0; ++stacked) {
    }
    EVS_RETURN_IF_ERROR(RemoveTree(path));
    ++removed;
  }
  return removed;
}

}  // namespace evs::snapshot
