// RegistryLayerSource: convert-on-pull (DESIGN.md §1). When containerd's
// unpacker prepares a layer and the request carries the image labels the CRI
// (and `ctr-remote images rpull`) add, evs fetches the layer blob from the
// registry itself and streams it through decompression, tar parsing, EROFS
// writing and the verity tree in one pass (LayerStore::BuildFromBlob fed by
// RegistryClient::FetchBlob on another thread through a BytePipe: no copy of
// the blob on disk). The snapshotter commits the result under the chain ID
// and containerd skips download and unpack.
//
//   labels (reference/remote-snapshotters.md §1)   what evs takes from them
//   containerd.io/snapshot/cri.image-ref           the image: registry, repository
//     or …/remote/stargz.reference (ctr-remote)
//   containerd.io/snapshot/cri.layer-digest        the layer blob to fetch
//     or …/remote/stargz.digest
//   containerd.io/snapshot/cri.manifest-digest     the manifest naming its size and media
//                                                  type (fetched by digest; without it the
//                                                  image reference is resolved for this host)
//   containerd.io/snapshot/cri.image-layers        this layer and the ones after it: converted
//     or …/remote/stargz.layers                    ahead, in parallel, before containerd asks
//
// Concurrency: at most `max_concurrent` conversions run at once; a layer
// containerd waits for goes to the head of the queue, layers converted ahead
// queue behind. Requests for a layer being converted wait for that one
// conversion (two pulls of one image, or one layer in two images, convert it
// once). A layer converted ahead that nobody asks for is deleted after
// `keep_unclaimed`.
//
// Failures are values: no image labels (a plain `ctr images pull`) is
// NotFound; malformed labels InvalidArgument naming the label; a media type
// evs does not convert Unimplemented; registry errors as the registry
// client reports them (naming host, repository and digest). The snapshotter
// then falls back to unpacking. A conversion that fails leaves nothing: the
// staging directory goes with it, and a daemon killed mid-conversion leaves
// only a staging directory that the next start removes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "evs/common/cancellation.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/oci/manifest.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"
#include "evs/snapshot/snapshotter.h"

