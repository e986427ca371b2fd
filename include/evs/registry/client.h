// An OCI distribution client (distribution-spec v1.1) over libcurl: resolve,
// fetch manifests and blobs (whole and by byte range), push. It is built for
// two callers: convert-on-pull, which streams a layer into a converter on
// another thread through a ByteSink (common/byte_stream.h's BytePipe), and
// lazy loading, which issues many concurrent ranged reads of one blob and
// needs them fast, bounded in time, and failing clearly when the registry is
// gone.
//
// Behaviour every operation shares (remote-snapshotters.md §2, §4):
// - Endpoints come from hosts.toml (hosts.h): mirrors with the needed
//   capability in order, then the origin. A mirror that fails is skipped
//   after at most two attempts; the error of the last endpoint is returned,
//   naming every endpoint tried.
// - Connections are reused per host (a pool of at most
//   max_connections_per_host live transfers; callers beyond it wait). HTTP/2
//   is used when a TLS server offers it. TLS verifies against the system CAs
//   plus the host's configured CAs; plain HTTP only for http:// endpoints
//   (configured, or localhost by default).
// - Auth: anonymous, Basic, or Bearer tokens obtained from the realm in
//   WWW-Authenticate with the caller's or the store's credentials. Tokens
//   are cached per (host, scopes, identity) until shortly before expiry and
//   fetched again when the registry answers 401 (one refresh per request).
//   Secrets are never logged.
// - Redirects (blob storage) are followed by hand: Authorization and
//   configured headers go only to the endpoint's own origin; an https
//   endpoint is never redirected to plain http (except to localhost). A
//   signed URL that stops working (401/403/404 from the storage host) sends
//   the request back to the registry for a fresh one.
// - Retries with exponential backoff and jitter (each wait uniform between
//   half and all of the current backoff) on connection errors, stalled
//   transfers, 408, 429 and 5xx (honouring Retry-After), bounded by
//   RetryPolicy in attempts and total time. Blob downloads resume from the
//   last byte received, keeping the running digest.
// - Errors: NotFound (404 / MANIFEST_UNKNOWN / BLOB_UNKNOWN), Unauthenticated
//   (401 after a fresh token or without credentials), PermissionDenied
//   (403), DataLoss (digest or size mismatch), OutOfRange (416 / range past
//   the end), ResourceExhausted (manifest over the cap), Unavailable (the
//   registry could not be reached or kept failing within the retry budget),
//   DeadlineExceeded (CallOptions::deadline passed), Cancelled (or the
//   cancellation's own status). Messages name the registry host, the
//   repository and the digest or tag, and the last HTTP status or curl error.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "evs/common/byte_stream.h"
#include "evs/common/cancellation.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/oci/manifest.h"
#include "evs/oci/reference.h"
#include "evs/registry/credentials.h"

