// RegistryClient: the OCI distribution-spec v1.1 operations over
// http_transport (connections) and auth (tokens). The patterns the peers
// learned (remote-snapshotters.md §2) are here: redirects followed by hand
// without credentials, signed URLs re-resolved on 403, bounded retries with
// jitter, resumable blob downloads, tokens refreshed on 401.
#include "evs/registry/client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "auth.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/oci/media_types.h"
#include "evs/registry/hosts.h"
#include "http_transport.h"

namespace evs::registry {

using internal::Authorizer;
using internal::AuthRequest;
using internal::Clock;
using internal::HttpRequest;
using internal::HttpResponse;
using internal::HttpTransport;
using internal::OriginOf;
using internal::RedactUrl;
using internal::ResolveUrl;
using internal::TlsSettings;

namespace {

constexpr int kMaxRedirects = 5;
// Attempts on an endpoint that is not the last one before moving on.
constexpr int kMirrorAttempts = 2;

std::string Clip(std::string_view s, size_t n = 200) {
  std::string out;
  for (char c : s.substr(0, n)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  }
  if (s.size() > n) out += "…";
  return out;
}

// The registry's own error ("MANIFEST_UNKNOWN: manifest unknown") from an
// error body (distribution-spec "Error Codes"), or "".
std::string RegistryErrorText(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "";
  auto errors = j.find("errors");
  if (errors == j.end() || !errors->is_array() || errors->empty()) return "";
  const auto& e = (*errors)[0];
  if (!e.is_object()) return "";
  std::string out;
  if (auto c = e.find("code"); c != e.end() && c->is_string()) out = c->get<std::string>();
  if (auto m = e.find("message"); m != e.end() && m->is_string()) {
    out += (out.empty() ? "" : ": ") + m->get<std::string>();
  }
  return Clip(out);
}

bool IsRetryableHttp(long status) {
  return status == 408 || status == 429 ||
         (status >= 500 && status <= 599 && status != 501 && status != 505);
}

bool IsRedirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// An error Status for a response the caller did not expect.
Status StatusFromResponse(const HttpResponse& resp, std::string_view what) {
  std::string registry_error = RegistryErrorText(resp.error_body);
  std::string msg = StrCat(what, ": HTTP ", resp.status);
  if (!registry_error.empty()) msg += " (" + registry_error + ")";
  bool digest_error = registry_error.rfind("DIGEST_INVALID", 0) == 0 ||
                      registry_error.rfind("SIZE_INVALID", 0) == 0;
  switch (resp.status) {
    case 400:
      return Status(digest_error ? Code::kDataLoss : Code::kInvalidArgument, msg);
    case 401:
      return Status(Code::kUnauthenticated, msg);
    case 403:
      return Status(Code::kPermissionDenied, msg);
    case 404:
      return Status(Code::kNotFound, msg);
    case 405:
      return Status(Code::kUnimplemented, msg);
    case 413:
      return Status(Code::kResourceExhausted, msg);
    case 416:
      return Status(Code::kOutOfRange, msg);
    default:
      break;
  }
  if (IsRetryableHttp(resp.status)) return Status(Code::kUnavailable, msg);
  return Status(Code::kFailedPrecondition, msg);
}

// Retry-After: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
std::optional<std::chrono::milliseconds> RetryAfter(const HttpResponse& resp) {
  auto value = resp.Header("retry-after");
  if (!value || value->empty()) return std::nullopt;
  bool digits =
      std::all_of(value->begin(), value->end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) {
    if (value->size() > 7) return std::chrono::milliseconds(std::chrono::hours(24));
    return std::chrono::milliseconds(std::stoll(*value) * 1000);
  }
  time_t when = curl_getdate(value->c_str(), nullptr);
  if (when < 0) return std::nullopt;
  time_t now = ::time(nullptr);
  return std::chrono::milliseconds(std::max<int64_t>(0, (when - now) * 1000));
}

// Bounds one operation's retries (RetryPolicy) and the wait between them:
// exponential backoff with jitter (uniform between half and all of the
// current backoff, so that many clients hit by one outage spread out), or
// the server's Retry-After.
class Retrier {
 public:
  Retrier(const RetryPolicy& policy, const CallOptions& call, int max_attempts)
      : policy_(policy),
        call_(call),
        max_attempts_(std::max(1, max_attempts)),
        start_(Clock::now()),
        rng_(std::random_device{}()) {}

  // After a retryable `failure`: waits and returns OK to try again, or
  // returns the error to end with.
  Status Next(const Status& failure, std::optional<std::chrono::milliseconds> retry_after = {}) {
    ++attempts_;
    if (attempts_ >= max_attempts_) {
      return Status(failure.code(), StrCat(failure.message(), " (gave up after ", attempts_,
                                           attempts_ == 1 ? " attempt)" : " attempts)"));
    }
    auto elapsed = Clock::now() - start_;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(policy_.max_elapsed - elapsed);
    std::chrono::milliseconds wait;
    if (retry_after) {
      wait = *retry_after;
    } else {
      auto cap = policy_.initial_backoff * (int64_t{1} << std::min(attempts_ - 1, 20));
      cap = std::min<std::chrono::milliseconds>(cap, policy_.max_backoff);
      std::uniform_int_distribution<int64_t> dist(cap.count() / 2,
                                                  std::max<int64_t>(cap.count(), 1));
      wait = std::chrono::milliseconds(dist(rng_));
    }
    if (wait > left) {
      return Status(
          failure.code(),
          StrCat(failure.message(), " (gave up after ", attempts_, " attempts in ",
                 std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), " ms",
                 retry_after ? "; server asked to wait longer than allowed" : "", ")"));
    }
    if (call_.deadline && Clock::now() + wait >= *call_.deadline) {
      return Status(Code::kDeadlineExceeded,
                    StrCat(failure.message(), " (deadline passes before the next attempt)"));
    }
    EVS_LOG(kWarning) << "registry request failed, retrying" << Kv("error", failure.message())
                      << Kv("attempt", attempts_) << Kv("wait_ms", wait.count());
    auto until = Clock::now() + wait;
    while (Clock::now() < until) {
      if (call_.cancellation != nullptr && call_.cancellation->cancelled()) {
        return call_.cancellation->status();
      }
      std::this_thread::sleep_for(
          std::min<Clock::duration>(std::chrono::milliseconds(50), until - Clock::now()));
    }
    return OkStatus();
  }

