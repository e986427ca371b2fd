#include "http_transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "evs/common/log.h"

namespace evs::registry::internal {

void LockShare(CURL*, int data, int, void* user) {
  auto* t = static_cast<HttpTransport*>(user);
  t->share_mu_[static_cast<size_t>(data) % 8].lock();
}

void UnlockShare(CURL*, int data, void* user) {
  auto* t = static_cast<HttpTransport*>(user);
  t->share_mu_[static_cast<size_t>(data) % 8].unlock();
}

namespace {

extern "C" void LockShareC(CURL* h, curl_lock_data data, curl_lock_access access, void* user) {
  LockShare(h, static_cast<int>(data), static_cast<int>(access), user);
}
extern "C" void UnlockShareC(CURL* h, curl_lock_data data, void* user) {
  UnlockShare(h, static_cast<int>(data), user);
}

constexpr size_t kMaxErrorBody = 64u << 10;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// Everything one Perform() call's callbacks need.
struct Transfer {
  const HttpRequest* request;
  HttpResponse* response;
  const HeadersHandler* on_headers;
  const BodyHandler* on_body;
  Status handler_status;
  bool headers_done = false;
  bool stop = false;
  uint64_t upload_pos = 0;
  Status upload_status;
  bool cancelled = false;
  bool deadline_passed = false;
  // Stall detection: when the byte counts last moved.
  bool stalled = false;
  curl_off_t last_bytes = -1;
  Clock::time_point last_progress = Clock::now();
};

size_t OnHeader(char* data, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nitems;
  std::string_view line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response (after 100 Continue, or the real one): start over.
    t->response->headers.clear();
    t->response->status = 0;
    size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      long code = 0;
      for (size_t i = sp + 1; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]));
           ++i) {
        code = code * 10 + (line[i] - '0');
        if (code > 999) break;
      }
      t->response->status = code;
    }
    t->response->http2 = line.rfind("HTTP/2", 0) == 0;
    return n;
  }
  std::string_view trimmed = Trim(line);
  if (trimmed.empty()) {
    // End of a header block. 1xx blocks are followed by another.
    if (t->response->status >= 200 && !t->headers_done) {
      t->headers_done = true;
      if (*t->on_headers) {
        t->handler_status = (*t->on_headers)(*t->response);
        if (!t->handler_status.ok()) return 0;  // aborts with CURLE_WRITE_ERROR
      }
    }
    return n;
  }
  size_t colon = trimmed.find(':');
  if (colon != std::string_view::npos && t->response->headers.size() < 200) {
    t->response->headers.emplace_back(Lower(Trim(trimmed.substr(0, colon))),
                                      std::string(Trim(trimmed.substr(colon + 1))));
  }
  return n;
}

size_t OnWrite(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nmemb;
  long status = t->response->status;
  if (status < 200 || status >= 300) {
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->response->error_body.size());
    t->response->error_body.append(data, std::min(room, n));
    return n;
  }
  if (!*t->on_body) return n;
  bool stop = false;
  t->handler_status = (*t->on_body)(data, n, &stop);
  if (!t->handler_status.ok()) return 0;
  t->response->body_delivered += n;
  if (stop) {
    t->stop = true;
    return 0;
  }
  return n;
}

size_t OnRead(char* buffer, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const HttpRequest& r = *t->request;
  size_t room = size * nitems;
  if (r.body_content != nullptr) {
    uint64_t left = r.body_length - t->upload_pos;
    size_t want = static_cast<size_t>(std::min<uint64_t>(left, room));
    if (want == 0) return 0;
    auto got = r.body_content->ReadAt(r.body_offset + t->upload_pos, buffer, want);
    if (!got.ok()) {
      t->upload_status = got.status();
      return CURL_READFUNC_ABORT;
    }
    if (*got == 0) {
      t->upload_status =
          DataLossError("upload body ended after ", t->upload_pos, " of ", r.body_length, " bytes");
      return CURL_READFUNC_ABORT;
    }
    t->upload_pos += *got;
    return *got;
  }
  size_t left = r.body_bytes.size() - static_cast<size_t>(t->upload_pos);
  size_t k = std::min(left, room);
  std::memcpy(buffer, r.body_bytes.data() + t->upload_pos, k);
  t->upload_pos += k;
  return k;
}

