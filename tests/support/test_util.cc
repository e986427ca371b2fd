#include "test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "evs/common/file.h"

namespace evs::testing {

TempDir::TempDir(const std::string& prefix) {
  const char* tmp = ::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + ".XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  // Unmount whatever a failed test left mounted below us, deepest first.
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> mounts;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string f[5];
    for (auto& x : f) fields >> x;
    if (f[4].rfind(path_ + "/", 0) == 0) mounts.push_back(f[4]);
  }
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  Sh("rm -rf '" + path_ + "'");
}

bool IsRoot() { return ::geteuid() == 0; }

bool KernelHasFilesystem(const std::string& fstype) {
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.rfind('\t');
    if (line.substr(tab == std::string::npos ? 0 : tab + 1) == fstype) return true;
  }
  return false;
}

bool HaveProgram(const std::string& program) {
  return Sh("command -v '" + program + "' >/dev/null 2>&1").exit_code == 0;
}

SubprocessResult Sh(const std::string& command, int timeout_ms) {
  auto r = RunSubprocess({"/bin/sh", "-c", command}, "", timeout_ms);
  if (!r.ok()) {
    SubprocessResult failed;
    failed.stderr_data = r.status().ToString();
    return failed;
  }
  return *r;
}

std::string ShOk(const std::string& command, int timeout_ms) {
  SubprocessResult r = Sh(command, timeout_ms);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "command failed (exit " << r.exit_code << "): " << command << "\nstdout: "
                  << r.stdout_data.substr(0, 4000) << "\nstderr: " << r.stderr_data.substr(0, 4000);
  }
  return r.stdout_data;
}

void WriteFile(const std::string& path, const std::string& data) {
  Status s = MakeDirs(Dirname(path));
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << "write " << path;
}

std::string ReadFileOrDie(const std::string& path) {
  auto r = ReadFileToString(path, size_t{1} << 34);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::string();
}

int KillProcessesMentioning(const std::string& needle) {
  if (needle.empty()) return 0;
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name);
    if (pid == ::getpid()) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos) pids.push_back(pid);
  }
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  for (pid_t pid : pids) {
    for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i) {
      ::waitpid(pid, nullptr, WNOHANG);  // reap it if it is our child
      ::usleep(10000);
    }
  }
  return static_cast<int>(pids.size());
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

std::string SourceDir() { return EVS_SOURCE_DIR; }
std::string BuildDir() { return EVS_BUILD_DIR; }

}  // namespace evs::testing