 private:
  RetryPolicy policy_;
  const CallOptions& call_;
  int max_attempts_;
  int attempts_ = 0;
  Clock::time_point start_;
  std::mt19937_64 rng_;
};

}  // namespace

// An endpoint with its TLS settings loaded.
struct ResolvedEndpoint {
  RegistryEndpoint endpoint;
  TlsSettings tls;
  std::string origin;  // OriginOf(endpoint.BaseUrl())
};
using EndpointList = std::vector<std::shared_ptr<const ResolvedEndpoint>>;

// Where a blob's bytes come from after the registry redirected: shared by
// the requests of one FetchBlob, or of one RemoteBlob's readers.
class RedirectCache {
 public:
  std::string Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return url_;
  }
  void Set(std::string url) {
    std::lock_guard<std::mutex> lock(mu_);
    url_ = std::move(url);
  }
  // Forgets `url` unless another reader already replaced it.
  void Invalidate(const std::string& url) {
    std::lock_guard<std::mutex> lock(mu_);
    if (url_ == url) url_.clear();
  }

 private:
  std::mutex mu_;
  std::string url_;
};

struct internal::ClientState {
  explicit ClientState(RegistryOptions o)
      : options(std::move(o)),
        transport(options.max_connections_per_host, options.user_agent),
        authorizer(&transport) {}

  RegistryOptions options;
  HttpTransport transport;
  Authorizer authorizer;
  std::mutex mu;
  std::map<std::string, std::shared_ptr<const EndpointList>> endpoints;

  Result<std::shared_ptr<const EndpointList>> Endpoints(const std::string& registry);
  Result<TlsSettings> LoadTls(const RegistryEndpoint& e);
};

// The state of one call: options, retry policy, and the helpers every
// operation uses.
struct Op {
  internal::ClientState* st;
  const CallOptions& call;
  RetryPolicy policy;
  // Set when an error must end the operation instead of trying the next
  // endpoint (the caller's sink failed).
  bool fatal = false;

  Op(internal::ClientState* s, const CallOptions& c)
      : st(s), call(c), policy(c.retry.value_or(s->options.retry)) {}

  Status Interrupted() const {
    if (call.cancellation != nullptr && call.cancellation->cancelled()) {
      return call.cancellation->status();
    }
    if (call.deadline && Clock::now() >= *call.deadline) {
      return Status(Code::kDeadlineExceeded, "deadline passed");
    }
    return OkStatus();
  }

  HttpRequest Request(const ResolvedEndpoint& ep, std::string method, std::string url) const {
    HttpRequest r;
    r.method = std::move(method);
    r.url = std::move(url);
    r.tls = &ep.tls;
    r.connect_timeout = st->options.connect_timeout;
    r.stall_timeout = st->options.stall_timeout;
    r.deadline = call.deadline;
    r.cancellation = call.cancellation;
    return r;
  }

  AuthRequest Auth(const ResolvedEndpoint& ep, const std::string& registry,
                   std::vector<std::string> scopes) const {
    AuthRequest a;
    a.origin = ep.origin;
    a.registry = registry;
    a.endpoint_host = ep.endpoint.host;
    a.scopes = std::move(scopes);
    a.tls = &ep.tls;
    a.allow_plain_http_realm = ep.endpoint.scheme == "http";
    a.connect_timeout = st->options.connect_timeout;
    a.stall_timeout = st->options.stall_timeout;
    a.deadline = call.deadline;
    a.cancellation = call.cancellation;
    a.call_credentials = call.credentials ? &*call.credentials : nullptr;
    a.store = st->options.credentials.get();
    return a;
  }

  // One request to `ep` (or, for `req.url` on another origin, without any
  // credentials or configured headers), retried once after a 401 with a
  // fresh token. Transport failures are returned as they are; any complete
  // response is OK (look at resp->status).
  Status Exchange(const ResolvedEndpoint& ep, const std::string& registry,
                  const std::vector<std::string>& scopes, HttpRequest req,
                  const internal::HeadersHandler& on_headers, const internal::BodyHandler& on_body,
                  HttpResponse* resp) {
    bool same_origin = OriginOf(req.url) == ep.origin;
    if (same_origin) {
      for (const auto& [k, v] : ep.endpoint.headers) req.headers.push_back(k + ": " + v);
    }
    AuthRequest auth = Auth(ep, registry, scopes);
    for (int round = 0; round < 2; ++round) {
      HttpRequest attempt = req;
      std::string authorization;
      if (same_origin) {
        EVS_ASSIGN_OR_RETURN(authorization, st->authorizer.Authorization(auth));
        if (!authorization.empty()) attempt.headers.push_back("Authorization: " + authorization);
      }
      EVS_RETURN_IF_ERROR(st->transport.Perform(attempt, on_headers, on_body, resp));
      if (resp->status != 401 || !same_origin || round == 1) return OkStatus();
      EVS_RETURN_IF_ERROR(st->authorizer.OnUnauthorized(auth, *resp, authorization));
    }
    return OkStatus();
  }

  // Runs `fn(endpoint, max_attempts)` on each endpoint of `registry` with
  // `capability`, in order, until one succeeds or fails in a way another
  // endpoint cannot fix.
  template <typename T, typename Fn>
  Result<T> OnEndpoints(const std::string& registry, unsigned capability, std::string_view what,
                        Fn&& fn) {
    EVS_ASSIGN_OR_RETURN(std::shared_ptr<const EndpointList> list, st->Endpoints(registry));
    std::vector<const ResolvedEndpoint*> usable;
    for (const auto& e : *list) {
      if (e->endpoint.capabilities & capability) usable.push_back(e.get());
    }
    if (usable.empty()) {
      return FailedPreconditionError(what, ": no endpoint of ", registry, " has the ",
                                     capability == kCapabilityPush      ? "push"
                                     : capability == kCapabilityResolve ? "resolve"
                                                                        : "pull",
                                     " capability (hosts.toml)");
    }
    std::string tried;
    Status last;
    for (size_t i = 0; i < usable.size(); ++i) {
      bool is_last = i + 1 == usable.size();
      int attempts = is_last ? policy.max_attempts : std::min(policy.max_attempts, kMirrorAttempts);
      Result<T> r = fn(*usable[i], attempts);
      if (r.ok()) return r;
      last = r.status();
      Code c = last.code();
      if (fatal || c == Code::kDataLoss || c == Code::kCancelled || c == Code::kDeadlineExceeded ||
          c == Code::kInvalidArgument || (call.cancellation && call.cancellation->cancelled())) {
        return last;
      }
      if (!tried.empty()) tried += ", ";
      tried += usable[i]->endpoint.host;
      if (!is_last) {
        EVS_LOG(kInfo) << "registry endpoint failed, trying the next" << Kv("what", what)
                       << Kv("endpoint", usable[i]->endpoint.host) << Kv("error", last.message());
      }
    }
    if (usable.size() == 1) return last;
    return Status(last.code(), StrCat(last.message(), " (tried ", tried, ")"));
  }

