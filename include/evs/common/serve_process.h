// The life of a per-layer serving process — `serve-verified-layer`
// (snapshot/verified_layer_process.h) and `serve-lazy-layer`
// (lazy/lazy_layer_process.h): a session of its own, so that it outlives the
// daemon that started it; SIGTERM, SIGINT and SIGHUP taken synchronously;
// one status line to its starter; then serving until asked to stop and
// until its mount is released (docs/snapshotter.md, "Restarts").
#pragma once

#include <signal.h>

#include <functional>
#include <string>
#include <string_view>

#include "evs/common/status.h"

namespace evs {

class ServeProcess {
 public:
  // Blocks the three signals in this thread (threads started later inherit
  // the mask) and starts a new session. `status_fd`: the starter's pipe.
  explicit ServeProcess(int status_fd);

  // Writes `line` and a newline to the starter, then closes the pipe.
  void Report(std::string_view line);

  // Waits for SIGTERM or SIGINT (SIGHUP is ignored), then calls `release`
  // once a second until it succeeds — the layer is still mounted while an
  // overlay reads it, and a running container's reads must not fail —
  // logging `busy_message` (with `layer`) once. Returns 0 when released, 1
  // when a second SIGINT gives up (the kernel detaches on exit).
  int ServeUntilReleased(const std::function<Status()>& release, std::string_view busy_message,
                         std::string_view layer);

 private:
  int status_fd_;
  sigset_t signals_;
};

}  // namespace evs
