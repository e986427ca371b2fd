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