// Called by libcurl about once a second when idle, more often while data
// flows. libcurl's own low-speed check averages over five seconds, so a
// stall after a burst would go unnoticed for that long; this one counts from
// the last byte.
int OnProgress(void* user, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t ulnow) {
  auto* t = static_cast<Transfer*>(user);
  auto now = Clock::now();
  if (dlnow + ulnow != t->last_bytes) {
    t->last_bytes = dlnow + ulnow;
    t->last_progress = now;
  } else if (now - t->last_progress > t->request->stall_timeout) {
    t->stalled = true;
    return 1;
  }
  if (t->request->cancellation != nullptr && t->request->cancellation->cancelled()) {
    t->cancelled = true;
    return 1;
  }
  if (t->request->deadline && Clock::now() >= *t->request->deadline) {
    t->deadline_passed = true;
    return 1;
  }
  return 0;
}

Status CurlFailure(CURLcode code, const char* errbuf, const HttpRequest& req) {
  std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(code);
  while (!detail.empty() && detail.back() == '\n') detail.pop_back();
  std::string where = StrCat(req.method, " ", RedactUrl(req.url));
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
      return FailedPreconditionError(where, ": TLS: ", detail,
                                     " (configure ca, client or skip_verify in hosts.toml)");
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return InvalidArgumentError(where, ": ", detail);
    case CURLE_OPERATION_TIMEDOUT:
      return UnavailableError(where, ": stalled: ", detail);
    default:
      return UnavailableError(where, ": ", detail);
  }
}

}  // namespace

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return std::nullopt;
}

HttpTransport::HttpTransport(int max_per_origin, std::string user_agent)
    : max_per_origin_(std::max(1, max_per_origin)), user_agent_(std::move(user_agent)) {
  share_ = curl_share_init();
  if (share_ != nullptr) {
    curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, LockShareC);
    curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, UnlockShareC);
    curl_share_setopt(share_, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  default_ca_bundle_ = "/etc/ssl/certs/ca-certificates.crt";
  if (CURL* probe = curl_easy_init()) {
    char* path = nullptr;
    if (curl_easy_getinfo(probe, CURLINFO_CAINFO, &path) == CURLE_OK && path != nullptr) {
      default_ca_bundle_ = path;
    }
    curl_easy_cleanup(probe);
  }
}

HttpTransport::~HttpTransport() {
  for (auto& [origin, pool] : pools_) {
    for (CURL* h : pool->idle) curl_easy_cleanup(h);
  }
  if (share_ != nullptr) curl_share_cleanup(share_);
}

HttpTransport::Pool* HttpTransport::PoolFor(std::string_view url) {
  std::string origin = OriginOf(url);
  std::lock_guard<std::mutex> lock(pools_mu_);
  auto it = pools_.find(origin);
  if (it == pools_.end()) it = pools_.emplace(origin, std::make_unique<Pool>()).first;
  return it->second.get();
}

Result<CURL*> HttpTransport::Acquire(Pool* pool, const HttpRequest& request) {
  std::unique_lock<std::mutex> lock(pool->mu);
  while (pool->in_use >= max_per_origin_) {
    // Wake up now and then to notice cancellation and deadlines.
    pool->cv.wait_for(lock, std::chrono::milliseconds(100));
    if (request.cancellation != nullptr && request.cancellation->cancelled()) {
      return request.cancellation->status();
    }
    if (request.deadline && Clock::now() >= *request.deadline) {
      return Status(Code::kDeadlineExceeded, StrCat(request.method, " ", RedactUrl(request.url),
                                                    ": deadline passed waiting for a connection"));
    }
  }
  ++pool->in_use;
  if (!pool->idle.empty()) {
    CURL* h = pool->idle.back();
    pool->idle.pop_back();
    return h;
  }
  lock.unlock();
  CURL* h = curl_easy_init();
  if (h == nullptr) {
    Release(pool, nullptr, false);
    return InternalError("curl_easy_init failed");
  }
  return h;
}

void HttpTransport::Release(Pool* pool, CURL* handle, bool reusable) {
  std::lock_guard<std::mutex> lock(pool->mu);
  --pool->in_use;
  if (handle != nullptr) {
    if (reusable) {
      pool->idle.push_back(handle);
    } else {
      curl_easy_cleanup(handle);
    }
  }
  pool->cv.notify_one();
}

