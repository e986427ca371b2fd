// One filesystem object of a layer, as the EROFS writer consumes it. Produced
// by the tar layer reader (tar/layer_reader.h) and by the directory walk
// (erofs/dir_source.h), so both paths build images the same way.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace evs {

enum class EntryType {
  kRegular,
  kDirectory,
  kSymlink,
  kHardlink,    // another name for an earlier entry: see `link_target`
  kCharDevice,  // an overlayfs whiteout is a char device 0:0
  kBlockDevice,
  kFifo,
  kSocket,
  kOpaqueMarker,  // OCI ".wh..wh..opq": make directory `path` opaque
                  // (trusted.overlay.opaque=y), creating it if missing
};

const char* EntryTypeName(EntryType type);

struct LayerEntry {
  // Normalised path relative to the layer root: no leading "/" or "./", no
  // "." or ".." components, no empty components, never escaping the root.
  // The root itself is "" (a tar entry "./").
  std::string path;
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;  // permission bits including setuid/setgid/sticky (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;  // seconds since the epoch; may be negative
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;  // regular files: data length; 0 otherwise
  // kSymlink: the target as stored (may be absolute or dangling).
  // kHardlink: the normalised path of the earlier entry it names.
  std::string link_target;
  uint32_t rdev_major = 0;
  uint32_t rdev_minor = 0;
  // Extended attributes, full names ("user.x", "security.capability"),
  // sorted by name, names unique.
  std::vector<std::pair<std::string, std::string>> xattrs;

  // Offset of the entry's header in the uncompressed tar (error messages),
  // and of its data (tar-index mode maps files onto it; 512-aligned).
  // Both 0 for directory input.
  uint64_t header_offset = 0;
  uint64_t data_offset = 0;

  bool IsWhiteout() const {
    return type == EntryType::kCharDevice && rdev_major == 0 && rdev_minor == 0;
  }
};

}  // namespace evs
