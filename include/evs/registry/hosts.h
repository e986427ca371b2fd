// Where to send a registry's requests: containerd's hosts.toml
// (<config_dir>/<host>/hosts.toml, containerd docs/hosts.md), so an
// operator's existing mirror setup works unchanged. For a registry namespace
// ("docker.io", "localhost:5000") the result is a list of endpoints to try in
// order: the [host."…"] mirrors as written, then the server (the origin).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evs/common/status.h"

namespace evs::registry {

// Bits of RegistryEndpoint::capabilities (hosts.toml "capabilities").
enum HostCapability : unsigned {
  kCapabilityPull = 1u << 0,     // fetch blobs and manifests by digest
  kCapabilityResolve = 1u << 1,  // resolve tags to digests
  kCapabilityPush = 1u << 2,
  kCapabilityAll = kCapabilityPull | kCapabilityResolve | kCapabilityPush,
};

// One registry host to talk to, with its TLS and header settings.
struct RegistryEndpoint {
  std::string scheme = "https";  // "https" or "http"
  std::string host;              // "mirror.example.com", "10.0.0.2:5000", "[::1]:5000"
  std::string path = "/v2";      // API root; "/v2" unless override_path
  unsigned capabilities = kCapabilityAll;
  bool skip_verify = false;
  std::vector<std::string> ca_files;  // added to the system CAs
  // Client certificate and key files; key empty when the cert file holds it.
  // libcurl takes one client identity, so only the first pair is used.
  std::vector<std::pair<std::string, std::string>> client_certs;
  std::vector<std::pair<std::string, std::string>> headers;  // sent to this host only
  bool is_origin = false;  // the server entry (last), not a mirror

  // "https://host".
  std::string Origin() const { return scheme + "://" + host; }
  // "https://host/v2".
  std::string BaseUrl() const { return Origin() + path; }
};

// Endpoints for `registry` (a Reference::registry value), in the order to
// try them. Looks in `config_dir` for "<host>_<port>_/", "<host:port>/", then
// "_default/", reading hosts.toml or, lacking it, Docker-style certificate
// files (*.crt CAs, *.cert/*.key client pairs). With no configuration the
// single origin is https://<registry> (https://registry-1.docker.io for
// docker.io; plain http for localhost, IsLocalhost()). An empty `config_dir`
// means no configuration. Errors name the file and key (unknown capability,
// wrong value type, unparsable TOML). Reads a few small files; no network.
Result<std::vector<RegistryEndpoint>> LoadRegistryHosts(std::string_view config_dir,
                                                        std::string_view registry);

// Parses one hosts.toml text. `base_dir` resolves relative ca/client paths;
// `registry` supplies the default server when the file has none.
Result<std::vector<RegistryEndpoint>> ParseHostsToml(std::string_view toml,
                                                     std::string_view base_dir,
                                                     std::string_view registry);

}  // namespace evs::registry