  // Streams bytes [start, end) of blob `digest` (end = UINT64_MAX: to the
  // end) from `ep`, through redirects, resuming after interruptions from
  // start + *delivered. `consume` sees each byte once, in order.
  Status GetBlob(const ResolvedEndpoint& ep, const oci::Reference& repo, const Digest& digest,
                 uint64_t start, uint64_t end, RedirectCache* cache, Retrier* retrier,
                 const std::function<Status(const char*, size_t)>& consume, uint64_t* delivered);
};

Result<TlsSettings> internal::ClientState::LoadTls(const RegistryEndpoint& e) {
  TlsSettings tls;
  tls.verify = !e.skip_verify;
  if (!e.ca_files.empty()) {
    auto system = ReadFileToString(transport.DefaultCaBundle(), 16u << 20);
    if (system.ok()) tls.ca_pem = *system + "\n";
    for (const auto& f : e.ca_files) {
      auto pem = ReadFileToString(f, 4u << 20);
      if (!pem.ok()) {
        return FailedPreconditionError("CA file for ", e.host, ": ", pem.status().message());
      }
      tls.ca_pem += *pem + "\n";
    }
  }
  if (!e.client_certs.empty()) {
    tls.client_cert = e.client_certs[0].first;
    tls.client_key = e.client_certs[0].second;
    struct stat st;
    for (const auto& f : {tls.client_cert, tls.client_key}) {
      if (!f.empty() && ::stat(f.c_str(), &st) != 0) {
        return FailedPreconditionError("client certificate for ", e.host, ": ", f,
                                       " does not exist");
      }
    }
  }
  return tls;
}

Result<std::shared_ptr<const EndpointList>> internal::ClientState::Endpoints(
    const std::string& registry) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = endpoints.find(registry);
  if (it != endpoints.end()) return it->second;
  EVS_ASSIGN_OR_RETURN(std::vector<RegistryEndpoint> list,
                       LoadRegistryHosts(options.hosts_dir, registry));
  auto out = std::make_shared<EndpointList>();
  for (auto& e : list) {
    auto r = std::make_shared<ResolvedEndpoint>();
    EVS_ASSIGN_OR_RETURN(r->tls, LoadTls(e));
    r->origin = OriginOf(e.BaseUrl());
    r->endpoint = std::move(e);
    out->push_back(std::move(r));
  }
  endpoints[registry] = out;
  return std::shared_ptr<const EndpointList>(out);
}

namespace {

std::string PullScope(const oci::Reference& r) { return "repository:" + r.repository + ":pull"; }
std::string PushScope(const oci::Reference& r) {
  return "repository:" + r.repository + ":pull,push";
}

std::string BlobUrl(const ResolvedEndpoint& ep, const oci::Reference& repo, const Digest& d) {
  return StrCat(ep.endpoint.BaseUrl(), "/", repo.repository, "/blobs/", d.ToString());
}

std::string ManifestUrl(const ResolvedEndpoint& ep, const oci::Reference& repo,
                        std::string_view reference) {
  return StrCat(ep.endpoint.BaseUrl(), "/", repo.repository, "/manifests/", reference);
}

bool IsLocalUrl(std::string_view url) {
  std::string origin = OriginOf(url);
  size_t scheme = origin.find("://");
  return scheme != std::string::npos && oci::IsLocalhost(origin.substr(scheme + 3));
}

// Parses "bytes a-b/total"; returns a or nullopt.
std::optional<uint64_t> ContentRangeStart(const HttpResponse& resp) {
  auto v = resp.Header("content-range");
  if (!v) return std::nullopt;
  std::string_view s = *v;
  if (s.rfind("bytes ", 0) != 0) return std::nullopt;
  s.remove_prefix(6);
  uint64_t a = 0;
  size_t i = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    if (a > (UINT64_MAX - 9) / 10) return std::nullopt;
    a = a * 10 + static_cast<uint64_t>(s[i] - '0');
  }
  if (i == 0 || i >= s.size() || s[i] != '-') return std::nullopt;
  return a;
}

std::optional<Digest> DockerContentDigest(const HttpResponse& resp) {
  auto v = resp.Header("docker-content-digest");
  if (!v) return std::nullopt;
  auto d = Digest::Parse(*v);
  if (!d.ok()) return std::nullopt;
  return *d;
}

}  // namespace

