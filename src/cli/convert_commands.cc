// evs image convert: turn an image in a registry into one whose layers are
// EROFS images with their dm-verity trees appended, which evs can start
// lazily (issue 6; docs/lazy.md). The library part is lazy/image_converter.h.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "evs/lazy/image_converter.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"
#include "progress.h"
#include "registry_flags.h"

namespace evs::cli {

namespace {

struct ConvertFlags {
  std::string src, dst;
  std::vector<std::string> platforms;
  bool all_platforms = false;
  int jobs = 2;
  int hash_threads = 1;
  std::string scratch_dir;
  std::string layer_media_type = "erofs";
  RegistryFlags registry;  // for both registries
};

Status RunConvert(const ConvertFlags& flags) {
  EVS_ASSIGN_OR_RETURN(oci::Reference src, oci::Reference::Parse(flags.src));
  EVS_ASSIGN_OR_RETURN(oci::Reference dst, oci::Reference::Parse(flags.dst));
  lazy::ImageConvertOptions options;
  options.all_platforms = flags.all_platforms;
  if (flags.all_platforms && !flags.platforms.empty()) {
    return InvalidArgumentError("give --platform or --all-platforms, not both");
  }
  for (const auto& p : flags.platforms) {
    EVS_ASSIGN_OR_RETURN(oci::Platform platform, oci::Platform::Parse(p));
    options.platforms.push_back(platform);
  }
  options.parallel_layers = flags.jobs;
  options.hash_threads = flags.hash_threads;
  options.scratch_dir = flags.scratch_dir;
  EVS_ASSIGN_OR_RETURN(options.layer_media_type, lazy::ParseLayerMediaType(flags.layer_media_type));
  EVS_ASSIGN_OR_RETURN(
      auto client, NewRegistryClient(flags.registry, {src, dst}, std::max(flags.jobs, 1) * 2 + 2));

  const auto start = std::chrono::steady_clock::now();
  EVS_ASSIGN_OR_RETURN(lazy::ImageConvertResult result,
                       lazy::ConvertImage(*client, src, dst, options));
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // stdout: the one thing a script wants, the pinned destination.
  std::printf("%s\n", result.destination.ToString().c_str());
  if (::isatty(STDERR_FILENO) == 1) {
    size_t layers = 0;
    for (const auto& m : result.manifests) layers += m.layers.size();
    std::fprintf(stderr,
                 "converted %s: %zu platform(s), %zu layer(s), %llu converted, %llu pushed (%s), "
                 "%.1f s\n",
                 result.source.ToString().c_str(), result.manifests.size(), layers,
                 static_cast<unsigned long long>(result.layers_converted),
                 static_cast<unsigned long long>(result.layers_pushed),
                 FormatBytes(result.bytes_pushed).c_str(), secs);
  }
  return OkStatus();
}

}  // namespace

void AddConvertCommands(CLI::App& app, Status* status) {
  CLI::App* image = nullptr;
  try {
    image = app.get_subcommand("image");
  } catch (const CLI::OptionNotFound&) {
    image = app.add_subcommand("image", "Work with images in registries");
    image->require_subcommand(1);
  }
  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* cmd = image->add_subcommand(
      "convert",
      "Convert SRC into DST with EROFS + dm-verity layers that evs can mount lazily "
      "(prints DST@digest)");
  cmd->add_option("SRC", flags->src, "Source image, e.g. docker.io/library/python:3.12")
      ->required();
  cmd->add_option("DST", flags->dst, "Destination, e.g. registry:5000/python:3.12-evs")->required();
  cmd->add_option("--platform", flags->platforms,
                  "os/arch[/variant] to convert (repeatable; default: this machine's)");
  cmd->add_flag("--all-platforms", flags->all_platforms,
                "Convert every platform of SRC's index and push an index");
  cmd->add_option("-j,--jobs", flags->jobs, "Layers converted at once")->capture_default_str();
  cmd->add_option("--hash-threads", flags->hash_threads, "Threads hashing each layer's verity tree")
      ->capture_default_str();
  cmd->add_option("--layer-media-type", flags->layer_media_type,
                  "erofs: application/vnd.erofs.layer.v1 (containerd 2.3+); oci: "
                  "application/vnd.oci.image.layer.v1.erofs, which containerd 1.6/1.7 pull as a "
                  "layer (docs/lazy.md)")
      ->check(CLI::IsMember({"erofs", "oci"}))
      ->capture_default_str();
  cmd->add_option("--scratch-dir", flags->scratch_dir,
                  "Where layer files are built before upload (default: $TMPDIR or /tmp)");
  AddRegistryFlags(cmd, &flags->registry);
  cmd->callback([flags, status] { *status = RunConvert(*flags); });
}

}  // namespace evs::cli
