#include "evs/snapshot/registry_layer_source.h"

#include <algorithm>
#include <thread>

#include "evs/common/byte_stream.h"
#include "evs/common/log.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"
#include "evs/registry/image.h"

namespace evs::snapshot {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxListedLayers = 1000;
constexpr size_t kMaxCachedManifests = 32;
// Room in the pipe between the download and the converter: enough to ride
// out a burst on either side, small against a layer.
constexpr size_t kPipeBytes = 8u << 20;

const std::string* Find(const Labels& labels, const char* key) {
  auto it = labels.find(key);
  return it == labels.end() ? nullptr : &it->second;
}

// The CRI's key when present, else stargz's; sets *key to the one used.
const std::string* FindEither(const Labels& labels, const char* cri, const char* stargz,
                              const char** key) {
  if (const std::string* v = Find(labels, cri)) {
    *key = cri;
    return v;
  }
  *key = stargz;
  return Find(labels, stargz);
}

Result<Digest> ParseLabelDigest(const char* key, std::string_view value) {
  auto d = Digest::Parse(value);
  if (!d.ok()) return d.status().Annotate(StrCat("label ", key));
  return *d;
}

bool IsRegistryDown(const Status& s) {
  return s.code() == Code::kUnavailable || s.code() == Code::kDeadlineExceeded;
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

Result<ImageLayerLabels> ParseImageLayerLabels(const Labels& labels) {
  const char* ref_key = nullptr;
  const char* layer_key = nullptr;
  const char* layers_key = nullptr;
  const std::string* ref = FindEither(labels, kCriImageRefLabel, kStargzReferenceLabel, &ref_key);
  const std::string* layer =
      FindEither(labels, kCriLayerDigestLabel, kStargzDigestLabel, &layer_key);
  if (ref == nullptr || layer == nullptr) {
    return NotFoundError("the labels name no image layer (", kCriImageRefLabel, " and ",
                         kCriLayerDigestLabel, ", or ", kStargzReferenceLabel, " and ",
                         kStargzDigestLabel, ")");
  }
  ImageLayerLabels out;
  auto image = oci::Reference::Parse(*ref);
  if (!image.ok()) return image.status().Annotate(StrCat("label ", ref_key));
  out.image = std::move(*image);
  EVS_ASSIGN_OR_RETURN(out.layer, ParseLabelDigest(layer_key, *layer));
  if (const std::string* m = Find(labels, kCriManifestDigestLabel)) {
    EVS_ASSIGN_OR_RETURN(Digest d, ParseLabelDigest(kCriManifestDigestLabel, *m));
    out.manifest = d;
  }
  if (const std::string* list =
          FindEither(labels, kCriImageLayersLabel, kStargzLayersLabel, &layers_key)) {
    std::string_view rest = *list;
    while (!rest.empty() && out.layers.size() < kMaxListedLayers) {
      size_t comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      auto d = Digest::Parse(item);
      if (!d.ok()) {
        return d.status().Annotate(StrCat("label ", layers_key, " entry ", out.layers.size()));
      }
      out.layers.push_back(*d);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return out;
}

// One layer being converted (or converted and waiting to be claimed).
// Fields after `desc` are guarded by the source's mutex.
struct RegistryLayerSource::Conversion {
  LayerStore* store = nullptr;
  oci::Reference repo;
  oci::Descriptor desc;
  enum class State { kQueued, kRunning, kDone } state = State::kQueued;
  bool ahead = false;  // queued ahead of its Prepare
  int waiters = 0;
  Clock::time_point done_at;
  Status status;
  std::shared_ptr<StagedLayer> staged;
};

// A manifest being fetched or fetched; guarded by the source's mutex.
struct RegistryLayerSource::CachedManifest {
  bool done = false;
  Status status;
  std::shared_ptr<const oci::ImageManifest> manifest;
};

Result<std::unique_ptr<RegistryLayerSource>> RegistryLayerSource::Create(
    RegistryLayerSourceOptions options) {
  if (options.client == nullptr) return InvalidArgumentError("convert-on-pull needs a client");
  if (options.max_concurrent < 1) {
    return InvalidArgumentError("convert-on-pull: max_concurrent must be at least 1, not ",
                                options.max_concurrent);
  }
  std::unique_ptr<RegistryLayerSource> s(new RegistryLayerSource(std::move(options)));
  for (int i = 0; i < s->options_.max_concurrent; ++i) {
    s->workers_.emplace_back([p = s.get()] { p->Work(); });
  }
  s->expirer_ = std::thread([p = s.get()] { p->ExpireUnclaimed(); });
  return s;
}

RegistryLayerSource::RegistryLayerSource(RegistryLayerSourceOptions options)
    : options_(std::move(options)) {}

RegistryLayerSource::~RegistryLayerSource() { Shutdown(); }

void RegistryLayerSource::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cancel_.Cancel(UnavailableError("convert-on-pull is shutting down"));
  work_cv_.notify_all();
  done_cv_.notify_all();
  expire_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (expirer_.joinable()) expirer_.join();
  // Layers converted but never claimed go with their staging directories;
  // destroyed outside the lock.
  std::map<std::string, std::shared_ptr<Conversion>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(conversions_);
    queue_.clear();
  }
}

RegistryLayerSource::Stats RegistryLayerSource::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.queued = static_cast<int64_t>(queue_.size());
  return s;
}

Status RegistryLayerSource::RegistryBackoff(const std::string& registry) const {
  auto it = unreachable_.find(registry);
  if (it == unreachable_.end()) return OkStatus();
  auto age = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - it->second.first);
  if (age >= options_.unreachable_backoff) return OkStatus();
  return UnavailableError("registry ", registry, " failed ", age.count(),
                          " s ago; not asked again for ", options_.unreachable_backoff.count(),
                          " s (", it->second.second.ToString(), ")");
}

