// Kernel verification (DESIGN.md §5, mode `kernel`): a read-only loop device
// over the layer file, a dm-verity target on it with the table of reference
// §4.3, and EROFS mounted from /dev/mapper/<name>. The device is named after
// the root digest, so two snapshots of the same layer share one device; it
// is reference-counted and removed when its last user goes.
//
// Device-mapper is reached through the DeviceMapper interface: libdevmapper
// in production (OpenDeviceMapper), a recording fake in tests on machines
// without device-mapper.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "evs/common/mount.h"
#include "evs/common/status.h"
#include "evs/verity/format.h"

namespace evs::verity {

// What the kernel does when a block fails verification (the optional
// dm-verity arguments of reference §4.3). The default returns EIO for the
// read, like user-space mode; the others must be asked for in config.
enum class CorruptionPolicy {
  kFailRead,  // no option: the read fails with EIO
  kIgnore,    // ignore_corruption: log and return the data anyway
  kRestart,   // restart_on_corruption: reboot the machine
  kPanic,     // panic_on_corruption
};
// "eio", "ignore", "restart", "panic" (config values).
Result<CorruptionPolicy> ParseCorruptionPolicy(std::string_view text);

struct DmVerityOptions {
  CorruptionPolicy on_corruption = CorruptionPolicy::kFailRead;
  // check_at_most_once: verify each data block only on its first read
  // (what user-space mode does); off by default, as in veritysetup.
  bool check_at_most_once = false;
};

// One dm-verity table line (reference §4.3):
// "0 <sectors> verity <hash_type> <data_dev> <hash_dev> <dbs> <hbs> <blocks>
//  <hash_start_block> <alg> <root_hex> <salt_hex|-> [<n> <opt>…]".
struct DmVerityTable {
  std::string data_device;
  std::string hash_device;
  VerityParams params;
  uint64_t hash_start_block = 0;
  std::string root_hex;
  DmVerityOptions options;

  // Builds the table for a layer file whose data and tree are both reached
  // through `device` (the loop device over the whole file).
  static Result<DmVerityTable> ForLayer(const VerityDescriptor& descriptor,
                                        const std::string& device, DmVerityOptions options = {});

  uint64_t length_sectors() const;
  // The target parameters (everything after "verity").
  std::string TargetParams() const;
  // The whole line, as `dmsetup table` prints it.
  std::string ToString() const;
};

// The slice of device-mapper evs needs. Implementations must be thread-safe.
class DeviceMapper {
 public:
  virtual ~DeviceMapper() = default;
  // Creates device `name` (with `uuid`) holding one read-only target of
  // `length` sectors from sector 0, and waits until its node exists at
  // DevicePath(name). AlreadyExists if the name is taken.
  virtual Status CreateReadOnly(const std::string& name, const std::string& uuid, uint64_t length,
                                const std::string& target_type, const std::string& params) = 0;
  // Removes device `name` (retrying while udev holds it briefly). NotFound
  // if it does not exist.
  virtual Status Remove(const std::string& name) = 0;
  // Whether device `name` exists.
  virtual Result<bool> Exists(const std::string& name) = 0;
  virtual std::string DevicePath(const std::string& name) const { return "/dev/mapper/" + name; }
};

// libdevmapper. FailedPrecondition naming /dev/mapper/control when the
// kernel has no device-mapper (as on the development machine).
Result<std::unique_ptr<DeviceMapper>> OpenDeviceMapper();

// Device names: "evs-verity-<root hex>" and uuid "EVS-VERITY-<root hex>".
std::string DmVerityDeviceName(const Digest& root_digest);

class DmVerityDevices;

// One user's share of a dm-verity device. Move-only; dropping it releases
// the share, and the last share removes the device.
class DmVerityDevice {
 public:
  DmVerityDevice() = default;
  DmVerityDevice(DmVerityDevice&& other) noexcept;
  DmVerityDevice& operator=(DmVerityDevice&& other) noexcept;
  ~DmVerityDevice();

  const std::string& path() const { return path_; }  // /dev/mapper/evs-verity-…
  const std::string& name() const { return name_; }
  bool valid() const { return owner_ != nullptr; }
  // Releases this share now; the error is the device removal's, if this
  // was the last share.
  Status Release();

 private:
  friend class DmVerityDevices;
  DmVerityDevices* owner_ = nullptr;
  std::string name_;
  std::string path_;
};

// The dm-verity devices of this process, shared by root digest.
// Thread-safe.
class DmVerityDevices {
 public:
  // `dm` is not owned and must outlive this object and every device.
  explicit DmVerityDevices(DeviceMapper* dm, DmVerityOptions options = {});

  // A share of the device for the layer whose tree `descriptor` describes.
  // The first share attaches a read-only autoclear loop device to
  // `layer_file`, creates the dm-verity device on it and lets go of the
  // loop device (the kernel detaches it when the dm device is removed);
  // later shares reuse it. A device of that name left by an earlier run is
  // adopted. Errors name the layer file and device.
  Result<DmVerityDevice> Acquire(const std::string& layer_file, const VerityDescriptor& descriptor);

  // Shares held on the device of `root_digest`.
  int users(const Digest& root_digest) const;

 private:
  friend class DmVerityDevice;
  Status Drop(const std::string& name);

  DeviceMapper* dm_;
  DmVerityOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, int> users_;  // device name → shares
};

// An EROFS image mounted read-only from its dm-verity device: the kernel
// counterpart of VerifiedErofsMount. Unmounts, then releases the device.
class DmVerityErofsMount {
 public:
  static Result<std::unique_ptr<DmVerityErofsMount>> Mount(DmVerityDevices& devices,
                                                           const std::string& layer_file,
                                                           const VerityDescriptor& descriptor,
                                                           const std::string& target,
                                                           const std::string& erofs_options = "");
  ~DmVerityErofsMount();
  Status Unmount();
  const std::string& device() const { return device_.path(); }

 private:
  DmVerityErofsMount() = default;
  DmVerityDevice device_;
  MountPoint mount_;
};

}  // namespace evs::verity
