// PrepareSocketPath: never steals a live daemon's socket, replaces a stale
// one, and never deletes something that is not a socket.
#include "listen_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "evs/common/fd.h"
#include "test_util.h"

namespace evs::plugin {
namespace {

using evs::testing::TempDir;

UniqueFd Listen(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(::listen(fd.get(), 4), 0);
  return fd;
}

TEST(PrepareSocketPath, CreatesTheMissingDirectory) {
  TempDir dir;
  std::string path = dir.Join("run/evs/d.sock");
  ASSERT_TRUE(PrepareSocketPath(path).ok());
  struct stat st;
  ASSERT_EQ(::stat(dir.Join("run/evs").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST(PrepareSocketPath, ALiveDaemonsSocketIsRefusedWithAClearError) {
  TempDir dir;
  std::string path = dir.Join("d.sock");
  UniqueFd live = Listen(path);
  EXPECT_TRUE(SocketIsLive(path));
  Status s = PrepareSocketPath(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("another daemon is serving on " + path), std::string::npos);
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << "the live socket stays";
}

TEST(PrepareSocketPath, AStaleSocketIsReplaced) {
  TempDir dir;
  std::string path = dir.Join("d.sock");
  { UniqueFd gone = Listen(path); }  // closed: nobody listens any more
  EXPECT_FALSE(SocketIsLive(path));
  ASSERT_TRUE(PrepareSocketPath(path).ok());
  struct stat st;
  EXPECT_NE(::lstat(path.c_str(), &st), 0);
}

TEST(PrepareSocketPath, APathThatIsNotASocketIsLeftAlone) {
  TempDir dir;
  std::string path = dir.Join("d.sock");
  evs::testing::WriteFile(path, "precious");
  Status s = PrepareSocketPath(path);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_EQ(evs::testing::ReadFileOrDie(path), "precious");
}

TEST(PrepareSocketPath, APathTooLongForSockaddrIsInvalid) {
  EXPECT_EQ(PrepareSocketPath("/tmp/" + std::string(200, 'x')).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace evs::plugin
