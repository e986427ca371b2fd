#include "evs/verity/dm_verity.h"

#include <libdevmapper.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <vector>

#include "evs/common/log.h"

namespace evs::verity {

Result<CorruptionPolicy> ParseCorruptionPolicy(std::string_view text) {
  if (text == "eio" || text.empty()) return CorruptionPolicy::kFailRead;
  if (text == "ignore") return CorruptionPolicy::kIgnore;
  if (text == "restart") return CorruptionPolicy::kRestart;
  if (text == "panic") return CorruptionPolicy::kPanic;
  return InvalidArgumentError("verity corruption policy \"", text,
                              "\" (want eio, ignore, restart or panic)");
}

Result<DmVerityTable> DmVerityTable::ForLayer(const VerityDescriptor& descriptor,
                                              const std::string& device, DmVerityOptions options) {
  EVS_ASSIGN_OR_RETURN(TreeLayout layout,
                       TreeLayout::Compute(descriptor.params, descriptor.hash_offset));
  if (descriptor.root_digest.empty()) {
    return InvalidArgumentError("dm-verity table for ", device, ": no root digest");
  }
  DmVerityTable t;
  t.data_device = device;
  t.hash_device = device;
  t.params = descriptor.params;
  // Counted in hash blocks from the start of the hash device, after the
  // superblock (reference §4.1, cryptsetup VERITY_hash_offset_block).
  t.hash_start_block = layout.hash_start_block;
  t.root_hex = descriptor.root_digest.hex();
  t.options = options;
  return t;
}

uint64_t DmVerityTable::length_sectors() const {
  return params.data_blocks * params.data_block_size / 512;
}

std::string DmVerityTable::TargetParams() const {
  std::string out =
      StrCat(params.hash_type, " ", data_device, " ", hash_device, " ", params.data_block_size, " ",
             params.hash_block_size, " ", params.data_blocks, " ", hash_start_block, " ",
             HashAlgorithmName(params.algorithm), " ", root_hex, " ", SaltHex(params.salt));
  // Optional arguments: a count, then the flags (§4.3, as cryptsetup emits
  // them).
  std::vector<std::string> opts;
  switch (options.on_corruption) {
    case CorruptionPolicy::kFailRead:
      break;
    case CorruptionPolicy::kIgnore:
      opts.push_back("ignore_corruption");
      break;
    case CorruptionPolicy::kRestart:
      opts.push_back("restart_on_corruption");
      break;
    case CorruptionPolicy::kPanic:
      opts.push_back("panic_on_corruption");
      break;
  }
  if (options.check_at_most_once) opts.push_back("check_at_most_once");
  if (!opts.empty()) {
    out += StrCat(" ", opts.size());
    for (const auto& o : opts) out += " " + o;
  }
  return out;
}

std::string DmVerityTable::ToString() const {
  return StrCat("0 ", length_sectors(), " verity ", TargetParams());
}

std::string DmVerityDeviceName(const Digest& root_digest) {
  return "evs-verity-" + root_digest.hex();
}

namespace {

std::string DmUuid(const std::string& name) {
  // "evs-verity-<hex>" → "EVS-VERITY-<hex>": the prefix marks devices as
  // ours (cryptsetup uses "CRYPT-VERITY-").
  return "EVS-VERITY-" + name.substr(std::string("evs-verity-").size());
}

// libdevmapper's messages go to our log instead of stderr.
void DmLog(int level, const char* file, int line, int dm_errno, const char* f, ...) {
  (void)file;
  (void)line;
  (void)dm_errno;
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  if (level <= 3) {  // _LOG_ERR
    EVS_LOG(kWarning) << "libdevmapper: " << buf;
  } else {
    EVS_LOG(kDebug) << "libdevmapper: " << buf;
  }
}

struct DmTask {
  explicit DmTask(int type) : task(dm_task_create(type)) {}
  ~DmTask() {
    if (task) dm_task_destroy(task);
  }
  dm_task* task;
};

class LibDevmapper : public DeviceMapper {
 public:
  LibDevmapper() {
    dm_log_with_errno_init(DmLog);
    // Without a udev daemon (containers, minimal hosts) libdm creates the
    // /dev/mapper node itself.
    if (::access("/run/udev/control", F_OK) != 0) dm_udev_set_sync_support(0);
  }

