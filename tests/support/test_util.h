// Helpers shared by the tests: temporary directories, root checks, running
// commands. Tests that need root or a kernel feature call GTEST_SKIP() with
// the reason through EVS_REQUIRE_ROOT() and friends.
#pragma once

#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/common/subprocess.h"

namespace evs::testing {

// A fresh directory under $TMPDIR (default /tmp), removed recursively (after
// unmounting anything still mounted beneath it) when destroyed.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "evs-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

bool IsRoot();
// True when `fstype` is listed in /proc/filesystems.
bool KernelHasFilesystem(const std::string& fstype);
// True when `program` is found in PATH.
bool HaveProgram(const std::string& program);

// Runs a shell command line (/bin/sh -c), returning its exit code and output.
SubprocessResult Sh(const std::string& command, int timeout_ms = 600000);
// Runs it and fails the current test (ADD_FAILURE) if it exits non-zero;
// returns stdout.
std::string ShOk(const std::string& command, int timeout_ms = 600000);

// Writes `data` to `path` (creating parents), non-atomically; for fixtures.
void WriteFile(const std::string& path, const std::string& data);
std::string ReadFileOrDie(const std::string& path);

// SIGKILLs every process (but this one) whose command line mentions
// `needle`, e.g. a test's scratch directory, and waits until they are gone.
// For processes a test started indirectly and that outlive their parent by
// design (the daemon's per-layer verifier processes). Returns how many.
int KillProcessesMentioning(const std::string& needle);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Directory of the source tree and of the build tree (set by CMake).
std::string SourceDir();
std::string BuildDir();

}  // namespace evs::testing

#define EVS_REQUIRE_ROOT()                                          \
  do {                                                              \
    if (!::evs::testing::IsRoot()) GTEST_SKIP() << "needs root";    \
  } while (0)

#define EVS_REQUIRE_PROGRAM(p)                                                       \
  do {                                                                               \
    if (!::evs::testing::HaveProgram(p)) GTEST_SKIP() << "needs " << p << " in PATH"; \
  } while (0)
