// Registry authentication (distribution docs/spec/auth/token.md): parse
// WWW-Authenticate challenges, get bearer tokens from the realm, cache them
// per (origin, realm, service, scopes, identity) until shortly before they
// expire, and drop them when the registry rejects them. Internal to the
// registry module. Never logs or returns a secret in a message.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/status.h"
#include "evs/registry/credentials.h"
#include "http_transport.h"

namespace evs::registry::internal {

struct Challenge {
  std::string scheme;                         // lower case: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lower case
};

// Parses one or more challenges from a WWW-Authenticate value (RFC 7235
// §4.1: auth-scheme, then comma-separated auth-params with quoted strings).
// Malformed input yields what could be parsed; never fails.
std::vector<Challenge> ParseChallenges(std::string_view header);

// What a request needs to authenticate.
struct AuthRequest {
  std::string origin;                        // "https://registry:5000"
  std::string registry;                      // the namespace ("docker.io") for credential lookups
  std::string endpoint_host;                 // "registry-1.docker.io"
  std::vector<std::string> scopes;           // "repository:library/ubuntu:pull"
  const TlsSettings* tls = nullptr;          // for the realm, when it is the same origin
  const TlsSettings* default_tls = nullptr;  // for other realms
  bool allow_plain_http_realm = false;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds stall_timeout{30'000};
  std::optional<Clock::time_point> deadline;
  const Cancellation* cancellation = nullptr;
  // Credentials handed in for this call; otherwise `store` is asked.
  const Credentials* call_credentials = nullptr;
  CredentialStore* store = nullptr;
};

// Thread-safe; shared by all requests of a RegistryClient.
class Authorizer {
 public:
  explicit Authorizer(HttpTransport* transport) : transport_(transport) {}

  // The Authorization header value for `req`, or "" for none (anonymous, or
  // the origin has not asked for auth yet). When the origin is known to want
  // bearer tokens and none is cached for these scopes, fetches one first
  // (one request to the realm; concurrent callers for the same key wait for
  // it rather than fetching again).
  Result<std::string> Authorization(const AuthRequest& req);

  // Handles a 401 from the origin: learns its challenge, forgets
  // `sent_authorization` if it came from the cache, and fetches a fresh
  // token. OK means "retry with Authorization()"; Unauthenticated (naming
  // the origin and scopes, and whether credentials were offered) means
  // retrying is pointless.
  Status OnUnauthorized(const AuthRequest& req, const HttpResponse& response,
                        const std::string& sent_authorization);

 private:
  struct Token {
    std::string header;  // "Bearer …" / "Basic …"
    Clock::time_point refresh_after;
  };
  struct Entry {
    std::mutex fetch_mu;  // held while fetching, so concurrent callers wait
    std::optional<Token> token;
  };

  Result<std::optional<Credentials>> CredentialsFor(const AuthRequest& req);
  std::string Identity(const AuthRequest& req);
  std::string CacheKey(const AuthRequest& req, const Challenge& c,
                       const std::vector<std::string>& scopes);
  std::vector<std::string> ScopesFor(const AuthRequest& req, const Challenge& c);
  Result<Token> FetchToken(const AuthRequest& req, const Challenge& c,
                           const std::vector<std::string>& scopes);
  Result<std::string> AuthorizationLocked(const AuthRequest& req, bool force_refresh,
                                          const std::string& stale);

  HttpTransport* transport_;
  std::mutex mu_;
  std::map<std::string, Challenge> challenges_;  // by origin
  std::map<std::string, std::shared_ptr<Entry>> entries_;
};

}  // namespace evs::registry::internal
