// Registry credentials: where they come from (the caller, ~/.docker/config.json
// and its credential helpers) and what they are. Secrets never appear in log
// lines or error messages; Credentials has no operator<<.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/status.h"

namespace evs::registry {

struct Credentials {
  std::string username;
  // The password, or with an empty username an identity (refresh) token
  // for the OAuth2 token endpoint (docker config "identitytoken").
  std::string secret;
  // A bearer token to send as it is (docker config "registrytoken").
  std::string registry_token;

  bool empty() const { return username.empty() && secret.empty() && registry_token.empty(); }
  bool operator==(const Credentials& other) const = default;
};

// A source of credentials for a registry host. Implementations are
// thread-safe.
class CredentialStore {
 public:
  virtual ~CredentialStore() = default;
  // Credentials for `host` (a registry namespace such as "docker.io" or an
  // endpoint host such as "mirror.example.com:5000"); nullopt when there are
  // none (anonymous access). An error only when a configured source fails
  // (a helper that exits non-zero for another reason than "not found").
  virtual Result<std::optional<Credentials>> Lookup(std::string_view host) = 0;
};

// Credentials the caller hands in (the snapshotter passes what it receives).
class StaticCredentials : public CredentialStore {
 public:
  void Set(std::string host, Credentials credentials);
  Result<std::optional<Credentials>> Lookup(std::string_view host) override;

 private:
  std::mutex mu_;
  std::map<std::string, Credentials, std::less<>> by_host_;
};

// ~/.docker/config.json: "auths" (auth = base64(user:password), or
// username/password, identitytoken, registrytoken), "credHelpers" per host
// and "credsStore" for the rest, run as `docker-credential-<name> get` with
// the server URL on stdin (docker.io is looked up as
// "https://index.docker.io/v1/"). The file is read once, on Load; helpers
// run on every Lookup (they may hand out short-lived tokens), with a 30 s
// timeout.
class DockerConfigCredentials : public CredentialStore {
 public:
  // Reads `path`; empty means $DOCKER_CONFIG/config.json, else
  // $HOME/.docker/config.json. A missing file gives a store with no
  // credentials; a malformed one is InvalidArgument naming the file.
  static Result<std::unique_ptr<DockerConfigCredentials>> Load(const std::string& path = "");
  // Parses config.json text (for tests and callers holding the bytes).
  static Result<std::unique_ptr<DockerConfigCredentials>> Parse(std::string_view json,
                                                                std::string_view what);
  Result<std::optional<Credentials>> Lookup(std::string_view host) override;

 private:
  DockerConfigCredentials() = default;
  std::map<std::string, Credentials, std::less<>> auths_;  // keyed by bare host
  std::map<std::string, std::string, std::less<>> helpers_;
  std::string store_;
};

// Tries each store in order; the first that has credentials wins.
class ChainedCredentials : public CredentialStore {
 public:
  explicit ChainedCredentials(std::vector<std::shared_ptr<CredentialStore>> stores)
      : stores_(std::move(stores)) {}
  Result<std::optional<Credentials>> Lookup(std::string_view host) override;

 private:
  std::vector<std::shared_ptr<CredentialStore>> stores_;
};

// The key a host is known by in docker's config.json: "docker.io",
// "index.docker.io" and "registry-1.docker.io" become
// "https://index.docker.io/v1/"; scheme and path are stripped from others.
std::string DockerConfigKey(std::string_view host);

}  // namespace evs::registry