Status Op::GetBlob(const ResolvedEndpoint& ep, const oci::Reference& repo, const Digest& digest,
                   uint64_t start, uint64_t end, RedirectCache* cache, Retrier* retrier,
                   const std::function<Status(const char*, size_t)>& consume, uint64_t* delivered) {
  const std::string registry_url = BlobUrl(ep, repo, digest);
  const std::string what =
      StrCat("blob ", digest.ToString(), " of ", repo.Name(), " from ", ep.endpoint.host);
  const std::vector<std::string> scopes = {PullScope(repo)};
  int redirects = 0;
  while (true) {
    EVS_RETURN_IF_ERROR(Interrupted());
    const uint64_t pos = start + *delivered;
    if (end != UINT64_MAX && pos >= end) return OkStatus();
    std::string cached = cache->Get();
    const std::string url = cached.empty() ? registry_url : cached;
    const bool from_storage = !cached.empty();
    HttpRequest req = Request(ep, "GET", url);
    const bool ranged = pos > 0 || end != UINT64_MAX;
    if (ranged) {
      req.headers.push_back(end == UINT64_MAX ? StrCat("Range: bytes=", pos, "-")
                                              : StrCat("Range: bytes=", pos, "-", end - 1));
    }
    uint64_t skip = 0;
    auto on_headers = [&](const HttpResponse& r) -> Status {
      if (r.status == 206) {
        auto first = ContentRangeStart(r);
        if (!first || *first != pos) {
          return DataLossError(what, ": asked for bytes from ", pos, ", server sent range \"",
                               Clip(r.Header("content-range").value_or("(none)"), 80), "\"");
        }
      } else if (r.status == 200 && ranged) {
        // The server ignores Range: read from the start, drop up to `pos`.
        skip = pos;
        if (skip > st->options.max_range_discard) {
          return FailedPreconditionError(what,
                                         ": server ignores Range requests (answered 200), "
                                         "and reading up to offset ",
                                         pos, " exceeds the ", st->options.max_range_discard,
                                         "-byte discard limit");
        }
        if (skip > 0 || end != UINT64_MAX) {
          EVS_LOG(kWarning) << "registry ignores Range; reading from the start"
                            << Kv("blob", digest.Short()) << Kv("host", OriginOf(url))
                            << Kv("offset", pos);
        }
      }
      return OkStatus();
    };
    auto on_body = [&](const char* data, size_t n, bool* stop) -> Status {
      if (skip > 0) {
        size_t k = static_cast<size_t>(std::min<uint64_t>(skip, n));
        skip -= k;
        data += k;
        n -= k;
      }
      if (n == 0) return OkStatus();
      if (end != UINT64_MAX) {
        // Stop only once bytes beyond `end` arrive (a server ignoring the
        // range): aborting a transfer closes its connection, and a 206
        // ends on its own right at `end`.
        uint64_t want = end - (start + *delivered);
        if (n > want) {
          n = static_cast<size_t>(want);
          *stop = true;
        }
        if (n == 0) return OkStatus();
      }
      EVS_RETURN_IF_ERROR(consume(data, n));
      *delivered += n;
      return OkStatus();
    };
    HttpResponse resp;
    Status s = Exchange(ep, repo.registry, scopes, req, on_headers, on_body, &resp);
    if (!s.ok()) {
      if (s.code() != Code::kUnavailable) return s.Annotate(what);
      EVS_RETURN_IF_ERROR(retrier->Next(s.Annotate(StrCat(what, " at byte ", start + *delivered))));
      continue;
    }
    if (resp.status == 200 || resp.status == 206) {
      if (resp.stopped_early) return OkStatus();
      if (end == UINT64_MAX) return OkStatus();  // the caller checks size and digest
      if (start + *delivered >= end) return OkStatus();
      EVS_RETURN_IF_ERROR(retrier->Next(UnavailableError(what, ": response ended at byte ",
                                                         start + *delivered, " before ", end)));
      continue;
    }
    if (IsRedirect(resp.status)) {
      auto location = resp.Header("location");
      if (!location || location->empty()) {
        return FailedPreconditionError(what, ": HTTP ", resp.status, " without Location");
      }
      std::string target = ResolveUrl(url, *location);
      if (target.rfind("http://", 0) == 0 && url.rfind("https://", 0) == 0 && !IsLocalUrl(target)) {
        return FailedPreconditionError(what, ": refusing redirect from https to ",
                                       RedactUrl(target));
      }
      if (target.rfind("http://", 0) != 0 && target.rfind("https://", 0) != 0) {
        return FailedPreconditionError(what, ": redirect to unsupported URL ", RedactUrl(target));
      }
      if (++redirects > kMaxRedirects) {
        return FailedPreconditionError(what, ": more than ", kMaxRedirects, " redirects");
      }
      cache->Set(target);
      continue;
    }
    if (from_storage && (resp.status == 401 || resp.status == 403 || resp.status == 404 ||
                         resp.status == 410 || resp.status == 400)) {
      // A signed URL expired or was revoked: ask the registry for a new one.
      cache->Invalidate(url);
      EVS_LOG(kInfo) << "blob storage URL rejected; asking the registry again"
                     << Kv("blob", digest.Short()) << Kv("host", OriginOf(url))
                     << Kv("status", resp.status);
      EVS_RETURN_IF_ERROR(retrier->Next(
          UnavailableError(what, ": storage URL at ", OriginOf(url), " answered ", resp.status)));
      redirects = 0;
      continue;
    }
    if (resp.status == 416 && end == UINT64_MAX && *delivered > 0) {
      return OkStatus();  // resumed exactly at the end; the caller checks size and digest
    }
    if (IsRetryableHttp(resp.status)) {
      EVS_RETURN_IF_ERROR(retrier->Next(StatusFromResponse(resp, what), RetryAfter(resp)));
      continue;
    }
    return StatusFromResponse(resp, what);
  }
}

RegistryClient::RegistryClient(std::shared_ptr<internal::ClientState> state)
    : state_(std::move(state)) {}
RegistryClient::~RegistryClient() = default;

