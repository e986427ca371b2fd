// Kernel mounts and loop devices, each owned by an RAII object that undoes it.
#pragma once

#include <string>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs {

// A mount that is unmounted when the object is destroyed, unless Release()d.
class MountPoint {
 public:
  MountPoint() = default;
  // mount(2) with the given arguments; the error names source, target, type
  // and options.
  static Result<MountPoint> Mount(const std::string& source, const std::string& target,
                                  const std::string& fstype, unsigned long flags,
                                  const std::string& options);
  MountPoint(MountPoint&& other) noexcept : target_(std::move(other.target_)) {
    other.target_.clear();
  }
  MountPoint& operator=(MountPoint&& other) noexcept;
  ~MountPoint();

  const std::string& target() const { return target_; }
  bool mounted() const { return !target_.empty(); }
  // Unmounts now; the error names the target.
  Status Unmount();
  // Leaves the mount in place and forgets it.
  std::string Release();

 private:
  explicit MountPoint(std::string target) : target_(std::move(target)) {}
  std::string target_;
};

// umount2(2); EINVAL/ENOENT (not mounted) is OK. With `detach`, MNT_DETACH.
Status Unmount(const std::string& target, bool detach = false);

// True when `path` is a mount point (its st_dev differs from its parent's,
// or /proc/self/mountinfo lists it).
bool IsMountPoint(const std::string& path);

// A loop device attached read-only to a file with LO_FLAGS_AUTOCLEAR (so it
// goes away with its last user) through LOOP_CONFIGURE (LOOP_SET_FD +
// LOOP_SET_STATUS64 on kernels before 5.8). Detached on destruction unless
// Release()d; with autoclear the kernel detaches it once nothing holds it.
class LoopDevice {
 public:
  static Result<LoopDevice> AttachReadOnly(const std::string& file, uint64_t offset = 0,
                                           uint64_t size_limit = 0);
  LoopDevice() = default;
  LoopDevice(LoopDevice&&) noexcept = default;
  LoopDevice& operator=(LoopDevice&&) noexcept = default;
  ~LoopDevice() = default;  // closing fd_ lets autoclear detach it

  const std::string& path() const { return path_; }  // "/dev/loopN"
  int fd() const { return fd_.get(); }
  // Forgets the device; autoclear still detaches it when unused.
  std::string Release();

 private:
  std::string path_;
  UniqueFd fd_;
};

}  // namespace evs
