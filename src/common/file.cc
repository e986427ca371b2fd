#include "evs/common/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <set>
#include <utility>
#include <vector>

namespace evs {

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string out(a);
  if (out.back() != '/') out += '/';
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  out += b;
  return out;
}

std::string Dirname(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string Basename(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return std::string(path);
  return std::string(path.substr(slash + 1));
}

Result<AtomicFile> AtomicFile::Create(const std::string& path, mode_t mode) {
  AtomicFile f;
  f.path_ = path;
  std::string tmpl = JoinPath(Dirname(path), StrCat(".", Basename(path), ".tmp.XXXXXX"));
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, StrCat("create temporary file for ", path));
  f.fd_.Reset(fd);
  f.temp_path_ = tmpl;
  if (::fchmod(fd, mode) != 0) return ErrnoError(errno, StrCat("chmod ", tmpl));
  return f;
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      committed_(other.committed_) {
  other.temp_path_.clear();
  other.committed_ = true;
}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    Abandon();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    committed_ = other.committed_;
    other.temp_path_.clear();
    other.committed_ = true;
  }
  return *this;
}

AtomicFile::~AtomicFile() { Abandon(); }

void AtomicFile::Abandon() {
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
  fd_.Reset();
  temp_path_.clear();
}

Status AtomicFile::Commit(bool replace) {
  if (committed_ || temp_path_.empty()) return FailedPreconditionError("commit ", path_, ": file already committed or abandoned");
  if (::fsync(fd_.get()) != 0) return ErrnoError(errno, StrCat("fsync ", temp_path_));
  if (replace) {
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
      return ErrnoError(errno, StrCat("rename ", temp_path_, " to ", path_));
  } else {
    if (::renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) != 0)
      return ErrnoError(errno, StrCat("rename ", temp_path_, " to ", path_));
  }
  committed_ = true;
  fd_.Reset();
  return FsyncDir(Dirname(path_));
}

Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  EVS_ASSIGN_OR_RETURN(AtomicFile f, AtomicFile::Create(path, mode));
  EVS_RETURN_IF_ERROR(f.Write(data));
  return f.Commit();
}

Result<std::string> ReadFileToString(const std::string& path, size_t max_size) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    EVS_ASSIGN_OR_RETURN(size_t n, ReadFull(fd.get(), buf, sizeof buf, path));
    if (out.size() + n > max_size)
      return ResourceExhaustedError(path, ": larger than ", max_size, " bytes");
    out.append(buf, n);
    if (n < sizeof buf) break;
  }
  return out;
}

Status FsyncDir(const std::string& dir) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  if (::fsync(fd.get()) != 0) return ErrnoError(errno, StrCat("fsync ", dir));
  return OkStatus();
}

Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return OkStatus();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return OkStatus();
    return FailedPreconditionError(path, ": exists and is not a directory");
  }
  std::string parent = Dirname(path);
  if (parent != path) EVS_RETURN_IF_ERROR(MakeDirs(parent, mode));
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    return ErrnoError(errno, StrCat("mkdir ", path));
  return OkStatus();
}

namespace {

// The mount a path lives on. st_dev cannot tell a bind mount of a directory
// of the same filesystem from that directory; the mount id can (Linux 5.8+).
Result<uint64_t> MountIdAt(int dirfd, const char* name, const std::string& display) {
  struct statx stx;
  if (::statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) != 0)
    return ErrnoError(errno, StrCat("statx ", display));
  return stx.stx_mnt_id;
}

Status RemoveTreeAt(int parent_fd, const std::string& name, const std::string& display, uint64_t mnt) {
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("stat ", display));
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(parent_fd, name.c_str(), 0) != 0 && errno != ENOENT)
      return ErrnoError(errno, StrCat("unlink ", display));
    return OkStatus();
  }
  EVS_ASSIGN_OR_RETURN(uint64_t id, MountIdAt(parent_fd, name.c_str(), display));
  if (id != mnt) return FailedPreconditionError(display, ": is a mount point; not removing it");
  int fd = ::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, StrCat("open ", display));
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return ErrnoError(errno, StrCat("opendir ", display));
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  Status status;
  for (const auto& n : names) {
    status = RemoveTreeAt(::dirfd(d), n, display + "/" + n, mnt);
    if (!status.ok()) break;
  }
  ::closedir(d);
  if (!status.ok()) return status;
  if (::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
    return ErrnoError(errno, StrCat("rmdir ", display));
  return OkStatus();
}

}  // namespace

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("stat ", path));
  }
  // The tree must stay on the mount of its parent, so that a mount point at
  // `path` itself is refused too.
  std::string parent = Dirname(path);
  EVS_ASSIGN_OR_RETURN(uint64_t mnt, MountIdAt(AT_FDCWD, parent.c_str(), parent));
  return RemoveTreeAt(AT_FDCWD, path, path, mnt);
}

namespace {

Status MeasureAt(int parent_fd, const char* name, const std::string& display, uint64_t mnt,
                 std::set<std::pair<dev_t, ino_t>>* seen, DiskUsage* usage) {
  struct stat st;
  if (::fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("stat ", display));
  }
  if (S_ISDIR(st.st_mode)) {
    EVS_ASSIGN_OR_RETURN(uint64_t id, MountIdAt(parent_fd, name, display));
    if (id != mnt) return OkStatus();
  }
  if (st.st_nlink > 1 && !S_ISDIR(st.st_mode)) {
    if (!seen->insert({st.st_dev, st.st_ino}).second) return OkStatus();
  }
  usage->bytes += static_cast<int64_t>(st.st_blocks) * 512;
  usage->inodes += 1;
  if (!S_ISDIR(st.st_mode)) return OkStatus();
  int fd = ::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, StrCat("open ", display));
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return ErrnoError(errno, StrCat("opendir ", display));
  }
  Status status;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    status = MeasureAt(::dirfd(d), e->d_name, display + "/" + std::string(n), mnt, seen, usage);
    if (!status.ok()) break;
  }
  ::closedir(d);
  return status;
}

}  // namespace

Result<DiskUsage> MeasureDiskUsage(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(uint64_t mnt, MountIdAt(AT_FDCWD, path.c_str(), path));
  DiskUsage usage;
  std::set<std::pair<dev_t, ino_t>> seen;
  EVS_RETURN_IF_ERROR(MeasureAt(AT_FDCWD, path.c_str(), path, mnt, &seen, &usage));
  return usage;
}

}  // namespace evs