Result<std::unique_ptr<RegistryClient>> RegistryClient::Create(RegistryOptions options) {
  static std::once_flag once;
  static CURLcode init = CURLE_OK;
  std::call_once(once, [] { init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init != CURLE_OK) {
    return InternalError("curl_global_init: ", curl_easy_strerror(init));
  }
  if (options.max_connections_per_host < 1) {
    return InvalidArgumentError("max_connections_per_host must be at least 1");
  }
  auto state = std::make_shared<internal::ClientState>(std::move(options));
  return std::unique_ptr<RegistryClient>(new RegistryClient(std::move(state)));
}

const RegistryOptions& RegistryClient::options() const { return state_->options; }

namespace {

// The media type of a fetched manifest: a specific Content-Type, else the
// document's own mediaType, else the OCI type of its kind.
Result<std::string> ManifestMediaType(std::string_view bytes, std::string_view content_type,
                                      std::string_view what) {
  auto kind = oci::DetectManifestKind(bytes, content_type);
  if (!kind.ok()) return kind.status().Annotate(what);
  std::string ct(content_type.substr(0, content_type.find(';')));
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  // Parsed in full, so a malformed document fails here, naming what was
  // fetched, rather than later in a caller.
  if (*kind == oci::ManifestKind::kImageManifest) {
    auto m = oci::ImageManifest::Parse(bytes, content_type);
    if (!m.ok()) return m.status().Annotate(what);
    return oci::IsImageManifestMediaType(ct) ? ct : m->media_type;
  }
  auto idx = oci::ImageIndex::Parse(bytes, content_type);
  if (!idx.ok()) return idx.status().Annotate(what);
  return oci::IsImageIndexMediaType(ct) ? ct : idx->media_type;
}

}  // namespace

// GET of a manifest by tag or digest from one endpoint, size-capped and
// verified.
static Result<FetchedManifest> GetManifest(Op& op, const ResolvedEndpoint& ep,
                                           const oci::Reference& repo, const std::string& reference,
                                           const Digest& expected, int max_attempts) {
  const size_t cap = op.st->options.max_manifest_size;
  // Tags cannot contain ':'; digests always do.
  const std::string what =
      StrCat("manifest ", repo.Name(), reference.find(':') != std::string::npos ? "@" : ":",
             reference, " from ", ep.endpoint.host);
  Retrier retrier(op.policy, op.call, max_attempts);
  while (true) {
    EVS_RETURN_IF_ERROR(op.Interrupted());
    HttpRequest req = op.Request(ep, "GET", ManifestUrl(ep, repo, reference));
    req.headers.push_back(StrCat("Accept: ", oci::kManifestAcceptHeader));
    std::string body;
    auto on_headers = [&](const HttpResponse& r) -> Status {
      if (r.status != 200) return OkStatus();
      if (auto len = r.Header("content-length")) {
        if (len->size() > 15 || std::stoull("0" + *len) > cap) {
          return ResourceExhaustedError(what, ": ", *len, " bytes, over the ", cap,
                                        "-byte manifest limit");
        }
      }
      return OkStatus();
    };
    auto on_body = [&](const char* data, size_t n, bool*) -> Status {
      if (body.size() + n > cap) {
        return ResourceExhaustedError(what, ": over the ", cap, "-byte manifest limit");
      }
      body.append(data, n);
      return OkStatus();
    };
    HttpResponse resp;
    Status s = op.Exchange(ep, repo.registry, {PullScope(repo)}, req, on_headers, on_body, &resp);
    if (!s.ok()) {
      if (s.code() != Code::kUnavailable) return s;
      EVS_RETURN_IF_ERROR(retrier.Next(s.Annotate(what)));
      continue;
    }
    if (resp.status == 200) {
      auto header_digest = DockerContentDigest(resp);
      HashAlgorithm alg = !expected.empty() ? expected.algorithm()
                          : header_digest   ? header_digest->algorithm()
                                            : HashAlgorithm::kSha256;
      Digest actual = Digest::Of(alg, body);
      if (!expected.empty() && actual != expected) {
        return DataLossError(what, ": content hashes to ", actual.ToString(), ", expected ",
                             expected.ToString());
      }
      if (header_digest && *header_digest != Digest::Of(header_digest->algorithm(), body)) {
        return DataLossError(what, ": content does not match Docker-Content-Digest ",
                             header_digest->ToString());
      }
      FetchedManifest out;
      EVS_ASSIGN_OR_RETURN(out.descriptor.media_type,
                           ManifestMediaType(body, resp.Header("content-type").value_or(""), what));
      out.descriptor.digest = actual;
      out.descriptor.size = static_cast<int64_t>(body.size());
      out.bytes = std::move(body);
      return out;
    }
    if (IsRetryableHttp(resp.status)) {
      EVS_RETURN_IF_ERROR(retrier.Next(StatusFromResponse(resp, what), RetryAfter(resp)));
      continue;
    }
    return StatusFromResponse(resp, what);
  }
}

Result<oci::Descriptor> RegistryClient::Resolve(const oci::Reference& ref,
                                                const CallOptions& call) {
  Op op(state_.get(), call);
  unsigned capability = ref.digest.empty() ? kCapabilityResolve : kCapabilityPull;
  std::string reference = ref.ManifestReference();
  return op.OnEndpoints<oci::Descriptor>(
      ref.registry, capability, ref.ToString(),
      [&](const ResolvedEndpoint& ep, int attempts) -> Result<oci::Descriptor> {
        const std::string what = StrCat("resolve ", ref.ToString(), " on ", ep.endpoint.host);
        Retrier retrier(op.policy, call, attempts);
        while (true) {
          EVS_RETURN_IF_ERROR(op.Interrupted());
          HttpRequest req = op.Request(ep, "HEAD", ManifestUrl(ep, ref, reference));
          req.headers.push_back(StrCat("Accept: ", oci::kManifestAcceptHeader));
          HttpResponse resp;
          Status s = op.Exchange(ep, ref.registry, {PullScope(ref)}, req, nullptr, nullptr, &resp);
          if (!s.ok()) {
            if (s.code() != Code::kUnavailable) return s.Annotate(what);
            EVS_RETURN_IF_ERROR(retrier.Next(s.Annotate(what)));
            continue;
          }
          if (resp.status == 200) {
            auto header_digest = DockerContentDigest(resp);
            std::string ct = resp.Header("content-type").value_or("");
            ct = ct.substr(0, ct.find(';'));
            auto len = resp.Header("content-length");
            bool known_type = oci::IsImageManifestMediaType(ct) || oci::IsImageIndexMediaType(ct);
            if (header_digest && known_type && len && !len->empty() && len->size() < 16) {
              if (!ref.digest.empty() && *header_digest != ref.digest) {
                return DataLossError(what, ": registry reports digest ", header_digest->ToString());
              }
              oci::Descriptor d;
              d.media_type = ct;
              d.digest = *header_digest;
              d.size = static_cast<int64_t>(std::stoull("0" + *len));
              return d;
            }
            // No digest or type from HEAD: GET it (and verify it).
            EVS_ASSIGN_OR_RETURN(FetchedManifest m,
                                 GetManifest(op, ep, ref, reference, ref.digest, attempts));
            return m.descriptor;
          }
          if (IsRetryableHttp(resp.status)) {
            EVS_RETURN_IF_ERROR(retrier.Next(StatusFromResponse(resp, what), RetryAfter(resp)));
            continue;
          }
          return StatusFromResponse(resp, what);
        }
      });
}

Result<FetchedManifest> RegistryClient::FetchManifest(const oci::Reference& ref,
                                                      const CallOptions& call) {
  Op op(state_.get(), call);
  unsigned capability = ref.digest.empty() ? kCapabilityResolve : kCapabilityPull;
  return op.OnEndpoints<FetchedManifest>(
      ref.registry, capability, ref.ToString(), [&](const ResolvedEndpoint& ep, int attempts) {
        return GetManifest(op, ep, ref, ref.ManifestReference(), ref.digest, attempts);
      });
}

Result<FetchedManifest> RegistryClient::FetchManifest(const oci::Reference& repo,
                                                      const oci::Descriptor& desc,
                                                      const CallOptions& call) {
  if (desc.size > static_cast<int64_t>(state_->options.max_manifest_size)) {
    return ResourceExhaustedError("manifest ", desc.digest.ToString(), " of ", repo.Name(), ": ",
                                  desc.size, " bytes, over the ", state_->options.max_manifest_size,
                                  "-byte manifest limit");
  }
  Op op(state_.get(), call);
  auto m = op.OnEndpoints<FetchedManifest>(
      repo.registry, kCapabilityPull, repo.Name(), [&](const ResolvedEndpoint& ep, int attempts) {
        return GetManifest(op, ep, repo, desc.digest.ToString(), desc.digest, attempts);
      });
  if (!m.ok()) return m;
  if (m->descriptor.size != desc.size) {
    return DataLossError("manifest ", desc.digest.ToString(), " of ", repo.Name(), ": ",
                         m->descriptor.size, " bytes, descriptor says ", desc.size);
  }
  return m;
}

namespace {

// Collects a small blob in memory.
class StringSink : public ByteSink {
 public:
  explicit StringSink(size_t cap) : cap_(cap) {}
  Status Write(const void* data, size_t n) override {
    if (out.size() + n > cap_) return ResourceExhaustedError("blob over ", cap_, " bytes");
    out.append(static_cast<const char*>(data), n);
    return OkStatus();
  }
  std::string out;

 private:
  size_t cap_;
};

}  // namespace

Result<std::string> RegistryClient::FetchSmallBlob(const oci::Reference& repo,
                                                   const oci::Descriptor& desc,
                                                   const CallOptions& call) {
  size_t cap = state_->options.max_manifest_size;
  if (desc.size < 0 || desc.size > static_cast<int64_t>(cap)) {
    return ResourceExhaustedError("blob ", desc.digest.ToString(), " of ", repo.Name(), ": ",
                                  desc.size, " bytes, over the ", cap, "-byte limit");
  }
  StringSink sink(cap);
  EVS_RETURN_IF_ERROR(FetchBlob(repo, desc, &sink, call));
  return std::move(sink.out);
}

Status RegistryClient::FetchBlob(const oci::Reference& repo, const oci::Descriptor& desc,
                                 ByteSink* sink, const CallOptions& call) {
  Op op(state_.get(), call);
  const uint64_t size = static_cast<uint64_t>(desc.size);
  const std::string what = StrCat("blob ", desc.digest.ToString(), " of ", repo.Name());
  if (desc.size < 0) return InvalidArgumentError(what, ": negative size");
  Hasher hasher(desc.digest.algorithm());
  uint64_t delivered = 0;
  bool sink_failed = false;
  auto consume = [&](const char* data, size_t n) -> Status {
    if (delivered + n > size) {
      return DataLossError(what, ": server sent more than the ", size,
                           " bytes the descriptor says");
    }
    hasher.Update(data, n);
    Status s = sink->Write(data, n);
    if (!s.ok()) sink_failed = true;
    return s;
  };
  auto r = op.OnEndpoints<bool>(repo.registry, kCapabilityPull, what,
                                [&](const ResolvedEndpoint& ep, int attempts) -> Result<bool> {
                                  Retrier retrier(op.policy, call, attempts);
                                  RedirectCache cache;
                                  Status s = op.GetBlob(ep, repo, desc.digest, 0, UINT64_MAX,
                                                        &cache, &retrier, consume, &delivered);
                                  if (!s.ok()) {
                                    // A sink failure is the caller's; no other endpoint can help.
                                    if (sink_failed) op.fatal = true;
                                    return s;
                                  }
                                  return true;
                                });
  if (!r.ok()) return r.status();
  if (delivered != size) {
    return DataLossError(what, ": received ", delivered, " bytes, descriptor says ", size);
  }
  Digest actual(desc.digest.algorithm(), hasher.FinishBytes());
  if (actual != desc.digest) {
    return DataLossError(what, ": content hashes to ", actual.ToString());
  }
  return OkStatus();
}

Result<bool> RegistryClient::BlobExists(const oci::Reference& repo, const oci::Descriptor& desc,
                                        const CallOptions& call) {
  Op op(state_.get(), call);
  return op.OnEndpoints<bool>(
      repo.registry, kCapabilityPush, repo.Name(),
      [&](const ResolvedEndpoint& ep, int attempts) -> Result<bool> {
        const std::string what = StrCat("HEAD blob ", desc.digest.ToString(), " of ", repo.Name(),
                                        " on ", ep.endpoint.host);
        Retrier retrier(op.policy, call, attempts);
        while (true) {
          HttpRequest req = op.Request(ep, "HEAD", BlobUrl(ep, repo, desc.digest));
          HttpResponse resp;
          Status s =
              op.Exchange(ep, repo.registry, {PushScope(repo)}, req, nullptr, nullptr, &resp);
          if (!s.ok()) {
            if (s.code() != Code::kUnavailable) return s.Annotate(what);
            EVS_RETURN_IF_ERROR(retrier.Next(s.Annotate(what)));
            continue;
          }
          if (resp.status == 200) {
            auto len = resp.Header("content-length");
            if (len && !len->empty() && len->size() < 16 && std::stoll("0" + *len) != desc.size) {
              return false;  // a different size: treat as absent and upload
            }
            return true;
          }
          if (resp.status == 404) return false;
          if (IsRetryableHttp(resp.status)) {
            EVS_RETURN_IF_ERROR(retrier.Next(StatusFromResponse(resp, what), RetryAfter(resp)));
            continue;
          }
          return StatusFromResponse(resp, what);
        }
      });
}

Result<size_t> MemoryBlobContent::ReadAt(uint64_t offset, void* buf, size_t n) {
  if (offset >= data_.size()) return size_t{0};
  size_t k = std::min<uint64_t>(n, data_.size() - offset);
  std::memcpy(buf, data_.data() + offset, k);
  return k;
}

Result<std::unique_ptr<FileBlobContent>> FileBlobContent::Open(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat " + path);
  return std::unique_ptr<FileBlobContent>(
      new FileBlobContent(std::move(fd), static_cast<uint64_t>(st.st_size), path));
}

Result<size_t> FileBlobContent::ReadAt(uint64_t offset, void* buf, size_t n) {
  if (offset >= size_) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  return PreadFull(fd_.get(), buf, n, static_cast<off_t>(offset), path_);
}

namespace {

// Location of an upload session, resolved against the request URL.
Result<std::string> UploadLocation(const HttpResponse& resp, const std::string& request_url,
                                   std::string_view what) {
  auto loc = resp.Header("location");
  if (!loc || loc->empty()) {
    return FailedPreconditionError(what, ": HTTP ", resp.status, " without Location");
  }
  return ResolveUrl(request_url, *loc);
}

std::string WithQuery(const std::string& url, std::string_view param) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + std::string(param);
}

}  // namespace

