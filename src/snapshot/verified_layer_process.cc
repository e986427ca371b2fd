#include "evs/snapshot/verified_layer_process.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>

#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/log.h"
#include "evs/verity/verified_block_file.h"

namespace evs::snapshot {

std::vector<std::string> VerifiedLayerArgv(const VerifiedLayerArgs& a) {
  return {kServeVerifiedLayerCommand,
          a.layer_file,
          std::to_string(a.hash_offset),
          a.root_digest,
          a.fuse_file,
          a.target,
          a.name,
          std::to_string(a.threads)};
}

Result<VerifiedLayerArgs> ParseVerifiedLayerArgv(const std::vector<std::string>& argv) {
  if (argv.size() != 8 || argv[0] != kServeVerifiedLayerCommand) {
    return InvalidArgumentError(kServeVerifiedLayerCommand,
                                ": want LAYER_FILE HASH_OFFSET ROOT_DIGEST FUSE_FILE TARGET NAME "
                                "THREADS");
  }
  VerifiedLayerArgs a;
  a.layer_file = argv[1];
  char* end = nullptr;
  a.hash_offset = std::strtoull(argv[2].c_str(), &end, 10);
  if (argv[2].empty() || *end != '\0') return InvalidArgumentError("hash offset \"", argv[2], "\"");
  a.root_digest = argv[3];
  EVS_RETURN_IF_ERROR(Digest::Parse(a.root_digest).status());
  a.fuse_file = argv[4];
  a.target = argv[5];
  a.name = argv[6];
  a.threads = std::atoi(argv[7].c_str());
  if (a.threads < 1 || a.threads > 64) return InvalidArgumentError("threads \"", argv[7], "\"");
  return a;
}

int ServeVerifiedLayer(const VerifiedLayerArgs& args, int status_fd) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::setsid();

  auto report = [&](const std::string& line) {
    (void)WriteAll(status_fd, line.data(), line.size(), "status pipe");
    ::close(status_fd);
  };
  auto root = Digest::Parse(args.root_digest);
  if (!root.ok()) {
    report("error: " + root.status().ToString() + "\n");
    return 1;
  }
  verity::VerifiedBlockFileOptions options;
  options.threads = args.threads;
  options.tree.layer_name = args.name;
  auto mount = verity::VerifiedErofsMount::MountLayerFile(args.layer_file, args.hash_offset, *root,
                                                          args.fuse_file, args.target, options);
  if (!mount.ok()) {
    report("error: " + mount.status().ToString() + "\n");
    return 1;
  }
  report("ok\n");

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0 || sig == SIGHUP) continue;
    break;
  }
  // Released when no overlay reads the layer any more; until then keep
  // serving (the reads of a running container must not fail).
  bool said = false;
  for (;;) {
    Status s = (*mount)->Unmount();
    if (s.ok()) return 0;
    if (!said) {
      EVS_LOG(kInfo) << "layer still in use; serving until it is released" << Kv("layer", args.name)
                     << Kv("reason", s.message());
      said = true;
    }
    struct timespec second = {1, 0};
    int sig = sigtimedwait(&signals, nullptr, &second);
    if (sig == SIGINT) return 1;  // asked twice: give up, the kernel detaches on exit
  }
}

}  // namespace evs::snapshot
