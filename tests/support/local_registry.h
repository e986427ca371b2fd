// Test fixtures for registry work: a real registry (Debian's docker-registry,
// distribution 2.8) on 127.0.0.1 at a free port with its storage in a temp
// dir, optionally behind htpasswd or token auth or TLS; the token server and
// the fault-injecting proxy from tests/tools/; and the background process
// that owns each of them. Everything started is stopped and removed when its
// object is destroyed.
//
//   auto registry = LocalRegistry::Start();             // anonymous
//   if (!registry.ok()) GTEST_SKIP() << registry.status().message();
//   std::string ref = (*registry)->host() + "/app:v1";  // "127.0.0.1:43121/app:v1"
//
// Tests that cannot run without these skip with the reason:
// EVS_REQUIRE_LOCAL_REGISTRY() (docker-registry and htpasswd installed) and
// EVS_REQUIRE_REGISTRY_TOOLS() (the Go tools were built).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evs/common/status.h"
#include "test_util.h"

namespace evs::testing {

// A program running in the background with stdout and stderr appended to a
// log file. Stop() (or destruction) sends SIGTERM, waits up to 5 s, then
// SIGKILL. Move-only.
class ChildProcess {
 public:
  static Result<ChildProcess> Start(const std::vector<std::string>& argv,
                                    const std::string& log_path);
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess() { Stop(); }

  pid_t pid() const { return pid_; }
  bool running() const;
  void Stop();

 private:
  pid_t pid_ = -1;
};

// Waits until a TCP connection to 127.0.0.1:`port` succeeds; DeadlineExceeded
// after `timeout`.
Status WaitForPort(int port, std::chrono::milliseconds timeout);
// Waits until `path` exists and is non-empty, returning its contents
// (the tools write their bound address there).
Result<std::string> WaitForFile(const std::string& path, std::chrono::milliseconds timeout);

// The registry token server (tests/tools/tokenserver).
struct TokenServerOptions {
  std::string users;                   // "user:pass,…"; empty: anyone gets tokens
  std::string refresh_tokens;          // accepted refresh tokens, comma-separated
  std::chrono::seconds lifetime{300};  // the token's real validity ("exp")
  int expires_in = -1;                 // what clients are told; -1: lifetime
  // Registries accept tokens up to this long after "exp" (distribution's
  // clock leeway); the server subtracts it so `lifetime` is what counts.
  std::chrono::seconds registry_leeway{0};
};

class TokenServer {
 public:
  static Result<std::unique_ptr<TokenServer>> Start(TokenServerOptions options = {});
  std::string realm() const { return "http://" + address_ + "/token"; }  // for WWW-Authenticate
  const std::string& cert_path() const { return cert_path_; }  // rootcertbundle for the registry
  const std::string& log_path() const { return log_path_; }    // JSON line per token request
  // Number of tokens issued so far (from the log).
  int TokensIssued() const;
  static constexpr const char* kService = "evs-test-registry";
  static constexpr const char* kIssuer = "evs-test-token-server";

 private:
  TokenServer() : dir_("evs-token") {}
  TempDir dir_;
  ChildProcess process_;
  std::string address_, cert_path_, log_path_;
};

struct LocalRegistryOptions {
  // Basic auth through an htpasswd file (bcrypt, written by htpasswd -B).
  std::string htpasswd_user;
  std::string htpasswd_password;
  // Token auth: trust tokens from this server (its realm and certificate).
  const TokenServer* token_server = nullptr;
  // TLS: serve https with this certificate and key; require client
  // certificates signed by client_ca when set.
  std::string tls_cert, tls_key, client_ca;
  // Log one line per request (with the protocol, "HTTP/2.0") to log_path().
  bool access_log = false;
};

// docker-registry serving 127.0.0.1:<port>, storage in a temp dir.
class LocalRegistry {
 public:
  // Starts it and waits until it accepts connections (about 0.2 s).
  // Unavailable with the reason when docker-registry is missing or does not
  // come up (its log is quoted).
  static Result<std::unique_ptr<LocalRegistry>> Start(LocalRegistryOptions options = {});
  ~LocalRegistry();

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }  // registry namespace
  std::string url() const { return (tls_ ? "https://" : "http://") + host(); }
  const std::string& storage_dir() const { return storage_dir_; }
  const std::string& log_path() const { return log_path_; }
  // Stops the registry now (tests of "registry down"); the storage stays.
  void Stop() { process_.Stop(); }
  // Starts it again (after Stop(), or stops it first) on the same port, with
  // the same storage and configuration: "the registry came back".
  // Unavailable when it does not come up.
  Status Restart();

 private:
  LocalRegistry() : dir_("evs-registry") {}
  TempDir dir_;
  ChildProcess process_;
  int port_ = 0;
  bool tls_ = false;
  std::string storage_dir_, log_path_;
};

// The fault-injecting proxy (tests/tools/faultproxy): see the rule format
// in its main.go. `rules_json` is a JSON array.
class FaultProxy {
 public:
  static Result<std::unique_ptr<FaultProxy>> Start(const std::string& upstream_host,
                                                   const std::string& rules_json = "[]");
  std::string host() const { return address_; }  // "127.0.0.1:port"
  std::string storage_host() const { return storage_address_; }
  const std::string& log_path() const { return log_path_; }
  // The request log, one parsed line per request: each a flat map of
  // "port", "method", "path", "range", "auth" ("true"/"false"), "status", "fault".
  std::vector<std::map<std::string, std::string>> Requests() const;

 private:
  FaultProxy() : dir_("evs-faultproxy") {}
  TempDir dir_;
  ChildProcess process_;
  std::string address_, storage_address_, log_path_;
};

// Path of a tool built from tests/tools/ ("faultproxy", "tokenserver").
std::string TestToolPath(const std::string& name);
bool HaveRegistryTools();
bool HaveLocalRegistry();

}  // namespace evs::testing

#define EVS_REQUIRE_LOCAL_REGISTRY()                                                         \
  do {                                                                                       \
    if (!::evs::testing::HaveLocalRegistry())                                                \
      GTEST_SKIP() << "needs docker-registry and htpasswd (apt-get install docker-registry " \
                      "apache2-utils)";                                                      \
  } while (0)

#define EVS_REQUIRE_REGISTRY_TOOLS()                                                          \
  do {                                                                                        \
    if (!::evs::testing::HaveRegistryTools())                                                 \
      GTEST_SKIP() << "needs the Go test tools (tests/tools; install golang-go and rebuild)"; \
  } while (0)