  Status CreateReadOnly(const std::string& name, const std::string& uuid, uint64_t length,
                        const std::string& target_type, const std::string& params) override {
    std::lock_guard<std::mutex> lock(mu_);
    DmTask t(DM_DEVICE_CREATE);
    if (!t.task) return InternalError("dm_task_create for ", name);
    uint32_t cookie = 0;
    // The sequence cryptsetup uses (reference §4.3, _dm_create_device).
    if (!dm_task_set_name(t.task, name.c_str()) || !dm_task_set_uuid(t.task, uuid.c_str()) ||
        !dm_task_set_ro(t.task) ||
        !dm_task_add_target(t.task, 0, length, target_type.c_str(), params.c_str()) ||
        !dm_task_set_add_node(t.task, DM_ADD_NODE_ON_CREATE) ||
        !dm_task_set_cookie(t.task, &cookie, 0)) {
      return InternalError("prepare device-mapper create of ", name);
    }
    int ok = dm_task_run(t.task);
    dm_udev_wait(cookie);
    if (!ok) {
      auto exists = ExistsLocked(name);
      if (exists.ok() && *exists) {
        return AlreadyExistsError("device-mapper device ", name, " exists");
      }
      return InternalError("device-mapper create of ", name, " (", target_type, " ", params,
                           ") failed; see the libdevmapper log line before this");
    }
    return OkStatus();
  }

  Status Remove(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto exists = ExistsLocked(name);
    if (exists.ok() && !*exists) {
      return NotFoundError("device-mapper device ", name);
    }
    DmTask t(DM_DEVICE_REMOVE);
    uint32_t cookie = 0;
    if (!t.task || !dm_task_set_name(t.task, name.c_str()) || !dm_task_retry_remove(t.task) ||
        !dm_task_set_cookie(t.task, &cookie, 0)) {
      return InternalError("prepare device-mapper remove of ", name);
    }
    int ok = dm_task_run(t.task);
    dm_udev_wait(cookie);
    if (!ok) return InternalError("device-mapper remove of ", name, " failed (still open?)");
    return OkStatus();
  }

  Result<bool> Exists(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    return ExistsLocked(name);
  }

 private:
  Result<bool> ExistsLocked(const std::string& name) {
    DmTask t(DM_DEVICE_INFO);
    dm_info info{};
    if (!t.task || !dm_task_set_name(t.task, name.c_str()) || !dm_task_run(t.task) ||
        !dm_task_get_info(t.task, &info)) {
      return InternalError("device-mapper info of ", name);
    }
    return info.exists != 0;
  }

  std::mutex mu_;
};

}  // namespace

Result<std::unique_ptr<DeviceMapper>> OpenDeviceMapper() {
  if (::access("/dev/mapper/control", R_OK | W_OK) != 0) {
    return FailedPreconditionError(
        "no device-mapper: /dev/mapper/control is missing (kernel without CONFIG_BLK_DEV_DM, "
        "or not root); use userspace verification");
  }
  return std::unique_ptr<DeviceMapper>(new LibDevmapper());
}

// --- shared devices ---------------------------------------------------------

DmVerityDevice::DmVerityDevice(DmVerityDevice&& other) noexcept
    : owner_(other.owner_), name_(std::move(other.name_)), path_(std::move(other.path_)) {
  other.owner_ = nullptr;
}

DmVerityDevice& DmVerityDevice::operator=(DmVerityDevice&& other) noexcept {
  if (this != &other) {
    (void)Release();
    owner_ = other.owner_;
    name_ = std::move(other.name_);
    path_ = std::move(other.path_);
    other.owner_ = nullptr;
  }
  return *this;
}

DmVerityDevice::~DmVerityDevice() {
  Status st = Release();
  if (!st.ok()) {
    EVS_LOG(kWarning) << "dm-verity device not removed" << Kv("device", name_)
                      << Kv("error", st.message());
  }
}

Status DmVerityDevice::Release() {
  if (owner_ == nullptr) return OkStatus();
  DmVerityDevices* owner = owner_;
  owner_ = nullptr;
  return owner->Drop(name_);
}

DmVerityDevices::DmVerityDevices(DeviceMapper* dm, DmVerityOptions options)
    : dm_(dm), options_(options) {}

int DmVerityDevices::users(const Digest& root_digest) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = users_.find(DmVerityDeviceName(root_digest));
  return it == users_.end() ? 0 : it->second;
}