Result<std::shared_ptr<const oci::ImageManifest>> RegistryLayerSource::ManifestFor(
    const ImageLayerLabels& labels) {
  // By digest when the CRI named it (the manifest is then verified against
  // it and never changes); else the reference resolved for this host, as
  // containerd did a moment ago.
  const std::string key = labels.manifest
                              ? StrCat(labels.image.Name(), "@", labels.manifest->ToString())
                              : labels.image.ToString();
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<CachedManifest> entry;
    bool fetch = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto it = manifests_.find(key);
      if (it == manifests_.end()) {
        entry = std::make_shared<CachedManifest>();
        manifests_[key] = entry;
        manifest_order_.push_back(key);
        while (manifest_order_.size() > kMaxCachedManifests) {
          manifests_.erase(manifest_order_.front());
          manifest_order_.pop_front();
        }
        fetch = true;
      } else {
        entry = it->second;
        done_cv_.wait(lock, [&] { return entry->done || stopping_; });
        if (!entry->done) return UnavailableError("convert-on-pull is shutting down");
      }
    }
    if (fetch) {
      registry::CallOptions call;
      call.cancellation = &cancel_;
      call.retry = options_.retry;
      Result<std::shared_ptr<const oci::ImageManifest>> got =
          [&]() -> Result<std::shared_ptr<const oci::ImageManifest>> {
        if (labels.manifest) {
          EVS_ASSIGN_OR_RETURN(
              registry::FetchedManifest m,
              options_.client->FetchManifest(labels.image.WithDigest(*labels.manifest), call));
          EVS_ASSIGN_OR_RETURN(oci::ImageManifest parsed,
                               oci::ImageManifest::Parse(m.bytes, m.descriptor.media_type));
          return std::make_shared<const oci::ImageManifest>(std::move(parsed));
        }
        EVS_ASSIGN_OR_RETURN(registry::PlatformImage image,
                             registry::FetchPlatformImage(*options_.client, labels.image,
                                                          oci::HostPlatform(), call));
        return std::make_shared<const oci::ImageManifest>(std::move(image.parsed));
      }();
      std::lock_guard<std::mutex> lock(mu_);
      entry->done = true;
      if (got.ok()) {
        entry->manifest = *got;
        unreachable_.erase(labels.image.registry);
      } else {
        entry->status = got.status().Annotate(StrCat("manifest of ", key));
        if (IsRegistryDown(got.status())) {
          unreachable_[labels.image.registry] = {Clock::now(), got.status()};
        }
        // Not cached: the next request asks again.
        auto it = manifests_.find(key);
        if (it != manifests_.end() && it->second == entry) manifests_.erase(it);
      }
      done_cv_.notify_all();
    }
    if (!entry->status.ok()) return entry->status;
    bool listed = std::any_of(entry->manifest->layers.begin(), entry->manifest->layers.end(),
                              [&](const oci::Descriptor& d) { return d.digest == labels.layer; });
    if (listed || fetch || labels.manifest) return entry->manifest;
    // A cached manifest of a tag that has moved since: ask once more.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = manifests_.find(key);
    if (it != manifests_.end() && it->second == entry) manifests_.erase(it);
  }
  return NotFoundError("layer ", labels.layer.ToString(), " is not in image ", key);
}

