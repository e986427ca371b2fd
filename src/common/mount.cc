#include "evs/common/mount.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "evs/common/file.h"

namespace evs {

Result<MountPoint> MountPoint::Mount(const std::string& source, const std::string& target,
                                     const std::string& fstype, unsigned long flags,
                                     const std::string& options) {
  if (::mount(source.c_str(), target.c_str(), fstype.c_str(), flags,
              options.empty() ? nullptr : options.c_str()) != 0) {
    int err = errno;
    return ErrnoError(err, StrCat("mount -t ", fstype, " ", source, " ", target,
                                  options.empty() ? "" : " -o ", options));
  }
  return MountPoint(target);
}

MountPoint& MountPoint::operator=(MountPoint&& other) noexcept {
  if (this != &other) {
    (void)Unmount();
    target_ = std::move(other.target_);
    other.target_.clear();
  }
  return *this;
}

MountPoint::~MountPoint() { (void)Unmount(); }

Status MountPoint::Unmount() {
  if (target_.empty()) return OkStatus();
  Status s = evs::Unmount(target_);
  if (s.ok()) target_.clear();
  return s;
}

std::string MountPoint::Release() {
  std::string t = std::move(target_);
  target_.clear();
  return t;
}

Status Unmount(const std::string& target, bool detach) {
  if (::umount2(target.c_str(), detach ? MNT_DETACH : 0) != 0) {
    if (errno == EINVAL || errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("umount ", target));
  }
  return OkStatus();
}

bool IsMountPoint(const std::string& path) {
  // STATX_ATTR_MOUNT_ROOT (Linux 5.8+) also catches bind mounts of a
  // directory of the same filesystem, which keep st_dev.
  struct statx stx;
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, 0, &stx) != 0) return false;
  return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
         (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

Result<LoopDevice> LoopDevice::AttachReadOnly(const std::string& file, uint64_t offset,
                                             uint64_t size_limit) {
  EVS_ASSIGN_OR_RETURN(UniqueFd backing, OpenFile(file, O_RDONLY));
  EVS_ASSIGN_OR_RETURN(UniqueFd control, OpenFile("/dev/loop-control", O_RDWR));
  // Another process can take the free device between GET_FREE and
  // CONFIGURE; then the ioctl fails with EBUSY and we ask again.
  for (int attempt = 0; attempt < 16; ++attempt) {
    int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return ErrnoError(errno, "LOOP_CTL_GET_FREE");
    std::string path = StrCat("/dev/loop", n);
    auto dev = OpenFile(path, O_RDONLY);
    if (!dev.ok()) return dev.status();
    struct loop_config config;
    std::memset(&config, 0, sizeof config);
    config.fd = static_cast<__u32>(backing.get());
    config.info.lo_offset = offset;
    config.info.lo_sizelimit = size_limit;
    config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), file.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(dev->get(), LOOP_CONFIGURE, &config) == 0) {
      LoopDevice loop;
      loop.path_ = path;
      loop.fd_ = std::move(*dev);
      return loop;
    }
    int err = errno;
    if (err == EBUSY) continue;
    if (err != EINVAL && err != ENOTTY) return ErrnoError(err, StrCat("LOOP_CONFIGURE ", path, " for ", file));
    // Kernels before 5.8: LOOP_SET_FD then LOOP_SET_STATUS64.
    if (::ioctl(dev->get(), LOOP_SET_FD, backing.get()) != 0) {
      if (errno == EBUSY) continue;
      return ErrnoError(errno, StrCat("LOOP_SET_FD ", path, " for ", file));
    }
    if (::ioctl(dev->get(), LOOP_SET_STATUS64, &config.info) != 0) {
      int e = errno;
      ::ioctl(dev->get(), LOOP_CLR_FD, 0);
      return ErrnoError(e, StrCat("LOOP_SET_STATUS64 ", path));
    }
    LoopDevice loop;
    loop.path_ = path;
    loop.fd_ = std::move(*dev);
    return loop;
  }
  return UnavailableError("no free loop device for ", file, " after 16 attempts");
}

std::string LoopDevice::Release() {
  fd_.Reset();
  return path_;
}

}  // namespace evs
