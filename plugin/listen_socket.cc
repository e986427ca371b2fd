#include "listen_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/log.h"

namespace evs::plugin {

bool SocketIsLive(const std::string& path) {
  struct sockaddr_un addr;
  if (path.size() >= sizeof addr.sun_path) return false;
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return ::connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) == 0;
}

Status PrepareSocketPath(const std::string& path) {
  struct sockaddr_un addr;
  if (path.size() >= sizeof addr.sun_path) {
    return InvalidArgumentError("socket path ", path, " is longer than ", sizeof addr.sun_path - 1,
                                " bytes");
  }
  std::string dir = Dirname(path);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    EVS_RETURN_IF_ERROR(MakeDirs(dir, 0711));
  }
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return OkStatus();
    return ErrnoError(errno, StrCat("stat ", path));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return FailedPreconditionError(path, " exists and is not a socket; not replacing it");
  }
  if (SocketIsLive(path)) {
    return FailedPreconditionError("another daemon is serving on ", path,
                                   "; stop it first (or choose another --address)");
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, StrCat("remove stale socket ", path));
  }
  EVS_LOG(kInfo) << "removed stale socket" << Kv("path", path);
  return OkStatus();
}

}  // namespace evs::plugin