Result<PushOutcome> RegistryClient::PushBlob(const oci::Reference& repo,
                                             const oci::Descriptor& desc, BlobContent* content,
                                             const PushBlobOptions& options,
                                             const CallOptions& call) {
  if (content->size() != static_cast<uint64_t>(desc.size)) {
    return InvalidArgumentError("push blob ", desc.digest.ToString(), ": content has ",
                                content->size(), " bytes, descriptor says ", desc.size);
  }
  EVS_ASSIGN_OR_RETURN(bool exists, BlobExists(repo, desc, call));
  if (exists) return PushOutcome::kAlreadyExists;
  Op op(state_.get(), call);
  std::vector<std::string> scopes = {PushScope(repo)};
  if (!options.mount_from.empty()) scopes.push_back("repository:" + options.mount_from + ":pull");
  return op.OnEndpoints<PushOutcome>(
      repo.registry, kCapabilityPush, repo.Name(),
      [&](const ResolvedEndpoint& ep, int attempts) -> Result<PushOutcome> {
        const std::string what = StrCat("push blob ", desc.digest.ToString(), " to ", repo.Name(),
                                        " on ", ep.endpoint.host);
        Retrier retrier(op.policy, call, attempts);
        auto retry = [&](const Status& s, const HttpResponse* resp) -> Status {
          return retrier.Next(s, resp ? RetryAfter(*resp) : std::nullopt);
        };
        while (true) {
          EVS_RETURN_IF_ERROR(op.Interrupted());
          // 1. Start a session (or mount).
          std::string start_url =
              StrCat(ep.endpoint.BaseUrl(), "/", repo.repository, "/blobs/uploads/");
          if (!options.mount_from.empty()) {
            start_url += StrCat("?mount=", desc.digest.ToString(), "&from=", options.mount_from);
          }
          HttpRequest post = op.Request(ep, "POST", start_url);
          HttpResponse resp;
          Status s = op.Exchange(ep, repo.registry, scopes, post, nullptr, nullptr, &resp);
          if (!s.ok()) {
            if (s.code() != Code::kUnavailable) return s.Annotate(what);
            EVS_RETURN_IF_ERROR(retry(s.Annotate(what), nullptr));
            continue;
          }
          if (resp.status == 201 && !options.mount_from.empty()) return PushOutcome::kMounted;
          if (resp.status != 202) {
            Status e = StatusFromResponse(resp, what);
            if (e.code() == Code::kUnavailable) {
              EVS_RETURN_IF_ERROR(retry(e, &resp));
              continue;
            }
            return e;
          }
          EVS_ASSIGN_OR_RETURN(std::string location, UploadLocation(resp, start_url, what));

          // 2. Send the bytes: one PUT, or PATCH chunks and a closing PUT.
          uint64_t size = content->size();
          bool failed_transiently = false;
          Status transient;
          const HttpResponse* transient_resp = nullptr;
          HttpResponse chunk_resp;
          if (options.chunk_size > 0) {
            for (uint64_t off = 0; off < size; off += options.chunk_size) {
              uint64_t len = std::min(options.chunk_size, size - off);
              HttpRequest patch = op.Request(ep, "PATCH", location);
              patch.body_content = content;
              patch.body_offset = off;
              patch.body_length = len;
              patch.headers.push_back("Content-Type: application/octet-stream");
              patch.headers.push_back(StrCat("Content-Range: ", off, "-", off + len - 1));
              s = op.Exchange(ep, repo.registry, scopes, patch, nullptr, nullptr, &chunk_resp);
              if (!s.ok()) {
                if (s.code() != Code::kUnavailable) return s.Annotate(what);
                failed_transiently = true;
                transient = s.Annotate(StrCat(what, ": chunk at ", off));
                break;
              }
              if (chunk_resp.status != 202) {
                Status e = StatusFromResponse(chunk_resp, StrCat(what, ": chunk at ", off));
                if (e.code() != Code::kUnavailable) return e;
                failed_transiently = true;
                transient = e;
                transient_resp = &chunk_resp;
                break;
              }
              EVS_ASSIGN_OR_RETURN(location, UploadLocation(chunk_resp, location, what));
            }
            if (failed_transiently) {
              EVS_RETURN_IF_ERROR(retry(transient, transient_resp));
              continue;  // a new session from the start
            }
          }
          HttpRequest put =
              op.Request(ep, "PUT", WithQuery(location, "digest=" + desc.digest.ToString()));
          put.headers.push_back("Content-Type: application/octet-stream");
          if (options.chunk_size == 0) {
            put.body_content = content;
            put.body_offset = 0;
            put.body_length = size;
          }
          HttpResponse put_resp;
          s = op.Exchange(ep, repo.registry, scopes, put, nullptr, nullptr, &put_resp);
          if (!s.ok()) {
            if (s.code() != Code::kUnavailable) return s.Annotate(what);
            EVS_RETURN_IF_ERROR(retry(s.Annotate(what), nullptr));
            continue;
          }
          if (put_resp.status == 201 || put_resp.status == 204) return PushOutcome::kUploaded;
          Status e = StatusFromResponse(put_resp, what);
          if (e.code() != Code::kUnavailable) return e;
          EVS_RETURN_IF_ERROR(retry(e, &put_resp));
        }
      });
}

