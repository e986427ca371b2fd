// Registry options shared by the `evs image` commands: the hosts.toml
// directory, credentials from the command line or ~/.docker/config.json, and
// how many transfers run at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "evs/common/status.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"

namespace evs::cli {

struct RegistryFlags {
  std::string hosts_dir = "/etc/containerd/certs.d";
  std::string creds;  // "user:password"
};

// Adds --hosts-dir and --creds to `cmd`.
void AddRegistryFlags(CLI::App* cmd, RegistryFlags* flags);

// A client for the registries of `refs`: hosts.toml from flags.hosts_dir when
// it exists; --creds for those registries and the mirrors their hosts.toml
// names, then the docker config and its credential helpers; `connections`
// live transfers per host. InvalidArgument for a malformed --creds.
Result<std::unique_ptr<registry::RegistryClient>> NewRegistryClient(
    const RegistryFlags& flags, const std::vector<oci::Reference>& refs, int connections);

}  // namespace evs::cli