Status HttpTransport::Perform(const HttpRequest& request, const HeadersHandler& on_headers,
                              const BodyHandler& on_body, HttpResponse* response) {
  *response = HttpResponse();
  if (request.cancellation != nullptr && request.cancellation->cancelled()) {
    return request.cancellation->status();
  }
  Pool* pool = PoolFor(request.url);
  EVS_ASSIGN_OR_RETURN(CURL * h, Acquire(pool, request));
  curl_easy_reset(h);  // keeps the live connection, DNS and TLS session caches

  Transfer t{&request, response, &on_headers, &on_body};
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = nullptr;
  for (const auto& hdr : request.headers) headers = curl_slist_append(headers, hdr.c_str());
  // No "Expect: 100-continue" round trip before uploads.
  headers = curl_slist_append(headers, "Expect:");

  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent_.c_str());
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L << 10);
  curl_easy_setopt(h, CURLOPT_SHARE, share_);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::max<int64_t>(1, request.connect_timeout.count())));
  if (request.deadline) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(*request.deadline - Clock::now());
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, left.count())));
  }
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);

  if (const TlsSettings* tls = request.tls) {
    if (!tls->verify) {
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!tls->ca_pem.empty()) {
      curl_blob blob{const_cast<char*>(tls->ca_pem.data()), tls->ca_pem.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (!tls->client_cert.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, tls->client_cert.c_str());
      curl_easy_setopt(h, CURLOPT_SSLKEY,
                       (tls->client_key.empty() ? tls->client_cert : tls->client_key).c_str());
    }
  }

  bool has_body = request.body_content != nullptr || !request.body_bytes.empty();
  uint64_t body_size =
      request.body_content != nullptr ? request.body_length : request.body_bytes.size();
  if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT" || request.method == "PATCH") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
    curl_easy_setopt(h, CURLOPT_READDATA, &t);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_size));
    if (request.method == "PATCH") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PATCH");
  } else if (request.method == "POST") {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    if (has_body) {
      curl_easy_setopt(h, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(h, CURLOPT_READDATA, &t);
    } else {
      // Without fields libcurl's default read callback would read stdin.
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_size));
  } else if (request.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }

  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(headers);
  // A handle whose transfer was cut short has closed its connection; it
  // can still be reused (it will reconnect).
  Release(pool, h, true);

  // A body shorter than its Content-Length is CURLE_PARTIAL_FILE: Unavailable.
  if (rc == CURLE_OK) return OkStatus();
  if (t.stop && rc == CURLE_WRITE_ERROR) return OkStatus();
  if (!t.handler_status.ok()) return t.handler_status;
  if (!t.upload_status.ok()) return t.upload_status;
  if (t.cancelled) return request.cancellation->status();
  if (t.stalled) {
    return UnavailableError(request.method, " ", RedactUrl(request.url), ": stalled: no data for ",
                            request.stall_timeout.count(), " ms after ", response->body_delivered,
                            " body bytes");
  }
  if (t.deadline_passed ||
      (rc == CURLE_OPERATION_TIMEDOUT && request.deadline && Clock::now() >= *request.deadline)) {
    return Status(Code::kDeadlineExceeded,
                  StrCat(request.method, " ", RedactUrl(request.url), ": deadline passed after ",
                         response->body_delivered, " body bytes"));
  }
  return CurlFailure(rc, errbuf, request);
}

std::string OriginOf(std::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "";
  size_t host_end = url.find_first_of("/?#", scheme_end + 3);
  std::string origin = Lower(url.substr(0, host_end));
  // Default ports are implicit: https://h:443 and https://h are one origin.
  if (origin.rfind("https://", 0) == 0 && origin.size() > 4 &&
      origin.compare(origin.size() - 4, 4, ":443") == 0) {
    origin.resize(origin.size() - 4);
  } else if (origin.rfind("http://", 0) == 0 && origin.size() > 3 &&
             origin.compare(origin.size() - 3, 3, ":80") == 0) {
    origin.resize(origin.size() - 3);
  }
  return origin;
}

std::string ResolveUrl(std::string_view base, std::string_view location) {
  location = Trim(location);
  if (location.find("://") != std::string_view::npos) return std::string(location);
  if (location.rfind("//", 0) == 0) {
    size_t colon = base.find(':');
    return std::string(base.substr(0, colon + 1)) + std::string(location);
  }
  std::string origin = OriginOf(base);
  if (!location.empty() && location.front() == '/') return origin + std::string(location);
  // Relative to the base's directory.
  size_t query = base.find('?');
  std::string_view path = base.substr(0, query);
  size_t slash = path.rfind('/');
  return std::string(path.substr(0, slash + 1)) + std::string(location);
}

std::string RedactUrl(std::string_view url) {
  size_t q = url.find('?');
  if (q == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, q)) + "?…";
}

}  // namespace evs::registry::internal
