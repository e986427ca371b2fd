#include "registry_flags.h"

#include <unistd.h>

#include <algorithm>

#include "evs/registry/credentials.h"
#include "evs/registry/hosts.h"

namespace evs::cli {

void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags) {
  cmd->add_option("--hosts-dir", flags->hosts_dir,
                  "containerd registry config_path: <dir>/<host>/hosts.toml (mirrors, CAs, "
                  "skip_verify, plain http)")
      ->capture_default_str();
  cmd->add_option("--creds", flags->creds,
                  "USER:PASSWORD for the registry (default: ~/.docker/config.json and its "
                  "credential helpers)");
}

Result<std::unique_ptr<registry::RegistryClient>> NewRegistryClient(
    const RegistryFlags& flags, const std::vector<oci::Reference>& refs, int connections) {
  registry::RegistryOptions options;
  if (::access(flags.hosts_dir.c_str(), F_OK) == 0) options.hosts_dir = flags.hosts_dir;
  std::vector<std::shared_ptr<registry::CredentialStore>> stores;
  if (!flags.creds.empty()) {
    size_t colon = flags.creds.find(':');
    if (colon == std::string::npos) return InvalidArgumentError("--creds: expected USER:PASSWORD");
    auto given = std::make_shared<registry::StaticCredentials>();
    registry::Credentials c{flags.creds.substr(0, colon), flags.creds.substr(colon + 1), ""};
    for (const auto& ref : refs) {
      given->Set(ref.registry, c);
      // Also for the endpoint hosts a mirror setup sends us to.
      auto endpoints = registry::LoadRegistryHosts(options.hosts_dir, ref.registry);
      if (endpoints.ok()) {
        for (const auto& e : *endpoints) given->Set(e.host, c);
      }
    }
    stores.push_back(given);
  }
  EVS_ASSIGN_OR_RETURN(auto docker, registry::DockerConfigCredentials::Load());
  stores.push_back(std::shared_ptr<registry::CredentialStore>(std::move(docker)));
  options.credentials = std::make_shared<registry::ChainedCredentials>(std::move(stores));
  options.max_connections_per_host = std::max(connections, 1);
  return registry::RegistryClient::Create(std::move(options));
}

}  // namespace evs::cli
