// The directory walk (dir_source.h).
#include "evs/erofs/dir_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <utility>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/fd.h"

namespace evs::erofs {
namespace {

using XattrList = std::vector<std::pair<std::string, std::string>>;

// An xattr list read through an open descriptor (fd ≥ 0) or, for files that
// cannot be opened without side effects (symlinks, devices, fifos, sockets),
// through `proc_path` without following its last component.
Result<XattrList> ReadXattrs(int fd, const std::string& proc_path, const std::string& display) {
  XattrList out;
  std::string names(1024, '\0');
  for (;;) {
    ssize_t n = fd >= 0 ? ::flistxattr(fd, names.data(), names.size())
                        : ::llistxattr(proc_path.c_str(), names.data(), names.size());
    if (n >= 0) {
      names.resize(static_cast<size_t>(n));
      break;
    }
    if (errno == ENOTSUP) return out;
    if (errno != ERANGE) return ErrnoError(errno, StrCat("list xattrs of ", display));
    names.resize(names.size() * 4);
  }
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty()) continue;
    std::string value(256, '\0');
    for (;;) {
      ssize_t n = fd >= 0
                      ? ::fgetxattr(fd, name.c_str(), value.data(), value.size())
                      : ::lgetxattr(proc_path.c_str(), name.c_str(), value.data(), value.size());
      if (n >= 0) {
        value.resize(static_cast<size_t>(n));
        break;
      }
      if (errno == ENODATA) break;  // removed meanwhile
      if (errno != ERANGE) return ErrnoError(errno, StrCat("read xattr ", name, " of ", display));
      value.resize(std::max<size_t>(value.size() * 4, 65536));
    }
    out.emplace_back(std::move(name), std::move(value));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Applies the overlay rules of dir_source.h.
Status FilterOverlayXattrs(XattrList* xattrs, const std::string& display) {
  static constexpr std::string_view kDropped[] = {"origin", "impure", "nlink", "upper", "uuid"};
  static constexpr std::string_view kRefused[] = {"metacopy", "redirect"};
  XattrList kept;
  for (auto& x : *xattrs) {
    std::string_view name = x.first, rest;
    if (name.starts_with("trusted.overlay.")) {
      rest = name.substr(16);
    } else if (name.starts_with("user.overlay.")) {
      rest = name.substr(13);
    } else {
      kept.push_back(std::move(x));
      continue;
    }
    if (std::find(std::begin(kRefused), std::end(kRefused), rest) != std::end(kRefused))
      return FailedPreconditionError(display, ": has overlayfs xattr ", name,
                                     ", which only makes sense over its lower layers");
    if (std::find(std::begin(kDropped), std::end(kDropped), rest) != std::end(kDropped)) continue;
    kept.push_back(std::move(x));
  }
  *xattrs = std::move(kept);
  return OkStatus();
}

Result<std::vector<std::string>> ListNames(int dir_fd, const std::string& display) {
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return ErrnoError(errno, StrCat("dup ", display));
  DIR* d = ::fdopendir(dup_fd);
  if (d == nullptr) {
    int err = errno;
    ::close(dup_fd);
    return ErrnoError(err, StrCat("opendir ", display));
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoError(err, StrCat("readdir ", display));
  std::sort(names.begin(), names.end());  // byte order: std::string compares unsigned
  return names;
}

void FillAttributes(const struct stat& st, LayerEntry* e) {
  e->mode = st.st_mode & 07777;
  e->uid = st.st_uid;
  e->gid = st.st_gid;
  e->mtime = st.st_mtim.tv_sec;
  e->mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
}

struct Frame {
  UniqueFd fd;
  std::string path;  // relative to the root, "" for the root
  std::vector<std::string> names;
  size_t next = 0;
};

class Walker {
 public:
  Walker(const std::string& root, ErofsWriter* writer, const DirSourceOptions& options)
      : root_(root),
        writer_(writer),
        label_(options.input_name.empty() ? root : options.input_name) {}

  std::string Display(const std::string& rel) const {
    return rel.empty() ? label_ : label_ + "/" + rel;
  }

  Status Run() {
    EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(root_, O_RDONLY | O_DIRECTORY));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, StrCat("stat ", label_));
    LayerEntry root;
    root.type = EntryType::kDirectory;
    FillAttributes(st, &root);
    EVS_ASSIGN_OR_RETURN(root.xattrs, ReadXattrs(fd.get(), "", label_));
    EVS_RETURN_IF_ERROR(FilterOverlayXattrs(&root.xattrs, label_));
    EVS_RETURN_IF_ERROR(writer_->Add(root, nullptr));
    EVS_ASSIGN_OR_RETURN(std::vector<std::string> names, ListNames(fd.get(), label_));
    stack_.push_back({std::move(fd), "", std::move(names), 0});

    while (!stack_.empty()) {
      Frame& top = stack_.back();
      if (top.next == top.names.size()) {
        stack_.pop_back();
        continue;
      }
      // Copies: Visit() may push a frame and move `top`.
      const std::string name = top.names[top.next++];
      const std::string path = top.path.empty() ? name : top.path + "/" + name;
      EVS_RETURN_IF_ERROR(Visit(top.fd.get(), name, path));
    }
    return OkStatus();
  }

