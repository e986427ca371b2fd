#include "evs/lazy/lazy_layer_process.h"

#include <unistd.h>

#include <charconv>

#include "evs/common/fd.h"
#include "evs/common/log.h"
#include "evs/common/serve_process.h"
#include "evs/lazy/background_fetcher.h"
#include "evs/lazy/lazy_layer.h"
#include "evs/registry/credentials.h"

namespace evs::lazy {
namespace {

Result<uint64_t> ParseNumber(const std::string& text, std::string_view what) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return InvalidArgumentError(kServeLazyLayerCommand, ": ", what, " \"", text,
                                "\" is not a number");
  }
  return v;
}

}  // namespace

std::vector<std::string> LazyLayerArgv(const LazyLayerArgs& a) {
  return {kServeLazyLayerCommand,
          a.layer.repository.Name(),
          a.layer.descriptor.digest.ToString(),
          std::to_string(a.layer.descriptor.size),
          a.layer.verity.root_digest.ToString(),
          std::to_string(a.layer.verity.hash_offset),
          std::to_string(a.layer.verity.block_size),
          a.cache_dir,
          a.target,
          a.hosts_dir.empty() ? "-" : a.hosts_dir,
          a.docker_config.empty() ? "-" : a.docker_config,
          a.node_dir.empty() ? "-" : a.node_dir,
          std::to_string(a.fetch_size),
          std::to_string(a.background_bandwidth),
          a.background ? "background" : "no-background"};
}

Result<LazyLayerArgs> ParseLazyLayerArgv(const std::vector<std::string>& argv) {
  if (argv.size() != 15 || argv[0] != kServeLazyLayerCommand) {
    return InvalidArgumentError(
        kServeLazyLayerCommand,
        ": want REPOSITORY DIGEST SIZE ROOT_DIGEST HASH_OFFSET BLOCK_SIZE "
        "CACHE_DIR TARGET HOSTS_DIR DOCKER_CONFIG NODE_DIR FETCH_SIZE BANDWIDTH "
        "background|no-background");
  }
  LazyLayerArgs a;
  EVS_ASSIGN_OR_RETURN(a.layer.repository, oci::Reference::Parse(argv[1]));
  a.layer.descriptor.media_type = "application/vnd.erofs.layer.v1";
  EVS_ASSIGN_OR_RETURN(a.layer.descriptor.digest, Digest::Parse(argv[2]));
  EVS_ASSIGN_OR_RETURN(uint64_t size, ParseNumber(argv[3], "size"));
  a.layer.descriptor.size = static_cast<int64_t>(size);
  // The same checks as for annotations.
  std::map<std::string, std::string> annotations = {{std::string(kRootDigestAnnotation), argv[4]},
                                                    {std::string(kHashOffsetAnnotation), argv[5]},
                                                    {std::string(kBlockSizeAnnotation), argv[6]}};
  EVS_ASSIGN_OR_RETURN(a.layer.verity, ParseLayerVerity(annotations, kServeLazyLayerCommand));
  a.cache_dir = argv[7];
  a.target = argv[8];
  if (a.cache_dir.empty() || a.target.empty()) {
    return InvalidArgumentError(kServeLazyLayerCommand, ": empty cache directory or target");
  }
  a.hosts_dir = argv[9] == "-" ? "" : argv[9];
  a.docker_config = argv[10] == "-" ? "" : argv[10];
  a.node_dir = argv[11] == "-" ? "" : argv[11];
  EVS_ASSIGN_OR_RETURN(uint64_t fetch_size, ParseNumber(argv[12], "fetch size"));
  if (fetch_size > (64u << 20)) {
    return InvalidArgumentError(kServeLazyLayerCommand, ": fetch size ", fetch_size,
                                " over 64 MiB");
  }
  a.fetch_size = static_cast<uint32_t>(fetch_size);
  EVS_ASSIGN_OR_RETURN(a.background_bandwidth, ParseNumber(argv[13], "bandwidth"));
  if (argv[14] != "background" && argv[14] != "no-background") {
    return InvalidArgumentError(kServeLazyLayerCommand, ": \"", argv[14],
                                "\" is neither background nor no-background");
  }
  a.background = argv[14] == "background";
  return a;
}

int ServeLazyLayer(const LazyLayerArgs& args, int status_fd) {
  ServeProcess process(status_fd);
  std::shared_ptr<ForegroundActivity> activity;
  auto attach = [&]() -> Result<std::pair<std::unique_ptr<registry::RegistryClient>,
                                          std::unique_ptr<BackgroundFetcher>>> {
    registry::RegistryOptions options;
    options.hosts_dir = args.hosts_dir;
    EVS_ASSIGN_OR_RETURN(auto docker, registry::DockerConfigCredentials::Load(args.docker_config));
    options.credentials = std::shared_ptr<registry::CredentialStore>(std::move(docker));
    EVS_ASSIGN_OR_RETURN(auto client, registry::RegistryClient::Create(std::move(options)));
    BackgroundFetchOptions b;
    if (!args.node_dir.empty()) {
      EVS_ASSIGN_OR_RETURN(activity, ForegroundActivity::OpenShared(args.node_dir, b.concurrency));
      b.activity = activity;
    }
    std::unique_ptr<BackgroundFetcher> fetcher;
    if (args.background) {
      if (args.background_bandwidth != 0) b.bandwidth = args.background_bandwidth;
      fetcher = BackgroundFetcher::Start(b);
    }
    return std::make_pair(std::move(client), std::move(fetcher));
  };
  auto parts = attach();
  if (!parts.ok()) {
    process.Report("error: " + parts.status().ToString());
    return 1;
  }
  LazyLayerOptions options;
  if (args.fetch_size != 0) options.fetch.fetch_size = args.fetch_size;
  options.fetch.activity = activity;  // null: the background fetcher's own
  options.background = parts->second.get();
  auto layer =
      LazyLayer::Attach(parts->first.get(), args.layer, args.cache_dir, args.target, options);
  if (!layer.ok()) {
    process.Report("error: " + layer.status().ToString());
    return 1;
  }
  process.Report("ok");
  return process.ServeUntilReleased([&] { return (*layer)->Detach(); },
                                    "lazy layer still in use; serving until it is released",
                                    args.layer.descriptor.digest.Short());
}

}  // namespace evs::lazy
