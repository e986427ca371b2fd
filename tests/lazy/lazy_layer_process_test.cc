// A lazy layer served by a process of its own (lazy_layer_process.h): the
// layer stays readable — cached and uncached files — when the process that
// started it is gone, and the server stops only once the layer is released.
#include "evs/lazy/lazy_layer_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "lazy_test_util.h"
#include "local_registry.h"
#include "test_util.h"

extern char** environ;

namespace evs::lazy {
namespace {

using evs::testing::LocalRegistry;
using evs::testing::TempDir;

TEST(LazyLayerArgv, RoundTrips) {
  LazyLayerArgs a;
  a.layer.repository = *oci::Reference::Parse("registry.example:5000/team/app");
  a.layer.descriptor.digest = Digest::Sha256Of("blob");
  a.layer.descriptor.size = 123 * 4096;
  a.layer.verity.root_digest = Digest::Sha256Of("root");
  a.layer.verity.hash_offset = 100 * 4096;
  a.layer.verity.block_size = 4096;
  a.cache_dir = "/var/lib/containerd-evs/cache/abc";
  a.target = "/var/lib/containerd-evs/m/7";
  a.docker_config = "/etc/containerd-evs/docker-config.json";
  a.node_dir = "/var/lib/containerd-evs/lazy";
  a.fetch_size = 1u << 20;
  a.background = false;
  auto argv = LazyLayerArgv(a);
  auto b = ParseLazyLayerArgv(argv);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->layer.repository.Name(), "registry.example:5000/team/app");
  EXPECT_EQ(b->layer.descriptor.digest, a.layer.descriptor.digest);
  EXPECT_EQ(b->layer.descriptor.size, a.layer.descriptor.size);
  EXPECT_EQ(b->layer.verity, a.layer.verity);
  EXPECT_EQ(b->cache_dir, a.cache_dir);
  EXPECT_EQ(b->target, a.target);
  EXPECT_EQ(b->hosts_dir, "");
  EXPECT_EQ(b->docker_config, a.docker_config);
  EXPECT_EQ(b->node_dir, a.node_dir);
  EXPECT_EQ(b->fetch_size, a.fetch_size);
  EXPECT_FALSE(b->background);

  auto bad = argv;
  bad[5] = "4097";  // hash offset not a multiple of the block size
  EXPECT_EQ(ParseLazyLayerArgv(bad).status().code(), Code::kInvalidArgument);
  bad = argv;
  bad[3] = "12x";
  EXPECT_EQ(ParseLazyLayerArgv(bad).status().code(), Code::kInvalidArgument);
  bad = argv;
  bad.pop_back();
  EXPECT_EQ(ParseLazyLayerArgv(bad).status().code(), Code::kInvalidArgument);
}

// Starts lazy_layer_server with a status pipe; returns its pid and the
// status line.
pid_t StartServer(const std::vector<std::string>& args, std::string* status) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 3);
  std::vector<std::string> argv = {evs::testing::BuildDir() + "/tests/lazy/lazy_layer_server", "3"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c;
  for (auto& a : argv) c.push_back(a.data());
  c.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, c[0], &actions, nullptr, c.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return -1;
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) status->append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  return pid;
}

bool Exited(pid_t pid) {
  int status;
  return ::waitpid(pid, &status, WNOHANG) == pid;
}

TEST(LazyLayerProcess, ServesWithoutItsStarterAndStopsOnlyOnceReleased) {
  EVS_REQUIRE_ROOT();
  EVS_REQUIRE_LOCAL_REGISTRY();
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";
  if (!evs::testing::KernelHasFilesystem("erofs")) GTEST_SKIP() << "kernel lacks erofs";
  TempDir dir("evs-lazy-process");
  auto registry = LocalRegistry::Start();
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  auto client = testing::NewClient();
  auto layer = testing::MakeLazyTestLayer(*client, (*registry)->host(), "proc/app", dir.path());
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  client.reset();  // the "daemon" is gone: the server has its own client

  LazyLayerArgs args;
  args.layer = layer->layer;
  args.cache_dir = dir.Join("cache");
  args.target = dir.Join("mnt");
  args.background = false;  // so that there is something left to fetch below
  ASSERT_TRUE(MakeDirs(args.target).ok());
  std::string status;
  const pid_t pid = StartServer(LazyLayerArgv(args), &status);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(status, "ok\n");
  EXPECT_TRUE(IsMountPoint(args.target));

  auto read = [&](const std::string& path) {
    auto got = ReadFileToString(JoinPath(args.target, path), 64u << 20);
    return got.ok() && *got == layer->files.at(path);
  };
  EXPECT_TRUE(read("small/f2/20.txt"));
  UniqueFd held(::open(JoinPath(args.target, "big/blob.bin").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(held.valid());

  // Asked to stop while a file is open: it keeps serving, misses included.
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(Exited(pid));
  std::string tail(4096, '\0');
  const uint64_t at = (4u << 20) - 4096;
  ASSERT_EQ(::pread(held.get(), tail.data(), tail.size(), static_cast<off_t>(at)), 4096);
  EXPECT_TRUE(tail == layer->files.at("big/blob.bin").substr(at, 4096));
  EXPECT_TRUE(read("mid/target.bin"));

  // Released: it unmounts and exits.
  held.Reset();
  bool exited = false;
  for (int i = 0; i < 200 && !exited; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    exited = Exited(pid);
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  EXPECT_TRUE(exited) << "stops within 10 s of the layer being released";
  EXPECT_FALSE(IsMountPoint(args.target));
  // What it fetched stays in the cache for the next attach.
  auto cache_bitmap = ReadFileToString(JoinPath(args.cache_dir, "blocks"), 1u << 20);
  EXPECT_TRUE(cache_bitmap.ok());
}

}  // namespace
}  // namespace evs::lazy