Result<oci::Descriptor> RegistryClient::PushManifest(const oci::Reference& ref,
                                                     std::string_view media_type,
                                                     std::string_view bytes,
                                                     const CallOptions& call) {
  Op op(state_.get(), call);
  oci::Descriptor desc;
  desc.media_type = std::string(media_type);
  desc.digest =
      Digest::Of(ref.digest.empty() ? HashAlgorithm::kSha256 : ref.digest.algorithm(), bytes);
  desc.size = static_cast<int64_t>(bytes.size());
  if (!ref.digest.empty() && ref.digest != desc.digest) {
    return InvalidArgumentError("push manifest ", ref.ToString(), ": content hashes to ",
                                desc.digest.ToString());
  }
  std::string reference = ref.tag.empty() ? desc.digest.ToString() : ref.tag;
  auto r = op.OnEndpoints<bool>(
      ref.registry, kCapabilityPush, ref.ToString(),
      [&](const ResolvedEndpoint& ep, int attempts) -> Result<bool> {
        const std::string what =
            StrCat("push manifest ", ref.Name(), ":", reference, " to ", ep.endpoint.host);
        Retrier retrier(op.policy, call, attempts);
        while (true) {
          HttpRequest put = op.Request(ep, "PUT", ManifestUrl(ep, ref, reference));
          put.headers.push_back(StrCat("Content-Type: ", media_type));
          put.body_bytes = std::string(bytes);
          HttpResponse resp;
          Status s = op.Exchange(ep, ref.registry, {PushScope(ref)}, put, nullptr, nullptr, &resp);
          if (!s.ok()) {
            if (s.code() != Code::kUnavailable) return s.Annotate(what);
            EVS_RETURN_IF_ERROR(retrier.Next(s.Annotate(what)));
            continue;
          }
          if (resp.status == 201 || resp.status == 200 || resp.status == 204) {
            auto reported = DockerContentDigest(resp);
            if (reported && reported->algorithm() == desc.digest.algorithm() &&
                *reported != desc.digest) {
              return DataLossError(what, ": registry reports digest ", reported->ToString(),
                                   ", we sent ", desc.digest.ToString());
            }
            return true;
          }
          if (IsRetryableHttp(resp.status)) {
            EVS_RETURN_IF_ERROR(retrier.Next(StatusFromResponse(resp, what), RetryAfter(resp)));
            continue;
          }
          return StatusFromResponse(resp, what);
        }
      });
  if (!r.ok()) return r.status();
  return desc;
}

