#include "evs/common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "evs/common/fd.h"

extern char** environ;

namespace evs {

namespace {

// Blocks SIGPIPE in this thread while it lives and discards one raised
// meanwhile: a child that exits without reading its stdin must not kill the
// whole process when we write to it (the write fails with EPIPE instead).
// SIGPIPE from a pipe write is directed at the writing thread, so the mask
// of this thread is enough.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  }
  ~SigpipeBlock() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    timespec zero{0, 0};
    while (sigtimedwait(&pipe, nullptr, &zero) > 0 || errno == EINTR) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
};

}  // namespace

Result<SubprocessResult> RunSubprocess(const std::vector<std::string>& argv,
                                       const std::string& stdin_data, int timeout_ms,
                                       size_t max_output) {
  if (argv.empty()) return InvalidArgumentError("RunSubprocess: empty argv");
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd in_r(in_pipe[0]), in_w(in_pipe[1]);
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return ErrnoError(rc, StrCat("run ", argv[0]));
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();
  ::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);

  SigpipeBlock no_sigpipe;
  SubprocessResult result;
  size_t in_pos = 0;
  if (stdin_data.empty()) in_w.Reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  while (out_r.valid() || err_r.valid()) {
    struct pollfd fds[3];
    int nfds = 0;
    int idx_out = -1, idx_err = -1, idx_in = -1;
    if (out_r.valid()) { idx_out = nfds; fds[nfds++] = {out_r.get(), POLLIN, 0}; }
    if (err_r.valid()) { idx_err = nfds; fds[nfds++] = {err_r.get(), POLLIN, 0}; }
    if (in_w.valid()) { idx_in = nfds; fds[nfds++] = {in_w.get(), POLLOUT, 0}; }
    int wait_ms = -1;
    if (timeout_ms > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) { timed_out = true; break; }
      wait_ms = static_cast<int>(left);
    }
    int r = ::poll(fds, nfds, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto drain = [&](int idx, UniqueFd& fd, std::string& sink) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      char buf[16384];
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n <= 0) { fd.Reset(); return; }
      if (sink.size() < max_output) sink.append(buf, std::min<size_t>(n, max_output - sink.size()));
    };
    drain(idx_out, out_r, result.stdout_data);
    drain(idx_err, err_r, result.stderr_data);
    if (idx_in >= 0 && (fds[idx_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(in_w.get(), stdin_data.data() + in_pos, stdin_data.size() - in_pos);
      if (n < 0 && errno != EAGAIN) in_w.Reset();
      if (n > 0) in_pos += static_cast<size_t>(n);
      if (in_pos == stdin_data.size()) in_w.Reset();
    }
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    return Status(Code::kDeadlineExceeded, StrCat(argv[0], ": did not finish within ", timeout_ms, " ms"));
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

}  // namespace evs