 private:
  Status Visit(int dir_fd, const std::string& name, const std::string& path) {
    const std::string display = Display(path);
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      return ErrnoError(errno, StrCat("stat ", display));
    LayerEntry e;
    e.path = path;
    FillAttributes(st, &e);
    const std::string proc_path = StrCat("/proc/self/fd/", dir_fd, "/", name);

    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, inserted] = links_.try_emplace({st.st_dev, st.st_ino}, path);
      if (!inserted) {
        LayerEntry link;
        link.path = path;
        link.type = EntryType::kHardlink;
        link.link_target = it->second;
        return writer_->Add(link, nullptr);
      }
    }

    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: {
        EVS_ASSIGN_OR_RETURN(UniqueFd fd,
                             Open(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, display));
        e.type = EntryType::kDirectory;
        EVS_ASSIGN_OR_RETURN(e.xattrs, ReadXattrs(fd.get(), "", display));
        EVS_RETURN_IF_ERROR(FilterOverlayXattrs(&e.xattrs, display));
        EVS_RETURN_IF_ERROR(writer_->Add(e, nullptr));
        EVS_ASSIGN_OR_RETURN(std::vector<std::string> names, ListNames(fd.get(), display));
        stack_.push_back({std::move(fd), path, std::move(names), 0});
        return OkStatus();
      }
      case S_IFREG: {
        EVS_ASSIGN_OR_RETURN(UniqueFd fd, Open(dir_fd, name, O_RDONLY | O_NOFOLLOW, display));
        e.type = EntryType::kRegular;
        e.size = static_cast<uint64_t>(st.st_size);
        EVS_ASSIGN_OR_RETURN(e.xattrs, ReadXattrs(fd.get(), "", display));
        EVS_RETURN_IF_ERROR(FilterOverlayXattrs(&e.xattrs, display));
        FdSource data(fd.get(), display);
        return writer_->Add(e, &data);
      }
      case S_IFLNK: {
        std::string target(4096, '\0');
        ssize_t n = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0) return ErrnoError(errno, StrCat("readlink ", display));
        if (static_cast<size_t>(n) == target.size())
          return InvalidArgumentError(display, ": symlink target longer than 4095 bytes");
        target.resize(static_cast<size_t>(n));
        e.type = EntryType::kSymlink;
        e.link_target = std::move(target);
        break;
      }
      case S_IFCHR:
      case S_IFBLK:
        e.type = S_ISCHR(st.st_mode) ? EntryType::kCharDevice : EntryType::kBlockDevice;
        e.rdev_major = major(st.st_rdev);
        e.rdev_minor = minor(st.st_rdev);
        break;
      case S_IFIFO:
        e.type = EntryType::kFifo;
        break;
      case S_IFSOCK:
        e.type = EntryType::kSocket;
        break;
      default:
        return InvalidArgumentError(display, ": unknown file type 0", std::oct, st.st_mode);
    }
    EVS_ASSIGN_OR_RETURN(e.xattrs, ReadXattrs(-1, proc_path, display));
    EVS_RETURN_IF_ERROR(FilterOverlayXattrs(&e.xattrs, display));
    return writer_->Add(e, nullptr);
  }

  static Result<UniqueFd> Open(int dir_fd, const std::string& name, int flags,
                               const std::string& display) {
    int fd = ::openat(dir_fd, name.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return ErrnoError(errno, StrCat("open ", display));
    return UniqueFd(fd);
  }

  std::string root_;
  ErofsWriter* writer_;
  std::string label_;
  std::vector<Frame> stack_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

}  // namespace

Status AddDirectory(const std::string& root, ErofsWriter* writer, const DirSourceOptions& options) {
  Walker walker(root, writer, options);
  return walker.Run();
}

}  // namespace evs::erofs
