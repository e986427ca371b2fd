// The daemon's configuration: defaults, then /etc/containerd-evs/config.toml
// (or --config), then command-line flags; every key is also a flag
// (DESIGN.md §7). plugin/config.example.toml documents each key.
#pragma once

#include <string>
#include <vector>

#include "evs/common/status.h"
#include "evs/snapshot/layer_mounter.h"

namespace evs::plugin {

inline constexpr const char* kDefaultConfigPath = "/etc/containerd-evs/config.toml";

struct DaemonConfig {
  // Where snapshots, layers and metadata live (DESIGN.md §3).
  std::string root = "/var/lib/containerd-evs";
  // The unix socket containerd's proxy_plugins entry points at. Created
  // 0660, owned by the daemon's user (root).
  std::string address = "/run/containerd-evs/containerd-evs-grpc.sock";
  // Layer verification: auto (kernel dm-verity, else userspace), kernel,
  // userspace, or off (DESIGN.md §5).
  snapshot::VerityMode verity = snapshot::VerityMode::kAuto;
  // debug, info, warn, error.
  std::string log_level = "info";
  // On SIGTERM: seconds to let in-flight calls finish before they are
  // cancelled.
  int shutdown_timeout_seconds = 30;
  // Prometheus metrics at http://<metrics_address>/metrics; "" = off.
  // Keep it on a local address ("127.0.0.1:9650").
  std::string metrics_address;

  // --- convert-on-pull (DESIGN.md §1; docs/snapshotter.md) ---
  // Fetch and convert a layer itself when containerd's Prepare names the
  // image and layer (the CRI with disable_snapshot_annotations = false,
  // `ctr-remote images rpull`); containerd then skips download and unpack.
  bool convert_on_pull = true;
  // containerd's registry hosts directory (hosts.toml per registry:
  // mirrors, TLS, headers). "" for none: https, plain http for localhost.
  std::string registry_config_path = "/etc/containerd/certs.d";
  // Docker config.json with registry credentials (auths, credHelpers,
  // credsStore). "": $DOCKER_CONFIG/config.json, else
  // $HOME/.docker/config.json. Read at start, and by each lazy layer's
  // process when it starts.
  std::string docker_config;
  // Layers converted at once.
  int max_concurrent_conversions = 3;
  // Convert the later layers of an image (cri.image-layers) while earlier
  // ones are prepared.
  bool convert_ahead = true;
  // Compute each converted layer's diffID and commit it only under the
  // chain ID it belongs to. false trusts the registry's image configs.
  bool verify_diff_id = true;
  // A layer larger than this uncompressed is refused (and unpacked by
  // containerd instead).
  int64_t max_layer_bytes = int64_t{64} << 30;
  // A layer converted ahead that no pull claims is deleted after this long.
  int keep_unclaimed_seconds = 600;

  // --- lazy pulling (DESIGN.md §1; docs/lazy.md) ---
  // Mount layers of images made by `evs image convert` at once and fetch
  // their blocks on demand, each verified against the layer's hash tree.
  bool lazy_pull = true;
  // Complete lazy layers in the background.
  bool lazy_background_fetch = true;

  // The file this configuration was read from, "" when none was.
  std::string config_path;
};

// Parses argv. `--config PATH` names the TOML file (a missing file is an
// error only when named explicitly). Unknown keys, wrong types and bad
// values are InvalidArgument naming the file and key. `--help` and
// `--version` print and set `*exit_code` (0) without an error: the caller
// exits with it. Never throws.
Result<DaemonConfig> LoadDaemonConfig(int argc, const char* const* argv, int* exit_code);

// Applies the keys of a TOML document to `config`. `origin` names the
// document in errors.
Status ApplyToml(const std::string& toml_text, const std::string& origin, DaemonConfig* config);

}  // namespace evs::plugin