namespace evs::registry {

// Bounds on retrying one operation. The defaults suit a pull of a large
// layer over a flaky link; lazy reads pass tighter ones per call.
struct RetryPolicy {
  int max_attempts = 6;  // including the first
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{10'000};
  // No new attempt starts after this much time since the operation began
  // (a server's Retry-After beyond it ends the operation at once).
  std::chrono::milliseconds max_elapsed{120'000};
};

struct RegistryOptions {
  // containerd's registry config_path ("/etc/containerd/certs.d"); empty for
  // none (every registry is its own origin, https except localhost).
  std::string hosts_dir;
  // Where credentials come from when a call does not bring its own; null for
  // anonymous only. Use DockerConfigCredentials::Load() for the CLI.
  std::shared_ptr<CredentialStore> credentials;
  // Live transfers per host (scheme://host:port); more callers wait.
  int max_connections_per_host = 8;
  // TCP + TLS connection setup.
  std::chrono::milliseconds connect_timeout{10'000};
  // A transfer that moves no byte (either way) for this long is aborted and
  // retried. Checked whenever libcurl reports progress, at least once a
  // second, so it fires between stall_timeout and stall_timeout + 1 s.
  std::chrono::milliseconds stall_timeout{30'000};
  RetryPolicy retry;
  // Manifests, indexes and configs larger than this are refused
  // (ResourceExhausted) before they are read in full.
  size_t max_manifest_size = 4u << 20;
  // A server that ignores Range (answers 200 with the whole blob) is read
  // and discarded up to the requested offset only if the offset is at most
  // this; beyond it the read fails with FailedPrecondition.
  uint64_t max_range_discard = 64u << 20;
  std::string user_agent = "evs/0.1";
};

// Per-call settings. All optional.
struct CallOptions {
  // Checked between retries and about once a second during a transfer;
  // the operation then returns cancellation->status().
  const Cancellation* cancellation = nullptr;
  // The operation fails with DeadlineExceeded when it passes, even in the
  // middle of a transfer.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  // Used instead of RegistryOptions::credentials for this call.
  std::optional<Credentials> credentials;
  // Replaces RegistryOptions::retry for this call.
  std::optional<RetryPolicy> retry;
};

// A manifest or index as served, verified against its digest.
struct FetchedManifest {
  // media type (served Content-Type, else the document's own), digest of
  // `bytes`, size.
  oci::Descriptor descriptor;
  std::string bytes;
};

// Bytes that can be read from any offset more than once: what an upload
// reads, again on retry.
class BlobContent {
 public:
  virtual ~BlobContent() = default;
  virtual uint64_t size() const = 0;
  // Reads up to `n` bytes at `offset`; fewer only at the end.
  virtual Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) = 0;
};

// A blob in memory.
class MemoryBlobContent : public BlobContent {
 public:
  explicit MemoryBlobContent(std::string data) : data_(std::move(data)) {}
  uint64_t size() const override { return data_.size(); }
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) override;

 private:
  std::string data_;
};

// A blob in a file (opened once, read with pread).
class FileBlobContent : public BlobContent {
 public:
  static Result<std::unique_ptr<FileBlobContent>> Open(const std::string& path);
  uint64_t size() const override { return size_; }
  Result<size_t> ReadAt(uint64_t offset, void* buf, size_t n) override;

 private:
  FileBlobContent(UniqueFd fd, uint64_t size, std::string path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}
  UniqueFd fd_;
  uint64_t size_;
  std::string path_;
};

struct PushBlobOptions {
  // 0: one PUT with the whole blob. Otherwise PATCH requests of this many
  // bytes, then the closing PUT.
  uint64_t chunk_size = 0;
  // Try a cross-repository mount from this repository (same registry)
  // first; falls back to uploading when the registry declines.
  std::string mount_from;
};

enum class PushOutcome {
  kAlreadyExists,  // HEAD found it; nothing sent
  kMounted,        // cross-repository mount
  kUploaded,
};

class RemoteBlob;
namespace internal {
struct ClientState;
}  // namespace internal

// Thread-safe: one client serves the whole process and shares its
// connection pools and token cache among all callers.
class RegistryClient {
 public:
  // Initialises libcurl (once per process) and loads nothing else; hosts.toml
  // is read when a registry is first used and cached for the client's life.
  static Result<std::unique_ptr<RegistryClient>> Create(RegistryOptions options);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  const RegistryOptions& options() const;

  // The descriptor of the manifest or index `ref` names: a HEAD with the
  // manifest Accept header, falling back to GET when the server sends no
  // Docker-Content-Digest. For a digest reference the digest is the
  // reference's own (and the fetched bytes are checked against it when GET
  // was needed). Uses endpoints with the resolve capability (pull for
  // digest references). One or two round trips.
  Result<oci::Descriptor> Resolve(const oci::Reference& ref, const CallOptions& call = {});

  // GETs the manifest or index `ref` names (by digest if pinned, else by
  // tag), at most max_manifest_size bytes, and verifies it: against the
  // pinned digest, else against Docker-Content-Digest when present. The
  // document is parsed once here, so a malformed or mislabelled one is an
  // InvalidArgument (Unimplemented for Docker schema 1) naming the reference.
  Result<FetchedManifest> FetchManifest(const oci::Reference& ref, const CallOptions& call = {});
  // GETs the manifest `desc` names from `repo` and verifies digest and size.
  Result<FetchedManifest> FetchManifest(const oci::Reference& repo, const oci::Descriptor& desc,
                                        const CallOptions& call = {});

  // GETs a small blob (an image config) into memory, at most
  // max_manifest_size bytes, verified against `desc`.
  Result<std::string> FetchSmallBlob(const oci::Reference& repo, const oci::Descriptor& desc,
                                     const CallOptions& call = {});

  // Streams blob `desc` of `repo` into `sink`, hashing as the bytes flow.
  // An interrupted transfer resumes (Range) from the last byte the sink
  // took, so the sink sees every byte exactly once, in order. After the last
  // byte the digest and size are checked: on mismatch DataLoss — the sink
  // has already consumed the bytes, so the caller discards what it made of
  // them (write to a temp file, commit only on OK). A sink error stops the
  // transfer and is returned (BytePipe::Cancel from a consumer lands here).
  // Blocks for the transfer; memory is libcurl's receive buffer (256 KiB).
  Status FetchBlob(const oci::Reference& repo, const oci::Descriptor& desc, ByteSink* sink,
                   const CallOptions& call = {});

  // Prepares ranged reads of blob `desc` (lazy loading): locates an endpoint
  // that serves it (one GET of byte 0, which also learns the storage
  // redirect) and returns a handle that keeps that endpoint and redirect.
  // NotFound when no endpoint has the blob.
  Result<std::unique_ptr<RemoteBlob>> OpenBlob(const oci::Reference& repo,
                                               const oci::Descriptor& desc,
                                               const CallOptions& call = {});

  // HEAD of a blob: true if present (and of the right size when the server
  // says), false on 404.
  Result<bool> BlobExists(const oci::Reference& repo, const oci::Descriptor& desc,
                          const CallOptions& call = {});

  // Uploads `content` as blob `desc` unless the registry has it (HEAD), or
  // mounts it from options.mount_from. The registry checks the digest we
  // announce; `content` must hash to desc.digest (the registry refuses it
  // otherwise: DataLoss / InvalidArgument). Uses push-capable endpoints.
  Result<PushOutcome> PushBlob(const oci::Reference& repo, const oci::Descriptor& desc,
                               BlobContent* content, const PushBlobOptions& options = {},
                               const CallOptions& call = {});

  // PUTs a manifest or index under `ref`'s tag (or digest when the reference
  // has no tag) with Content-Type `media_type`. Returns its descriptor; the
  // digest is computed locally and checked against the one the registry
  // reports.
  Result<oci::Descriptor> PushManifest(const oci::Reference& ref, std::string_view media_type,
                                       std::string_view bytes, const CallOptions& call = {});

 private:
  explicit RegistryClient(std::shared_ptr<internal::ClientState> state);
  std::shared_ptr<internal::ClientState> state_;
};

// An open blob for ranged reads. Thread-safe: many threads may call ReadAt()
// at once; they share the client's connection pool and token cache and the
// blob's cached storage URL. It holds a reference to the client's shared
// state (pools, tokens), so it stays usable if the RegistryClient object is
// destroyed first.
class RemoteBlob {
 public:
  ~RemoteBlob();
  const oci::Descriptor& descriptor() const { return desc_; }
  uint64_t size() const { return static_cast<uint64_t>(desc_.size); }
  // The endpoint host serving it ("mirror:5000"), for log lines.
  const std::string& host() const;

  // Reads exactly `n` bytes at `offset` into `buf` with one ranged GET
  // (retried per the policy; a 206 whose Content-Range does not start at
  // `offset` is an error, a 200 is read up to offset+n and cut off — see
  // RegistryOptions::max_range_discard). OutOfRange when offset+n exceeds
  // the blob size. The bytes are not verified here; lazy/ checks them
  // against the verity tree. Cost: one round trip when the connection and
  // the redirect are warm.
  Status ReadAt(uint64_t offset, void* buf, size_t n, const CallOptions& call = {});

  // Streams bytes [offset, offset+length) into `sink`, resuming after
  // interruptions like FetchBlob, without digest verification.
  Status ReadRange(uint64_t offset, uint64_t length, ByteSink* sink, const CallOptions& call = {});

 private:
  friend class RegistryClient;
  struct Handle;
  RemoteBlob(oci::Descriptor desc, std::unique_ptr<Handle> handle);
  oci::Descriptor desc_;
  std::unique_ptr<Handle> handle_;
};

}  // namespace evs::registry
