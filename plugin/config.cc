#include "config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <limits>
#include <optional>
#include <sstream>

#include "evs/common/file.h"
#include "evs/common/log.h"

namespace evs::plugin {
namespace {

Result<std::string> StringKey(const toml::node& node, const std::string& origin,
                              std::string_view key) {
  auto v = node.value<std::string>();
  if (!v) return InvalidArgumentError(origin, ": key \"", key, "\" must be a string");
  return *v;
}

Result<bool> BoolKey(const toml::node& node, const std::string& origin, std::string_view key) {
  auto v = node.value_exact<bool>();
  if (!v) return InvalidArgumentError(origin, ": key \"", key, "\" must be true or false");
  return *v;
}

Result<int64_t> IntKey(const toml::node& node, const std::string& origin, std::string_view key,
                       int64_t min, int64_t max) {
  auto v = node.value<int64_t>();
  if (!v || *v < min || *v > max) {
    return InvalidArgumentError(origin, ": key \"", key, "\" must be an integer in [", min, ", ",
                                max, "]");
  }
  return *v;
}

constexpr int64_t kMaxConversions = 64;
constexpr int64_t kMaxKeepSeconds = 7 * 24 * 3600;

Status SetVerity(const std::string& text, const std::string& origin, DaemonConfig* config) {
  auto mode = snapshot::ParseVerityMode(text);
  if (!mode.ok()) return mode.status().Annotate(origin);
  config->verity = *mode;
  return OkStatus();
}

Status SetLogLevel(const std::string& text, const std::string& origin, DaemonConfig* config) {
  LogLevel level;
  if (!ParseLogLevel(text, &level)) {
    return InvalidArgumentError(origin, ": log_level \"", text,
                                "\": want debug, info, warn or error");
  }
  config->log_level = text;
  return OkStatus();
}

}  // namespace

Status ApplyToml(const std::string& toml_text, const std::string& origin, DaemonConfig* config) {
  toml::table table;
  try {
    table = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return InvalidArgumentError(origin, ": ", e.description(), " at ", where.str());
  }
  for (const auto& [key, node] : table) {
    std::string k(key.str());
    if (k == "root") {
      EVS_ASSIGN_OR_RETURN(config->root, StringKey(node, origin, k));
    } else if (k == "address") {
      EVS_ASSIGN_OR_RETURN(config->address, StringKey(node, origin, k));
    } else if (k == "verity") {
      EVS_ASSIGN_OR_RETURN(std::string v, StringKey(node, origin, k));
      EVS_RETURN_IF_ERROR(SetVerity(v, origin, config));
    } else if (k == "log_level") {
      EVS_ASSIGN_OR_RETURN(std::string v, StringKey(node, origin, k));
      EVS_RETURN_IF_ERROR(SetLogLevel(v, origin, config));
    } else if (k == "metrics_address") {
      EVS_ASSIGN_OR_RETURN(config->metrics_address, StringKey(node, origin, k));
    } else if (k == "shutdown_timeout_seconds") {
      EVS_ASSIGN_OR_RETURN(int64_t v, IntKey(node, origin, k, 0, 3600));
      config->shutdown_timeout_seconds = static_cast<int>(v);
    } else if (k == "convert_on_pull") {
      EVS_ASSIGN_OR_RETURN(config->convert_on_pull, BoolKey(node, origin, k));
    } else if (k == "registry_config_path") {
      EVS_ASSIGN_OR_RETURN(config->registry_config_path, StringKey(node, origin, k));
    } else if (k == "docker_config") {
      EVS_ASSIGN_OR_RETURN(config->docker_config, StringKey(node, origin, k));
    } else if (k == "max_concurrent_conversions") {
      EVS_ASSIGN_OR_RETURN(int64_t v, IntKey(node, origin, k, 1, kMaxConversions));
      config->max_concurrent_conversions = static_cast<int>(v);
    } else if (k == "convert_ahead") {
      EVS_ASSIGN_OR_RETURN(config->convert_ahead, BoolKey(node, origin, k));
    } else if (k == "verify_diff_id") {
      EVS_ASSIGN_OR_RETURN(config->verify_diff_id, BoolKey(node, origin, k));
    } else if (k == "max_layer_bytes") {
      EVS_ASSIGN_OR_RETURN(config->max_layer_bytes,
                           IntKey(node, origin, k, 1, std::numeric_limits<int64_t>::max()));
    } else if (k == "lazy_pull") {
      EVS_ASSIGN_OR_RETURN(config->lazy_pull, BoolKey(node, origin, k));
    } else if (k == "lazy_background_fetch") {
      EVS_ASSIGN_OR_RETURN(config->lazy_background_fetch, BoolKey(node, origin, k));
    } else if (k == "keep_unclaimed_seconds") {
      EVS_ASSIGN_OR_RETURN(int64_t v, IntKey(node, origin, k, 0, kMaxKeepSeconds));
      config->keep_unclaimed_seconds = static_cast<int>(v);
    } else {
      return InvalidArgumentError(origin, ": unknown key \"", k, "\"");
    }
  }
  return OkStatus();
}

Result<DaemonConfig> LoadDaemonConfig(int argc, const char* const* argv, int* exit_code) {
  *exit_code = -1;
  CLI::App app{
      "containerd-evs-grpc: a containerd snapshotter (proxy plugin) that stores every layer as "
      "EROFS protected by a dm-verity hash tree. Flags override the config file.",
      "containerd-evs-grpc"};
  app.set_version_flag("--version", "containerd-evs-grpc 0.1.0");
  std::string config_path = kDefaultConfigPath;
  std::string root, address, verity, log_level, metrics_address;
  int shutdown_timeout = 0;
  std::string registry_config_path, docker_config;
  bool convert_on_pull = true, convert_ahead = true, verify_diff_id = true;
  bool lazy_pull = true, lazy_background = true;
  int max_conversions = 0, keep_unclaimed = 0;
  int64_t max_layer_bytes = 0;
  auto* config_opt =
      app.add_option("--config", config_path, "TOML configuration file")->capture_default_str();
  auto* root_opt = app.add_option("--root", root, "root directory (key: root)");
  auto* address_opt =
      app.add_option("--address", address, "unix socket to serve on (key: address)");
  auto* verity_opt = app.add_option(
      "--verity", verity, "layer verification: auto, kernel, userspace, off (key: verity)");
  auto* log_opt =
      app.add_option("--log-level", log_level, "debug, info, warn, error (key: log_level)");
  auto* timeout_opt = app.add_option("--shutdown-timeout-seconds", shutdown_timeout,
                                     "grace period for in-flight calls on SIGTERM "
                                     "(key: shutdown_timeout_seconds)");
  auto* metrics_opt = app.add_option("--metrics-address", metrics_address,
                                     "host:port for Prometheus metrics, \"\" = off "
                                     "(key: metrics_address)");
  auto* cop_opt = app.add_option("--convert-on-pull", convert_on_pull,
                                 "fetch and convert layers when containerd's labels name them: "
                                 "true or false (key: convert_on_pull)");
  auto* hosts_opt = app.add_option("--registry-config-path", registry_config_path,
                                   "registry hosts directory (hosts.toml), \"\" for none "
                                   "(key: registry_config_path)");
  auto* docker_opt = app.add_option("--docker-config", docker_config,
                                    "Docker config.json with registry credentials "
                                    "(key: docker_config)");
  auto* conversions_opt = app.add_option("--max-concurrent-conversions", max_conversions,
                                         "layers converted at once "
                                         "(key: max_concurrent_conversions)");
  auto* ahead_opt = app.add_option("--convert-ahead", convert_ahead,
                                   "convert an image's later layers ahead: true or false "
                                   "(key: convert_ahead)");
  auto* diff_opt = app.add_option("--verify-diff-id", verify_diff_id,
                                  "check converted layers against their chain ID: true or false "
                                  "(key: verify_diff_id)");
  auto* max_layer_opt = app.add_option("--max-layer-bytes", max_layer_bytes,
                                       "largest uncompressed layer converted on pull "
                                       "(key: max_layer_bytes)");
  auto* keep_opt = app.add_option("--keep-unclaimed-seconds", keep_unclaimed,
                                  "how long a layer converted ahead waits to be claimed "
                                  "(key: keep_unclaimed_seconds)");
  auto* lazy_opt = app.add_option("--lazy-pull", lazy_pull,
                                  "mount layers of images made by `evs image convert` lazily: "
                                  "true or false (key: lazy_pull)");
  auto* lazy_bg_opt = app.add_option("--lazy-background-fetch", lazy_background,
                                     "complete lazy layers in the background: true or false "
                                     "(key: lazy_background_fetch)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    *exit_code = app.exit(e);
    return DaemonConfig{};
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    int code = app.exit(e, out, err);
    (void)code;
    return InvalidArgumentError(err.str().empty() ? e.what() : err.str());
  }

  DaemonConfig config;
  bool explicit_config = config_opt->count() > 0;
  if (explicit_config || ::access(config_path.c_str(), F_OK) == 0) {
    auto text = ReadFileToString(config_path, 1 << 20);
    if (!text.ok()) return text.status().Annotate("config");
    EVS_RETURN_IF_ERROR(ApplyToml(*text, config_path, &config));
    config.config_path = config_path;
  }
  if (root_opt->count()) config.root = root;
  if (metrics_opt->count()) config.metrics_address = metrics_address;
  if (address_opt->count()) config.address = address;
  if (verity_opt->count()) EVS_RETURN_IF_ERROR(SetVerity(verity, "--verity", &config));
  if (log_opt->count()) EVS_RETURN_IF_ERROR(SetLogLevel(log_level, "--log-level", &config));
  if (timeout_opt->count()) {
    if (shutdown_timeout < 0 || shutdown_timeout > 3600) {
      return InvalidArgumentError("--shutdown-timeout-seconds must be in [0, 3600]");
    }
    config.shutdown_timeout_seconds = shutdown_timeout;
  }
  if (cop_opt->count()) config.convert_on_pull = convert_on_pull;
  if (hosts_opt->count()) config.registry_config_path = registry_config_path;
  if (docker_opt->count()) config.docker_config = docker_config;
  if (conversions_opt->count()) {
    if (max_conversions < 1 || max_conversions > kMaxConversions) {
      return InvalidArgumentError("--max-concurrent-conversions must be in [1, ", kMaxConversions,
                                  "]");
    }
    config.max_concurrent_conversions = max_conversions;
  }
  if (ahead_opt->count()) config.convert_ahead = convert_ahead;
  if (lazy_opt->count()) config.lazy_pull = lazy_pull;
  if (lazy_bg_opt->count()) config.lazy_background_fetch = lazy_background;
  if (diff_opt->count()) config.verify_diff_id = verify_diff_id;
  if (max_layer_opt->count()) {
    if (max_layer_bytes < 1) return InvalidArgumentError("--max-layer-bytes must be positive");
    config.max_layer_bytes = max_layer_bytes;
  }
  if (keep_opt->count()) {
    if (keep_unclaimed < 0 || keep_unclaimed > kMaxKeepSeconds) {
      return InvalidArgumentError("--keep-unclaimed-seconds must be in [0, ", kMaxKeepSeconds, "]");
    }
    config.keep_unclaimed_seconds = keep_unclaimed;
  }
  if (config.root.empty() || config.root[0] != '/') {
    return InvalidArgumentError("root \"", config.root, "\" must be an absolute path");
  }
  if (config.address.empty() || config.address[0] != '/') {
    return InvalidArgumentError("address \"", config.address, "\" must be an absolute path");
  }
  return config;
}

}  // namespace evs::plugin
