// Preparing the unix socket path the daemon serves on (DESIGN.md §7).
#pragma once

#include <string>

#include "evs/common/status.h"

namespace evs::plugin {

// Makes `path` ready for a listener: creates its directory (0711) if
// missing; if a live process accepts connections on it, fails with
// FailedPrecondition ("another daemon is serving on …"); removes a stale
// socket nobody listens on; refuses (FailedPrecondition) to touch a path
// that is not a socket. Also fails when the path is too long for
// sockaddr_un. Costs one connect(2).
Status PrepareSocketPath(const std::string& path);

// True when something accepts connections on the unix socket `path`.
bool SocketIsLive(const std::string& path);

}  // namespace evs::plugin
