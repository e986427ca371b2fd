// docker/cli config/configfile: "auths" entries (auth, username/password,
// identitytoken, registrytoken), "credHelpers", "credsStore"; helpers speak
// the docker-credential-helpers protocol ("get", server URL on stdin, JSON
// {"ServerURL","Username","Secret"} on stdout; Username "<token>" marks an
// identity token).
#include "evs/registry/credentials.h"

#include <signal.h>
#include <time.h>

#include <cerrno>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "evs/common/base64.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/common/subprocess.h"

namespace evs::registry {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kDockerHubKey = "https://index.docker.io/v1/";

// "https://host/v1/" → "host"; "host" stays.
std::string BareHost(std::string_view key) {
  size_t scheme = key.find("://");
  if (scheme != std::string_view::npos) key = key.substr(scheme + 3);
  size_t slash = key.find('/');
  if (slash != std::string_view::npos) key = key.substr(0, slash);
  return std::string(key);
}

bool IsDockerHub(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

std::string NormaliseHost(std::string_view host) {
  std::string bare = BareHost(host);
  return IsDockerHub(bare) ? "docker.io" : bare;
}

Result<std::optional<Credentials>> RunHelper(const std::string& helper, std::string_view host) {
  std::string program = "docker-credential-" + helper;
  std::string server = DockerConfigKey(host);
  auto run = RunSubprocess({program, "get"}, server, 30'000, 1u << 20);
  if (!run.ok()) {
    return UnavailableError("credential helper ", program, " for ", host, ": ",
                            run.status().message());
  }
  if (run->exit_code != 0) {
    // The protocol's "not found" answer: no credentials, not an error.
    if (run->stdout_data.find("credentials not found") != std::string::npos ||
        run->stderr_data.find("credentials not found") != std::string::npos) {
      return std::optional<Credentials>();
    }
    // Helper output can contain secrets; report only the exit status.
    return UnavailableError("credential helper ", program, " for ", host, " exited with status ",
                            run->exit_code);
  }
  Json j = Json::parse(run->stdout_data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("credential helper ", program, " for ", host,
                                ": output is not a JSON object");
  }
  Credentials c;
  auto user = j.find("Username");
  auto secret = j.find("Secret");
  if (user != j.end() && user->is_string()) c.username = user->get<std::string>();
  if (secret != j.end() && secret->is_string()) c.secret = secret->get<std::string>();
  if (c.username == "<token>") c.username.clear();  // identity token
  if (c.empty()) return std::optional<Credentials>();
  return std::optional<Credentials>(std::move(c));
}

}  // namespace

std::string DockerConfigKey(std::string_view host) {
  std::string bare = BareHost(host);
  if (IsDockerHub(bare)) return std::string(kDockerHubKey);
  return bare;
}

void StaticCredentials::Set(std::string host, Credentials credentials) {
  std::lock_guard<std::mutex> lock(mu_);
  by_host_[NormaliseHost(host)] = std::move(credentials);
}

Result<std::optional<Credentials>> StaticCredentials::Lookup(std::string_view host) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_host_.find(NormaliseHost(host));
  if (it == by_host_.end()) return std::optional<Credentials>();
  return std::optional<Credentials>(it->second);
}

Result<std::unique_ptr<DockerConfigCredentials>> DockerConfigCredentials::Load(
    const std::string& path_in) {
  std::string path = path_in;
  if (path.empty()) {
    const char* docker_config = std::getenv("DOCKER_CONFIG");
    const char* home = std::getenv("HOME");
    if (docker_config != nullptr && *docker_config) {
      path = JoinPath(docker_config, "config.json");
    } else if (home != nullptr && *home) {
      path = JoinPath(JoinPath(home, ".docker"), "config.json");
    }
  }
  if (path.empty()) return std::unique_ptr<DockerConfigCredentials>(new DockerConfigCredentials());
  auto text = ReadFileToString(path, 4u << 20);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) {
      return std::unique_ptr<DockerConfigCredentials>(new DockerConfigCredentials());
    }
    return text.status();
  }
  return Parse(*text, path);
}

Result<std::unique_ptr<DockerConfigCredentials>> DockerConfigCredentials::Parse(
    std::string_view text, std::string_view what) {
  std::unique_ptr<DockerConfigCredentials> store(new DockerConfigCredentials());
  Json j = Json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError(what, ": not a JSON object");
  }
  auto auths = j.find("auths");
  if (auths != j.end() && auths->is_object()) {
    for (auto it = auths->begin(); it != auths->end(); ++it) {
      if (!it.value().is_object()) continue;
      const Json& entry = it.value();
      Credentials c;
      auto str = [&](const char* key) -> std::string {
        auto f = entry.find(key);
        return f != entry.end() && f->is_string() ? f->get<std::string>() : std::string();
      };
      std::string auth = str("auth");
      if (!auth.empty()) {
        auto decoded = Base64Decode(auth);
        size_t colon = decoded.ok() ? decoded->find(':') : std::string::npos;
        if (colon == std::string::npos) {
          // Never echo the value: it is a secret.
          return InvalidArgumentError(what, ": auths[\"", BareHost(it.key()),
                                      "\"].auth is not base64(user:password)");
        }
        c.username = decoded->substr(0, colon);
        c.secret = decoded->substr(colon + 1);
      } else {
        c.username = str("username");
        c.secret = str("password");
      }
      std::string identity = str("identitytoken");
      if (!identity.empty()) {
        c.username.clear();
        c.secret = identity;
      }
      c.registry_token = str("registrytoken");
      if (!c.empty()) store->auths_[NormaliseHost(it.key())] = std::move(c);
    }
  }
  auto helpers = j.find("credHelpers");
  if (helpers != j.end() && helpers->is_object()) {
    for (auto it = helpers->begin(); it != helpers->end(); ++it) {
      if (it.value().is_string()) {
        store->helpers_[NormaliseHost(it.key())] = it.value().get<std::string>();
      }
    }
  }
  auto creds_store = j.find("credsStore");
  if (creds_store != j.end() && creds_store->is_string()) {
    store->store_ = creds_store->get<std::string>();
  }
  return store;
}

Result<std::optional<Credentials>> DockerConfigCredentials::Lookup(std::string_view host) {
  std::string key = NormaliseHost(host);
  auto helper = helpers_.find(key);
  if (helper != helpers_.end()) return RunHelper(helper->second, key);
  auto it = auths_.find(key);
  if (it != auths_.end()) return std::optional<Credentials>(it->second);
  if (!store_.empty()) return RunHelper(store_, key);
  return std::optional<Credentials>();
}

Result<std::optional<Credentials>> ChainedCredentials::Lookup(std::string_view host) {
  for (const auto& store : stores_) {
    if (!store) continue;
    EVS_ASSIGN_OR_RETURN(std::optional<Credentials> c, store->Lookup(host));
    if (c) return c;
  }
  return std::optional<Credentials>();
}

}  // namespace evs::registry