Result<DmVerityDevice> DmVerityDevices::Acquire(const std::string& layer_file,
                                                const VerityDescriptor& descriptor) {
  const std::string name = DmVerityDeviceName(descriptor.root_digest);
  std::lock_guard<std::mutex> lock(mu_);
  DmVerityDevice device;
  device.name_ = name;
  device.path_ = dm_->DevicePath(name);
  auto it = users_.find(name);
  if (it != users_.end()) {
    ++it->second;
    device.owner_ = this;
    return device;
  }
  EVS_ASSIGN_OR_RETURN(bool exists, dm_->Exists(name));
  if (exists) {
    // Left by an earlier run of the daemon (same root digest, so the same
    // bytes): adopt it rather than fail.
    EVS_LOG(kInfo) << "adopting existing dm-verity device" << Kv("device", name)
                   << Kv("layer", layer_file);
  } else {
    EVS_ASSIGN_OR_RETURN(LoopDevice loop, LoopDevice::AttachReadOnly(layer_file));
    EVS_ASSIGN_OR_RETURN(DmVerityTable table,
                         DmVerityTable::ForLayer(descriptor, loop.path(), options_));
    Status created = dm_->CreateReadOnly(name, DmUuid(name), table.length_sectors(), "verity",
                                         table.TargetParams());
    if (!created.ok()) {
      return created.Annotate(
          StrCat("layer ", layer_file, ": dm-verity device ", name, " on ", loop.path()));
    }
    // The dm device now holds the loop device open; with autoclear the
    // kernel detaches it once the dm device is removed.
    loop.Release();
    EVS_LOG(kInfo) << "dm-verity device created" << Kv("device", name) << Kv("layer", layer_file)
                   << Kv("table", table.ToString());
  }
  users_[name] = 1;
  device.owner_ = this;
  return device;
}

Status DmVerityDevices::Drop(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = users_.find(name);
  if (it == users_.end()) return InternalError("dm-verity device ", name, " released twice");
  if (--it->second > 0) return OkStatus();
  users_.erase(it);
  Status st = dm_->Remove(name);
  if (st.code() == Code::kNotFound) return OkStatus();
  return st;
}

// --- EROFS on the device -----------------------------------------------------

Result<std::unique_ptr<DmVerityErofsMount>> DmVerityErofsMount::Mount(
    DmVerityDevices& devices, const std::string& layer_file, const VerityDescriptor& descriptor,
    const std::string& target, const std::string& erofs_options) {
  std::unique_ptr<DmVerityErofsMount> m(new DmVerityErofsMount());
  EVS_ASSIGN_OR_RETURN(m->device_, devices.Acquire(layer_file, descriptor));
  EVS_ASSIGN_OR_RETURN(
      m->mount_, MountPoint::Mount(m->device_.path(), target, "erofs", MS_RDONLY, erofs_options));
  return m;
}

DmVerityErofsMount::~DmVerityErofsMount() = default;

Status DmVerityErofsMount::Unmount() {
  EVS_RETURN_IF_ERROR(mount_.Unmount());
  return device_.Release();
}

}  // namespace evs::verity
