#include "auth.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "evs/common/base64.h"
#include "evs/common/digest.h"
#include "evs/common/log.h"

namespace evs::registry::internal {
namespace {

constexpr size_t kMaxTokenResponse = 1u << 20;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string UrlEncode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace

std::vector<Challenge> ParseChallenges(std::string_view h) {
  std::vector<Challenge> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == ',')) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < h.size() && h[i] != ' ' && h[i] != '\t' && h[i] != ',' && h[i] != '=') ++i;
    return h.substr(start, i - start);
  };
  while (i < h.size()) {
    skip_ws();
    std::string_view scheme = token();
    if (scheme.empty()) {
      ++i;
      continue;
    }
    Challenge c;
    c.scheme = Lower(scheme);
    // auth-params until the next scheme (a token not followed by '=').
    while (i < h.size()) {
      skip_ws();
      size_t save = i;
      std::string_view key = token();
      while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
      if (key.empty() || i >= h.size() || h[i] != '=') {
        i = save;
        break;
      }
      ++i;  // '='
      while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        while (i < h.size() && h[i] != '"') {
          if (h[i] == '\\' && i + 1 < h.size()) ++i;
          value += h[i++];
        }
        if (i < h.size()) ++i;  // closing quote
      } else {
        size_t start = i;
        while (i < h.size() && h[i] != ',' && h[i] != ' ' && h[i] != '\t') ++i;
        value = std::string(h.substr(start, i - start));
      }
      c.params[Lower(key)] = std::move(value);
    }
    out.push_back(std::move(c));
  }
  return out;
}

Result<std::optional<Credentials>> Authorizer::CredentialsFor(const AuthRequest& req) {
  if (req.call_credentials != nullptr) {
    if (req.call_credentials->empty()) return std::optional<Credentials>();
    return std::optional<Credentials>(*req.call_credentials);
  }
  if (req.store == nullptr) return std::optional<Credentials>();
  EVS_ASSIGN_OR_RETURN(std::optional<Credentials> c, req.store->Lookup(req.endpoint_host));
  if (!c && req.endpoint_host != req.registry) {
    EVS_ASSIGN_OR_RETURN(c, req.store->Lookup(req.registry));
  }
  return c;
}

std::string Authorizer::Identity(const AuthRequest& req) {
  if (req.call_credentials == nullptr) return "store";
  const Credentials& c = *req.call_credentials;
  // A digest, so the cache key holds no secret.
  return "call:" + Digest::Sha256Of(c.username + '\0' + c.secret + '\0' + c.registry_token).hex();
}

std::vector<std::string> Authorizer::ScopesFor(const AuthRequest& req, const Challenge& c) {
  // The operation knows what it needs (pull; pull,push; plus pull on a
  // mount source); the challenge's scope only fills in when it does not, so
  // one operation always maps to one cache entry.
  std::set<std::string> scopes(req.scopes.begin(), req.scopes.end());
  auto it = c.params.find("scope");
  if (scopes.empty() && it != c.params.end()) {
    size_t start = 0;
    while (start < it->second.size()) {
      size_t sp = it->second.find(' ', start);
      std::string s = it->second.substr(start, sp == std::string::npos ? sp : sp - start);
      if (!s.empty()) scopes.insert(s);
      if (sp == std::string::npos) break;
      start = sp + 1;
    }
  }
  return std::vector<std::string>(scopes.begin(), scopes.end());
}

std::string Authorizer::CacheKey(const AuthRequest& req, const Challenge& c,
                                 const std::vector<std::string>& scopes) {
  auto param = [&](const char* k) {
    auto it = c.params.find(k);
    return it == c.params.end() ? std::string() : it->second;
  };
  return StrCat(req.origin, "\n", c.scheme, "\n", param("realm"), "\n", param("service"), "\n",
                Join(scopes, " "), "\n", Identity(req));
}

