#include "evs/tar/entry.h"

namespace evs {

const char* EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kRegular:
      return "regular";
    case EntryType::kDirectory:
      return "directory";
    case EntryType::kSymlink:
      return "symlink";
    case EntryType::kHardlink:
      return "hardlink";
    case EntryType::kCharDevice:
      return "char device";
    case EntryType::kBlockDevice:
      return "block device";
    case EntryType::kFifo:
      return "fifo";
    case EntryType::kSocket:
      return "socket";
    case EntryType::kOpaqueMarker:
      return "opaque marker";
  }
  return "unknown";
}

}  // namespace evs
