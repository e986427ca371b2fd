// The vocabulary of containerd's snapshots API, independent of gRPC: kinds,
// snapshot info, usage, mounts and labels (containerd snapshots/snapshotter.go;
// reference/remote-snapshotters.md §1).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/status.h"

namespace evs::snapshot {

// Values are containerd's wire enum (snapshots.proto `Kind`).
enum class Kind { kUnknown = 0, kView = 1, kActive = 2, kCommitted = 3 };

// "view", "active", "committed" (what containerd's filters compare against),
// "unknown" otherwise.
std::string_view KindName(Kind kind);

using Labels = std::map<std::string, std::string>;

// containerd's limit: a label's key and value together are at most 4096
// bytes (containerd labels/validate.go).
inline constexpr size_t kMaxLabelSize = 4096;

// OK when every label fits kMaxLabelSize; otherwise InvalidArgument naming
// the first 64 bytes of the offending key. Costs O(number of labels).
Status ValidateLabels(const Labels& labels);

// What Stat, Update and List report about a snapshot.
struct Info {
  std::string name;    // the key (active, view) or the committed name
  std::string parent;  // name of the committed parent, "" for none
  Kind kind = Kind::kUnknown;
  int64_t created_ns = 0;  // Unix time in nanoseconds, UTC
  int64_t updated_ns = 0;
  Labels labels;  // never holds an empty value (containerd drops them)
};

// Disk usage of a snapshot: allocated bytes and inode count.
struct Usage {
  int64_t size = 0;
  int64_t inodes = 0;
};

// One mount(2) call handed to containerd (containerd.types.Mount).
struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;

  bool operator==(const Mount& other) const = default;
};

}  // namespace evs::snapshot