Result<Authorizer::Token> Authorizer::FetchToken(const AuthRequest& req, const Challenge& c,
                                                 const std::vector<std::string>& scopes) {
  EVS_ASSIGN_OR_RETURN(std::optional<Credentials> creds, CredentialsFor(req));
  const std::string scope_text = Join(scopes, " ");
  if (c.scheme == "basic") {
    if (!creds || creds->username.empty()) {
      return Status(Code::kUnauthenticated,
                    StrCat(req.origin, " requires credentials (Basic auth) for ", scope_text,
                           "; none configured for ", req.endpoint_host));
    }
    return Token{"Basic " + Base64Encode(creds->username + ":" + creds->secret),
                 Clock::time_point::max()};
  }
  if (c.scheme != "bearer") {
    return Status(Code::kUnauthenticated,
                  StrCat(req.origin, " asks for unsupported auth scheme \"", c.scheme, "\""));
  }
  if (creds && !creds->registry_token.empty()) {
    return Token{"Bearer " + creds->registry_token, Clock::time_point::max()};
  }
  auto realm_it = c.params.find("realm");
  if (realm_it == c.params.end() || realm_it->second.empty()) {
    return Status(Code::kUnauthenticated, StrCat(req.origin, ": bearer challenge without a realm"));
  }
  const std::string& realm = realm_it->second;
  std::string realm_origin = OriginOf(realm);
  if (realm_origin.rfind("https://", 0) != 0) {
    bool local = realm_origin.rfind("http://localhost", 0) == 0 ||
                 realm_origin.rfind("http://127.", 0) == 0 ||
                 realm_origin.rfind("http://[::1]", 0) == 0;
    if (realm_origin.rfind("http://", 0) != 0 || (!req.allow_plain_http_realm && !local)) {
      return Status(Code::kUnauthenticated,
                    StrCat(req.origin, ": refusing token realm ", RedactUrl(realm),
                           " (not https, and the registry is not configured for plain http)"));
    }
  }
  std::string service;
  if (auto it = c.params.find("service"); it != c.params.end()) service = it->second;

  HttpRequest http;
  http.tls = req.tls;
  http.connect_timeout = req.connect_timeout;
  http.stall_timeout = req.stall_timeout;
  http.deadline = req.deadline;
  http.cancellation = req.cancellation;
  bool refresh_token = creds && creds->username.empty() && !creds->secret.empty();
  if (refresh_token) {
    // OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md).
    http.method = "POST";
    http.url = realm;
    http.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    http.body_bytes = "grant_type=refresh_token&client_id=evs&service=" + UrlEncode(service) +
                      "&scope=" + UrlEncode(scope_text) +
                      "&refresh_token=" + UrlEncode(creds->secret);
  } else {
    std::string url = realm;
    char sep = url.find('?') == std::string::npos ? '?' : '&';
    if (!service.empty()) {
      url += sep + std::string("service=") + UrlEncode(service);
      sep = '&';
    }
    for (const auto& s : scopes) {
      url += sep + std::string("scope=") + UrlEncode(s);
      sep = '&';
    }
    http.url = url;
    if (creds && !creds->username.empty()) {
      http.headers.push_back("Authorization: Basic " +
                             Base64Encode(creds->username + ":" + creds->secret));
    }
  }
  std::string body;
  HttpResponse resp;
  Status s = transport_->Perform(
      http, nullptr,
      [&](const char* data, size_t n, bool*) -> Status {
        if (body.size() + n > kMaxTokenResponse) {
          return ResourceExhaustedError("token response from ", RedactUrl(realm), " over ",
                                        kMaxTokenResponse, " bytes");
        }
        body.append(data, n);
        return OkStatus();
      },
      &resp);
  if (!s.ok()) return s.Annotate(StrCat("token for ", scope_text));
  if (resp.status == 401 || resp.status == 403) {
    return Status(Code::kUnauthenticated, StrCat("token server ", RedactUrl(realm), " refused ",
                                                 creds ? "the credentials" : "anonymous access",
                                                 " for ", scope_text, " (HTTP ", resp.status, ")"));
  }
  if (resp.status >= 500 || resp.status == 429) {
    return UnavailableError("token server ", RedactUrl(realm), ": HTTP ", resp.status);
  }
  if (resp.status != 200) {
    return Status(Code::kUnauthenticated,
                  StrCat("token server ", RedactUrl(realm), ": HTTP ", resp.status));
  }
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status(Code::kUnauthenticated,
                  StrCat("token server ", RedactUrl(realm), ": response is not a JSON object"));
  }
  std::string token;
  for (const char* key : {"token", "access_token"}) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string() && !it->get<std::string>().empty()) {
      token = it->get<std::string>();
      break;
    }
  }
  if (token.empty()) {
    return Status(Code::kUnauthenticated,
                  StrCat("token server ", RedactUrl(realm), ": response has no token"));
  }
  if (token.find_first_of("\r\n") != std::string::npos) {
    return Status(Code::kUnauthenticated,
                  StrCat("token server ", RedactUrl(realm), ": token has a line break"));
  }
  // distribution token.md: expires_in defaults to 60 s.
  int64_t expires_in = 60;
  if (auto it = j.find("expires_in"); it != j.end() && it->is_number_integer()) {
    expires_in = std::clamp<int64_t>(it->get<int64_t>(), 1, 24 * 3600);
  }
  // Refresh a little before expiry: 10 % of the lifetime, at most 30 s.
  auto lifetime = std::chrono::seconds(expires_in);
  auto margin = std::min<std::chrono::milliseconds>(std::chrono::seconds(30), lifetime / 10);
  EVS_LOG(kDebug) << "registry token obtained" << Kv("origin", req.origin)
                  << Kv("scope", scope_text) << Kv("expires_in_s", expires_in);
  return Token{"Bearer " + token, Clock::now() + lifetime - margin};
}

