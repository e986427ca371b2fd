#include "evs/common/serve_process.h"

#include <time.h>
#include <unistd.h>

#include "evs/common/fd.h"
#include "evs/common/log.h"

namespace evs {

ServeProcess::ServeProcess(int status_fd) : status_fd_(status_fd) {
  sigemptyset(&signals_);
  sigaddset(&signals_, SIGTERM);
  sigaddset(&signals_, SIGINT);
  sigaddset(&signals_, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
  ::setsid();
}

void ServeProcess::Report(std::string_view line) {
  if (status_fd_ < 0) return;
  std::string out(line);
  out += '\n';
  (void)WriteAll(status_fd_, out.data(), out.size(), "status pipe");
  ::close(status_fd_);
  status_fd_ = -1;
}

int ServeProcess::ServeUntilReleased(const std::function<Status()>& release,
                                     std::string_view busy_message, std::string_view layer) {
  for (;;) {
    int sig = 0;
    if (sigwait(&signals_, &sig) != 0 || sig == SIGHUP) continue;
    break;
  }
  bool said = false;
  for (;;) {
    Status s = release();
    if (s.ok()) return 0;
    if (!said) {
      EVS_LOG(kInfo) << busy_message << Kv("layer", layer) << Kv("reason", s.message());
      said = true;
    }
    struct timespec second = {1, 0};
    int sig = sigtimedwait(&signals_, nullptr, &second);
    if (sig == SIGINT) return 1;  // asked twice: give up, the kernel detaches on exit
  }
}

}  // namespace evs
