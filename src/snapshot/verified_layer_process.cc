#include "evs/snapshot/verified_layer_process.h"

#include <unistd.h>

#include <cstdlib>

#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/log.h"
#include "evs/common/serve_process.h"
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
  ServeProcess process(status_fd);
  auto root = Digest::Parse(args.root_digest);
  if (!root.ok()) {
    process.Report("error: " + root.status().ToString());
    return 1;
  }
  verity::VerifiedBlockFileOptions options;
  options.threads = args.threads;
  options.tree.layer_name = args.name;
  auto mount = verity::VerifiedErofsMount::MountLayerFile(args.layer_file, args.hash_offset, *root,
                                                          args.fuse_file, args.target, options);
  if (!mount.ok()) {
    process.Report("error: " + mount.status().ToString());
    return 1;
  }
  process.Report("ok");
  return process.ServeUntilReleased([&] { return (*mount)->Unmount(); },
                                    "layer still in use; serving until it is released", args.name);
}

}  // namespace evs::snapshot