Result<std::string> Authorizer::Authorization(const AuthRequest& req) {
  return AuthorizationLocked(req, false, "");
}

Result<std::string> Authorizer::AuthorizationLocked(const AuthRequest& req, bool force_refresh,
                                                    const std::string& stale) {
  Challenge challenge;
  std::shared_ptr<Entry> entry;
  std::vector<std::string> scopes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = challenges_.find(req.origin);
    if (it == challenges_.end()) return std::string();
    challenge = it->second;
    scopes = ScopesFor(req, challenge);
    auto& slot = entries_[CacheKey(req, challenge, scopes)];
    if (!slot) slot = std::make_shared<Entry>();
    entry = slot;
  }
  std::lock_guard<std::mutex> fetch_lock(entry->fetch_mu);
  if (entry->token && (force_refresh ? entry->token->header != stale : true) &&
      Clock::now() < entry->token->refresh_after) {
    return entry->token->header;
  }
  entry->token.reset();
  EVS_ASSIGN_OR_RETURN(Token t, FetchToken(req, challenge, scopes));
  entry->token = t;
  return t.header;
}

Status Authorizer::OnUnauthorized(const AuthRequest& req, const HttpResponse& response,
                                  const std::string& sent_authorization) {
  std::vector<Challenge> challenges;
  for (const auto& [k, v] : response.headers) {
    if (k == "www-authenticate") {
      auto parsed = ParseChallenges(v);
      challenges.insert(challenges.end(), parsed.begin(), parsed.end());
    }
  }
  const Challenge* chosen = nullptr;
  for (const auto& c : challenges) {
    if (c.scheme == "bearer") chosen = &c;
  }
  for (const auto& c : challenges) {
    if (chosen == nullptr && c.scheme == "basic") chosen = &c;
  }
  if (chosen == nullptr) {
    return Status(Code::kUnauthenticated,
                  StrCat(req.origin, " answered 401 without a Bearer or Basic challenge"));
  }
  Challenge c = *chosen;
  AuthRequest widened = req;
  widened.scopes = ScopesFor(req, c);
  // Stored without the per-request parts.
  c.params.erase("scope");
  c.params.erase("error");
  {
    std::lock_guard<std::mutex> lock(mu_);
    challenges_[req.origin] = c;
  }
  if (c.scheme == "basic" && !sent_authorization.empty()) {
    return Status(Code::kUnauthenticated,
                  StrCat(req.origin, " rejected the Basic credentials for ", req.endpoint_host));
  }
  auto fresh = AuthorizationLocked(widened, true, sent_authorization);
  if (!fresh.ok()) return fresh.status();
  if (!sent_authorization.empty() && *fresh == sent_authorization) {
    return Status(Code::kUnauthenticated,
                  StrCat(req.origin, " rejected a fresh token for ", Join(widened.scopes, " ")));
  }
  return OkStatus();
}

}  // namespace evs::registry::internal
