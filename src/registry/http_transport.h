// One HTTP exchange over libcurl, with pooled connections per origin. Internal
// to the registry module: it knows nothing about registries, auth or
// retries; client.cc builds those on top. It never follows redirects (the
// caller decides where credentials may go) and never logs headers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evs/common/cancellation.h"
#include "evs/common/status.h"
#include "evs/registry/client.h"

typedef void CURL;
typedef void CURLSH;

namespace evs::registry::internal {

using Clock = std::chrono::steady_clock;

// TLS settings for one endpoint, prepared once (CA files read and joined to
// the system bundle) when the endpoint is first used.
struct TlsSettings {
  bool verify = true;
  std::string ca_pem;       // system CAs + configured CAs; empty: libcurl's default
  std::string client_cert;  // file paths; empty when none
  std::string client_key;
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, PATCH, POST
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // Request body, read on demand: either `body_bytes` or a window of
  // `body_content`.
  std::string body_bytes;
  BlobContent* body_content = nullptr;
  uint64_t body_offset = 0;
  uint64_t body_length = 0;
  const TlsSettings* tls = nullptr;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds stall_timeout{30'000};
  std::optional<Clock::time_point> deadline;
  const Cancellation* cancellation = nullptr;
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string error_body;       // start of a non-2xx body (≤ 64 KiB), for messages
  uint64_t body_delivered = 0;  // bytes handed to the body handler
  bool stopped_early = false;   // the body handler asked to stop
  bool http2 = false;

  // The first value of header `name` (lower case), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

// Receives the body of a 2xx response as it arrives. Returning an error
// aborts the transfer and Perform() returns it; setting *stop aborts the
// transfer and Perform() returns OK with stopped_early set.
using BodyHandler = std::function<Status(const char* data, size_t n, bool* stop)>;
// Called once the response headers are complete, before any body byte; an
// error aborts the transfer (e.g. a manifest whose Content-Length is over
// the cap).
using HeadersHandler = std::function<Status(const HttpResponse&)>;

// Thread-safe. Owns one pool of curl easy handles per origin
// (scheme://host:port), at most `max_per_origin` in use at once; each handle
// keeps its connection alive between requests, so consecutive requests to
// one origin reuse TCP/TLS connections. DNS and TLS sessions are shared.
class HttpTransport {
 public:
  HttpTransport(int max_per_origin, std::string user_agent);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Performs `request` once. Returns OK when a complete HTTP response was
  // received (any status: look at response->status), or stopped_early.
  // Otherwise: Unavailable for connection, reset, truncation and stall
  // failures (retryable; response->body_delivered says how far the body
  // got), FailedPrecondition for TLS verification or client-certificate
  // problems, DeadlineExceeded, Cancelled (or the cancellation's status),
  // the body or headers handler's error. Blocks; waits for a free handle
  // first when the origin's pool is busy.
  Status Perform(const HttpRequest& request, const HeadersHandler& on_headers,
                 const BodyHandler& on_body, HttpResponse* response);

  // The default CA bundle libcurl uses ("/etc/ssl/certs/ca-certificates.crt").
  std::string DefaultCaBundle() const { return default_ca_bundle_; }

 private:
  struct Pool {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<CURL*> idle;
    int in_use = 0;
  };
  Result<CURL*> Acquire(Pool* pool, const HttpRequest& request);
  void Release(Pool* pool, CURL* handle, bool reusable);
  Pool* PoolFor(std::string_view url);

  int max_per_origin_;
  std::string user_agent_;
  std::string default_ca_bundle_;
  CURLSH* share_ = nullptr;
  std::mutex share_mu_[8];
  std::mutex pools_mu_;
  std::map<std::string, std::unique_ptr<Pool>, std::less<>> pools_;

  friend void LockShare(CURL*, int, int, void*);
  friend void UnlockShare(CURL*, int, void*);
};

// "https://host:port" of an absolute URL ("" if it is not one).
std::string OriginOf(std::string_view url);
// Resolves a Location header against the URL it came from.
std::string ResolveUrl(std::string_view base, std::string_view location);
// The URL without its query string, for messages (signed URLs carry secrets
// in the query).
std::string RedactUrl(std::string_view url);

}  // namespace evs::registry::internal