std::shared_ptr<RegistryLayerSource::Conversion> RegistryLayerSource::Enqueue(
    LayerStore& store, const oci::Reference& repo, const oci::Descriptor& desc, bool urgent) {
  const std::string key = desc.digest.ToString();
  auto it = conversions_.find(key);
  if (it != conversions_.end()) {
    std::shared_ptr<Conversion> c = it->second;
    if (urgent && c->ahead) {
      c->ahead = false;
      auto q = std::find(queue_.begin(), queue_.end(), c);
      if (q != queue_.end()) {
        queue_.erase(q);
        queue_.push_front(c);
      }
    }
    return c;
  }
  auto c = std::make_shared<Conversion>();
  c->store = &store;
  c->repo = repo;
  c->desc = desc;
  c->ahead = !urgent;
  conversions_[key] = c;
  if (urgent) {
    queue_.push_front(c);
  } else {
    queue_.push_back(c);
  }
  work_cv_.notify_one();
  return c;
}

Result<std::shared_ptr<StagedLayer>> RegistryLayerSource::Fetch(LayerStore& store,
                                                                const RemoteLayerRequest& request) {
  EVS_ASSIGN_OR_RETURN(ImageLayerLabels labels, ParseImageLayerLabels(request.labels));
  const std::string digest = labels.layer.ToString();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return UnavailableError("convert-on-pull is shutting down");
    EVS_RETURN_IF_ERROR(RegistryBackoff(labels.image.registry));
  }
  EVS_ASSIGN_OR_RETURN(std::shared_ptr<const oci::ImageManifest> manifest, ManifestFor(labels));
  // Only layers evs converts: tar, gzip, zstd (DESIGN.md §1). Anything else
  // is containerd's to unpack (or, for EROFS layers, the lazy path's).
  auto convertible = [&](const Digest& d) -> Result<const oci::Descriptor*> {
    auto it = std::find_if(manifest->layers.begin(), manifest->layers.end(),
                           [&](const oci::Descriptor& l) { return l.digest == d; });
    if (it == manifest->layers.end()) {
      return NotFoundError("layer ", d.ToString(), " is not in image ", labels.image.ToString());
    }
    auto format = oci::ClassifyLayer(it->media_type);
    if (!format.ok()) return format.status().Annotate(StrCat("layer ", d.ToString()));
    if (*format == oci::LayerFormat::kErofs) {
      return UnimplementedError("layer ", d.ToString(), " is an EROFS layer (", it->media_type,
                                "): not converted on pull");
    }
    return &*it;
  };
  EVS_ASSIGN_OR_RETURN(const oci::Descriptor* desc, convertible(labels.layer));
  if (store.Contains(digest)) {
    // Stored by an earlier pull: the snapshotter takes it from there.
    LayerRecord record;
    record.digest = digest;
    return std::make_shared<StagedLayer>(std::string(), std::move(record));
  }

  std::shared_ptr<Conversion> c;
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return UnavailableError("convert-on-pull is shutting down");
  if (conversions_.count(digest)) ++stats_.joined;
  c = Enqueue(store, labels.image, *desc, /*urgent=*/true);
  if (options_.convert_ahead) {
    for (const Digest& next : labels.layers) {
      if (next == labels.layer || conversions_.count(next.ToString())) continue;
      auto d = convertible(next);
      if (!d.ok() || store.Contains(next.ToString())) continue;
      Enqueue(store, labels.image, **d, /*urgent=*/false);
    }
  }
  ++c->waiters;
  bool abandoned = false;
  while (c->state != Conversion::State::kDone && !stopping_) {
    done_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (request.abandoned && request.abandoned()) {
      abandoned = true;
      break;
    }
  }
  --c->waiters;
  if (c->state != Conversion::State::kDone) {
    // The conversion goes on; its result waits for a later request.
    if (abandoned) return Status(Code::kCancelled, StrCat("layer ", digest, ": request abandoned"));
    return UnavailableError("convert-on-pull is shutting down");
  }
  if (!c->status.ok()) return c->status;
  // Claimed: a later request finds the layer stored instead.
  auto it = conversions_.find(digest);
  if (it != conversions_.end() && it->second == c) conversions_.erase(it);
  return c->staged;
}