namespace evs::snapshot {

// Label keys (containerd pkg/snapshotters/annotations.go; stargz-snapshotter
// fs/source/source.go, which `ctr-remote images rpull` uses).
inline constexpr const char* kCriImageRefLabel = "containerd.io/snapshot/cri.image-ref";
inline constexpr const char* kCriLayerDigestLabel = "containerd.io/snapshot/cri.layer-digest";
inline constexpr const char* kCriManifestDigestLabel = "containerd.io/snapshot/cri.manifest-digest";
inline constexpr const char* kCriImageLayersLabel = "containerd.io/snapshot/cri.image-layers";
inline constexpr const char* kStargzReferenceLabel =
    "containerd.io/snapshot/remote/stargz.reference";
inline constexpr const char* kStargzDigestLabel = "containerd.io/snapshot/remote/stargz.digest";
inline constexpr const char* kStargzLayersLabel = "containerd.io/snapshot/remote/stargz.layers";

// What a Prepare's labels say about the layer to fetch.
struct ImageLayerLabels {
  oci::Reference image;            // registry and repository (tag/digest as given)
  Digest layer;                    // the layer blob
  std::optional<Digest> manifest;  // the manifest listing it, when named
  std::vector<Digest> layers;      // this layer and the ones after it (may be empty)
};

// Reads the CRI labels, else stargz's. NotFound when neither names an image
// and a layer; InvalidArgument naming the label when a value does not parse
// (a reference, a digest, a list entry). At most 1000 list entries are
// read. Pure; O(size of the labels).
Result<ImageLayerLabels> ParseImageLayerLabels(const Labels& labels);

struct RegistryLayerSourceOptions {
  // Not owned; must outlive the source. One client serves the daemon (its
  // connection pools, tokens, hosts.toml and credentials are shared).
  registry::RegistryClient* client = nullptr;
  // Conversions at once (each one a download plus ~2 CPUs of converting);
  // containerd downloads 3 layers at once by default.
  int max_concurrent = 3;
  // Convert the layers listed after this one (cri.image-layers) ahead of
  // their Prepare. containerd prepares layers one after the other, so
  // without this the layers of an image would convert one at a time.
  bool convert_ahead = true;
  // See BlobLayerOptions::compute_diff_id and
  // SnapshotterOptions::verify_remote_chain.
  bool compute_diff_id = true;
  // Cap on a layer's uncompressed size (ResourceExhausted beyond it).
  uint64_t max_tar_bytes = 64ull << 30;
  // A layer converted ahead that no Prepare claims within this time is
  // deleted (a pull that was abandoned, or fell back to unpacking).
  std::chrono::seconds keep_unclaimed{600};
  // After a registry could not be reached, its layers fall back at once
  // for this long instead of each waiting out the retries (containerd
  // fetches them itself meanwhile).
  std::chrono::seconds unreachable_backoff{30};
  // Retries of one blob download: fewer than the client's default, since
  // falling back to containerd is always possible.
  registry::RetryPolicy retry{4, std::chrono::milliseconds(200), std::chrono::milliseconds(2000),
                              std::chrono::milliseconds(20'000)};
  // Verity level-0 hashing threads per conversion (0: one per CPU).
  int hash_threads = 0;
};

class RegistryLayerSource : public RemoteLayerSource {
 public:
  // Starts the worker threads. InvalidArgument without a client or with
  // max_concurrent < 1.
  static Result<std::unique_ptr<RegistryLayerSource>> Create(RegistryLayerSourceOptions options);
  // Shutdown().
  ~RegistryLayerSource() override;

  // RemoteLayerSource: parses the labels, finds the layer's descriptor in
  // its manifest (one fetch per image, cached), returns it when stored
  // already, else queues its conversion (and the following layers') and
  // waits for it. Blocks for the conversion.
  Result<std::shared_ptr<StagedLayer>> Fetch(LayerStore& store,
                                             const RemoteLayerRequest& request) override;

  // Cancels conversions in progress (their downloads stop within about a
  // second), wakes every waiting Fetch with Unavailable, deletes what was
  // converted but not claimed, and joins the workers. Idempotent.
  void Shutdown();

  // Counters for monitoring.
  struct Stats {
    int64_t converted = 0;       // conversions that succeeded
    int64_t failed = 0;          // conversions that failed
    int64_t joined = 0;          // requests served by a conversion already under way or done ahead
    int64_t expired = 0;         // layers converted ahead and never claimed
    int64_t blob_bytes = 0;      // bytes downloaded by successful conversions
    double convert_seconds = 0;  // wall time of successful conversions
    int64_t running = 0;         // conversions now
    int64_t queued = 0;
  };
  Stats stats() const;

 private:
  struct Conversion;
  struct CachedManifest;
  explicit RegistryLayerSource(RegistryLayerSourceOptions options);

  // The manifest naming `labels.layer` (cached per image and manifest).
  Result<std::shared_ptr<const oci::ImageManifest>> ManifestFor(const ImageLayerLabels& labels);
  // Queues a conversion of `desc` unless one exists; `urgent` puts it (or
  // moves a queued one) at the head. Call with mu_ held.
  std::shared_ptr<Conversion> Enqueue(LayerStore& store, const oci::Reference& repo,
                                      const oci::Descriptor& desc, bool urgent);
  void Work();
  void Convert(Conversion* c, bool ahead);
  void ExpireUnclaimed();
  Status RegistryBackoff(const std::string& registry) const;

  RegistryLayerSourceOptions options_;
  Cancellation cancel_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;    // queue_ changed, or stopping
  std::condition_variable done_cv_;    // a conversion or manifest finished, or stopping
  std::condition_variable expire_cv_;  // stopping
  bool stopping_ = false;
  std::map<std::string, std::shared_ptr<Conversion>> conversions_;  // by blob digest
  std::deque<std::shared_ptr<Conversion>> queue_;
  std::map<std::string, std::shared_ptr<CachedManifest>> manifests_;  // by image@manifest
  std::deque<std::string> manifest_order_;                            // oldest first
  std::map<std::string, std::pair<std::chrono::steady_clock::time_point, Status>> unreachable_;
  Stats stats_;
  std::vector<std::thread> workers_;
  std::thread expirer_;
};

}  // namespace evs::snapshot
