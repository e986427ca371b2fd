// Files that are either complete or absent: every write goes to a temporary
// name in the target's directory, is fsynced, and is renamed into place; a
// failure half-way leaves nothing behind (DESIGN.md §3).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs {

// A file being written under a temporary name beside `path`. Commit() fsyncs
// it, renames it to `path` and fsyncs the directory. If the object is
// destroyed before Commit() succeeds, the temporary file is removed.
class AtomicFile {
 public:
  // Creates "<dir>/.<basename>.tmp.XXXXXX" with `mode`.
  static Result<AtomicFile> Create(const std::string& path, mode_t mode = 0644);

  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  ~AtomicFile();

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

  Status Write(const void* data, size_t n) { return WriteAll(fd(), data, n, temp_path_); }
  Status Write(std::string_view data) { return Write(data.data(), data.size()); }

  // fsync, rename over `path`, fsync the directory. With `replace` false an
  // existing `path` is an AlreadyExists error (renameat2 RENAME_NOREPLACE).
  Status Commit(bool replace = true);
  // Removes the temporary file now.
  void Abandon();

 private:
  AtomicFile() = default;
  UniqueFd fd_;
  std::string path_;
  std::string temp_path_;
  bool committed_ = false;
};

// Writes `data` to `path` atomically.
Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644);

// Reads a whole file; fails with ResourceExhausted beyond `max_size` bytes.
Result<std::string> ReadFileToString(const std::string& path, size_t max_size = 64u << 20);

// fsync(2) of a directory, so that a rename or create in it is durable.
Status FsyncDir(const std::string& dir);

// mkdir -p with `mode` for the directories it creates.
Status MakeDirs(const std::string& path, mode_t mode = 0755);

// rm -rf that does not cross mount points: a directory that is a mount point
// is an error (FailedPrecondition) instead of having its contents deleted.
// A missing path is OK.
Status RemoveTree(const std::string& path);

// Sum of allocated bytes (st_blocks·512) and count of inodes under `path`,
// not crossing mount points; hardlinked inodes counted once.
struct DiskUsage {
  int64_t bytes = 0;
  int64_t inodes = 0;
};
Result<DiskUsage> MeasureDiskUsage(const std::string& path);

// Path helpers. JoinPath("a", "b") == "a/b"; Dirname("a/b") == "a";
// Basename("a/b") == "b".
std::string JoinPath(std::string_view a, std::string_view b);
std::string Dirname(std::string_view path);
std::string Basename(std::string_view path);

}  // namespace evs