void RegistryLayerSource::Work() {
  for (;;) {
    std::shared_ptr<Conversion> c;
    bool ahead = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      c = queue_.front();
      queue_.pop_front();
      c->state = Conversion::State::kRunning;
      ahead = c->ahead;
      ++stats_.running;
    }
    Convert(c.get(), ahead);
    std::shared_ptr<Conversion> dropped;  // destroyed outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      c->state = Conversion::State::kDone;
      c->done_at = Clock::now();
      --stats_.running;
      if (!c->status.ok()) {
        // Waiters have it; a later request tries again.
        auto it = conversions_.find(c->desc.digest.ToString());
        if (it != conversions_.end() && it->second == c) {
          dropped = it->second;
          conversions_.erase(it);
        }
      }
    }
    done_cv_.notify_all();
  }
}

void RegistryLayerSource::Convert(Conversion* c, bool ahead) {
  const std::string digest = c->desc.digest.ToString();
  if (c->store->Contains(digest)) {
    LayerRecord record;
    record.digest = digest;
    c->staged = std::make_shared<StagedLayer>(std::string(), std::move(record));
    return;
  }
  auto start = Clock::now();
  EVS_LOG(kInfo) << "converting layer" << Kv("layer", digest) << Kv("image", c->repo.Name())
                 << Kv("bytes", c->desc.size) << Kv("ahead", ahead ? "yes" : "no");
  // The download pushes into the pipe on a thread of its own while the
  // converter pulls from it here (registry.md, "For the snapshotter").
  BytePipe pipe(kPipeBytes);
  Status fetched;
  registry::CallOptions call;
  call.cancellation = &cancel_;
  call.retry = options_.retry;
  std::thread download([&] {
    fetched = options_.client->FetchBlob(c->repo, c->desc, &pipe, call);
    pipe.Close(fetched);
  });
  BlobLayerOptions build;
  build.compute_diff_id = options_.compute_diff_id;
  // FetchBlob checks the digest and closes the pipe with DataLoss before
  // the converter sees the end of the stream.
  build.check_blob_digest = false;
  build.max_tar_bytes = options_.max_tar_bytes;
  build.hash_threads = options_.hash_threads;
  Result<StagedLayer> staged = c->store->BuildFromBlob(&pipe, c->desc.digest, build);
  if (!staged.ok()) pipe.Cancel(staged.status());
  download.join();
  double seconds = SecondsSince(start);
  std::lock_guard<std::mutex> lock(mu_);
  if (!staged.ok()) {
    // The download's own error is the cause when there is one (the
    // converter then only saw the pipe fail).
    c->status = fetched.ok() ? staged.status() : fetched;
    ++stats_.failed;
    if (IsRegistryDown(fetched) && !cancel_.cancelled()) {
      unreachable_[c->repo.registry] = {Clock::now(), fetched};
    }
    EVS_LOG(kWarning) << "layer conversion failed" << Kv("layer", digest)
                      << Kv("image", c->repo.Name()) << Kv("error", c->status.ToString());
    return;
  }
  unreachable_.erase(c->repo.registry);
  c->staged = std::make_shared<StagedLayer>(std::move(*staged));
  ++stats_.converted;
  stats_.blob_bytes += c->desc.size;
  stats_.convert_seconds += seconds;
  EVS_LOG(kInfo) << "layer converted" << Kv("layer", digest) << Kv("image", c->repo.Name())
                 << Kv("bytes", c->desc.size) << Kv("diff_id", c->staged->record().diff_id)
                 << Kv("ms", static_cast<int64_t>(seconds * 1000))
                 << Kv("MB/s", static_cast<int64_t>(c->desc.size / 1e6 / std::max(seconds, 1e-3)));
}

void RegistryLayerSource::ExpireUnclaimed() {
  const auto period = std::max<Clock::duration>(
      std::min<Clock::duration>(options_.keep_unclaimed / 4, std::chrono::seconds(30)),
      std::chrono::milliseconds(100));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    expire_cv_.wait_for(lock, period);
    if (stopping_) break;
    std::vector<std::shared_ptr<Conversion>> expired;
    auto now = Clock::now();
    for (auto it = conversions_.begin(); it != conversions_.end();) {
      const Conversion& c = *it->second;
      if (c.state == Conversion::State::kDone && c.waiters == 0 &&
          now - c.done_at >= options_.keep_unclaimed) {
        EVS_LOG(kInfo) << "deleting a layer converted ahead and never asked for"
                       << Kv("layer", it->first) << Kv("image", c.repo.Name());
        expired.push_back(it->second);
        it = conversions_.erase(it);
        ++stats_.expired;
      } else {
        ++it;
      }
    }
    lock.unlock();
    expired.clear();  // removes their staging directories
    lock.lock();
  }
}

}  // namespace evs::snapshot