// ---------------------------------------------------------------------------
// RemoteBlob

struct RemoteBlob::Handle {
  std::shared_ptr<internal::ClientState> state;
  oci::Reference repo;
  std::shared_ptr<const EndpointList> endpoints;  // keeps `endpoint` alive
  const ResolvedEndpoint* endpoint = nullptr;
  RedirectCache redirect;
};

RemoteBlob::RemoteBlob(oci::Descriptor desc, std::unique_ptr<Handle> handle)
    : desc_(std::move(desc)), handle_(std::move(handle)) {}
RemoteBlob::~RemoteBlob() = default;

const std::string& RemoteBlob::host() const { return handle_->endpoint->endpoint.host; }

Result<std::unique_ptr<RemoteBlob>> RegistryClient::OpenBlob(const oci::Reference& repo,
                                                             const oci::Descriptor& desc,
                                                             const CallOptions& call) {
  Op op(state_.get(), call);
  if (desc.size < 0)
    return InvalidArgumentError("blob ", desc.digest.ToString(), ": negative size");
  EVS_ASSIGN_OR_RETURN(std::shared_ptr<const EndpointList> list, state_->Endpoints(repo.registry));
  return op.OnEndpoints<std::unique_ptr<RemoteBlob>>(
      repo.registry, kCapabilityPull, StrCat("blob ", desc.digest.ToString(), " of ", repo.Name()),
      [&](const ResolvedEndpoint& ep, int attempts) -> Result<std::unique_ptr<RemoteBlob>> {
        auto handle = std::make_unique<RemoteBlob::Handle>();
        handle->state = state_;
        handle->repo = repo;
        handle->endpoints = list;
        handle->endpoint = &ep;
        if (desc.size > 0) {
          // One byte: proves the blob is there and learns the redirect.
          Retrier retrier(op.policy, call, attempts);
          uint64_t delivered = 0;
          EVS_RETURN_IF_ERROR(op.GetBlob(
              ep, repo, desc.digest, 0, 1, &handle->redirect, &retrier,
              [](const char*, size_t) { return OkStatus(); }, &delivered));
        } else {
          EVS_ASSIGN_OR_RETURN(bool exists, BlobExists(repo, desc, call));
          if (!exists) {
            return NotFoundError("blob ", desc.digest.ToString(), " of ", repo.Name(),
                                 " not found on ", ep.endpoint.host);
          }
        }
        return std::unique_ptr<RemoteBlob>(new RemoteBlob(desc, std::move(handle)));
      });
}

Status RemoteBlob::ReadAt(uint64_t offset, void* buf, size_t n, const CallOptions& call) {
  if (offset > size() || n > size() - offset) {
    return Status(Code::kOutOfRange,
                  StrCat("blob ", desc_.digest.ToString(), ": read of ", n, " bytes at ", offset,
                         " is past its end (", size(), " bytes)"));
  }
  if (n == 0) return OkStatus();
  Op op(handle_->state.get(), call);
  Retrier retrier(op.policy, call, op.policy.max_attempts);
  uint64_t delivered = 0;
  char* out = static_cast<char*>(buf);
  EVS_RETURN_IF_ERROR(op.GetBlob(
      *handle_->endpoint, handle_->repo, desc_.digest, offset, offset + n, &handle_->redirect,
      &retrier,
      [&](const char* data, size_t k) {
        std::memcpy(out + delivered, data, k);
        return OkStatus();
      },
      &delivered));
  if (delivered != n) {
    return DataLossError("blob ", desc_.digest.ToString(), ": read ", delivered, " of ", n,
                         " bytes at ", offset);
  }
  return OkStatus();
}

Status RemoteBlob::ReadRange(uint64_t offset, uint64_t length, ByteSink* sink,
                             const CallOptions& call) {
  if (offset > size() || length > size() - offset) {
    return Status(Code::kOutOfRange,
                  StrCat("blob ", desc_.digest.ToString(), ": range of ", length, " bytes at ",
                         offset, " is past its end (", size(), " bytes)"));
  }
  if (length == 0) return OkStatus();
  Op op(handle_->state.get(), call);
  Retrier retrier(op.policy, call, op.policy.max_attempts);
  uint64_t delivered = 0;
  EVS_RETURN_IF_ERROR(op.GetBlob(
      *handle_->endpoint, handle_->repo, desc_.digest, offset, offset + length, &handle_->redirect,
      &retrier, [&](const char* data, size_t k) { return sink->Write(data, k); }, &delivered));
  if (delivered != length) {
    return DataLossError("blob ", desc_.digest.ToString(), ": read ", delivered, " of ", length,
                         " bytes at ", offset);
  }
  return OkStatus();
}

}  // namespace evs::registry
