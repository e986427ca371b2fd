#include "evs/lazy/lazy_layer.h"

#include <sys/stat.h>

#include <cerrno>

#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/common/mount.h"

namespace evs::lazy {
namespace {

// Hands VerifiedBlockFile (which owns its source) a view of a source the
// layer and the background fetcher share.
class SharedSource : public verity::LayerBlockSource {
 public:
  explicit SharedSource(std::shared_ptr<LazyBlockSource> source) : source_(std::move(source)) {}
  Status ReadAt(uint64_t offset, void* buf, size_t n) override {
    return source_->ReadAt(offset, buf, n);
  }
  bool IsLocal(uint64_t offset, uint64_t n) const override { return source_->IsLocal(offset, n); }
  uint64_t size() const override { return source_->size(); }
  const std::string& name() const override { return source_->name(); }

 private:
  std::shared_ptr<LazyBlockSource> source_;
};

constexpr const char* kFuseFile = "fuse";

// A FUSE file left mounted by a daemon that died answers ENOTCONN; it has
// to go before a new one can be mounted there.
void ClearStaleFuseFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 && errno == ENOTCONN) {
    EVS_LOG(kWarning) << "removing a dead FUSE file left by an earlier run" << Kv("path", path);
    (void)Unmount(path, /*detach=*/true);
  }
}

}  // namespace

std::string LazyLayer::LayerFile(const std::string& cache_dir) {
  return JoinPath(cache_dir, LayerCache::kDataFile);
}
std::string LazyLayer::layer_file() const { return LayerFile(cache_dir_); }

bool LazyLayer::IsComplete(const std::string& cache_dir, const Digest& root) {
  return LayerCache::IsComplete(cache_dir, root);
}

Status LazyLayer::RemoveCache(const std::string& cache_dir) {
  return LayerCache::Remove(cache_dir);
}

Result<std::unique_ptr<LazyLayer>> LazyLayer::Attach(registry::RegistryClient* client,
                                                     const RemoteLayer& layer,
                                                     const std::string& cache_dir,
                                                     const std::string& target,
                                                     LazyLayerOptions options) {
  const auto start = std::chrono::steady_clock::now();
  const std::string name = StrCat("layer ", layer.descriptor.digest.ToString());
  if (IsMountPoint(target)) {
    return FailedPreconditionError(name, ": mount target ", target, " is already a mount point");
  }
  std::unique_ptr<LazyLayer> l(new LazyLayer());
  l->cache_dir_ = cache_dir;
  l->target_ = target;
  l->options_ = std::move(options);
  if (l->options_.background != nullptr && !l->options_.fetch.activity) {
    l->options_.fetch.activity = l->options_.background->activity();
  }

  LayerCacheIdentity id;
  id.blob = layer.descriptor.digest;
  id.size = layer.descriptor.size > 0 ? static_cast<uint64_t>(layer.descriptor.size) : 0;
  id.block_size = layer.verity.block_size;
  id.hash_offset = layer.verity.hash_offset;
  id.root_digest = layer.verity.root_digest;
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<LayerCache> cache, LayerCache::Open(cache_dir, id));

  verity::VerifiedBlockFileOptions fuse = l->options_.fuse;
  fuse.threads = l->options_.fuse_threads;
  fuse.tree.layer_name = name;
  const std::string fuse_file = JoinPath(cache_dir, kFuseFile);
  ClearStaleFuseFile(fuse_file);

  std::unique_ptr<verity::LayerBlockSource> served;
  if (cache->complete()) {
    // Every byte is here and was verified when the cache was completed;
    // it is still verified per block on first read, like any local layer.
    EVS_ASSIGN_OR_RETURN(served, verity::FileBlockSource::Open(cache->data_path(), name));
    l->local_cache_ = std::move(cache);
  } else {
    EVS_ASSIGN_OR_RETURN(l->source_,
                         LazyBlockSource::Open(client, layer, std::move(cache), l->options_.fetch));
    served = std::make_unique<SharedSource>(l->source_);
  }
  EVS_ASSIGN_OR_RETURN(
      l->mount_, verity::VerifiedErofsMount::Mount(std::move(served), layer.verity.hash_offset,
                                                   layer.verity.root_digest, fuse_file, target,
                                                   fuse, l->options_.erofs_options));
  l->attached_ = true;
  if (l->source_) {
    if (l->options_.background != nullptr) {
      l->options_.background->Add(l->source_, l->options_.on_complete);
    }
    l->StartFlusher();
  }
  const auto s = l->source_ ? l->source_->stats() : LazyBlockSource::Stats{};
  EVS_LOG(kInfo) << "lazy layer attached" << Kv("layer", layer.descriptor.digest.Short())
                 << Kv("target", target) << Kv("from", l->source_ ? "registry" : "complete cache")
                 << Kv("cached_blocks", s.blocks_cached) << Kv("blocks", s.blocks_total)
                 << Kv("tree_bytes_fetched", s.tree_bytes_fetched)
                 << Kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
  return l;
}

void LazyLayer::StartFlusher() {
  flush_stop_ = false;
  flusher_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(flush_mu_);
    while (!flush_cv_.wait_for(lock, options_.flush_interval, [&] { return flush_stop_; })) {
      lock.unlock();
      Status st = source_->cache().Flush();
      if (!st.ok()) {
        EVS_LOG(kWarning) << "lazy cache bitmap not saved" << Kv("dir", cache_dir_)
                          << Kv("error", st.message());
      }
      lock.lock();
    }
  });
}

void LazyLayer::StopFlusher() {
  if (!flusher_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(flush_mu_);
    flush_stop_ = true;
  }
  flush_cv_.notify_all();
  flusher_.join();
}

Status LazyLayer::Detach() {
  if (!attached_) return OkStatus();
  if (mount_) {
    EVS_RETURN_IF_ERROR(mount_->Unmount().Annotate(StrCat("lazy layer at ", target_)));
    mount_.reset();
  }
  if (source_ && options_.background != nullptr) options_.background->Remove(source_.get());
  StopFlusher();
  Status st;
  if (source_) {
    st = source_->cache().Flush();
    const auto s = source_->stats();
    EVS_LOG(kInfo) << "lazy layer detached"
                   << Kv("layer", source_->layer().descriptor.digest.Short())
                   << Kv("fetched", s.bytes_fetched) << Kv("misses", s.misses)
                   << Kv("cached_blocks", s.blocks_cached) << Kv("blocks", s.blocks_total)
                   << Kv("complete", source_->complete());
  }
  source_.reset();  // releases the cache lock (the background fetcher let go above)
  local_cache_.reset();
  attached_ = false;
  return st;
}

Status LazyLayer::Remove() {
  EVS_RETURN_IF_ERROR(Detach());
  return LayerCache::Remove(cache_dir_);
}

LazyLayer::~LazyLayer() {
  Status st = Detach();
  if (st.ok()) return;
  EVS_LOG(kWarning) << "lazy layer busy at shutdown, detaching it" << Kv("target", target_)
                    << Kv("error", st.message());
  mount_.reset();  // VerifiedErofsMount detaches lazily and ends the FUSE connection
  st = Detach();
  if (!st.ok()) {
    EVS_LOG(kWarning) << "lazy layer not detached cleanly" << Kv("target", target_)
                      << Kv("error", st.message());
  }
}

Status LazyLayer::FetchAll(const Cancellation* cancel) {
  if (!source_) return OkStatus();  // attached from a complete cache
  // 8 MiB per request: few round trips, and a reader's miss still gets a
  // request of its own in between.
  const uint64_t per_request = std::max<uint64_t>(1, (8u << 20) / source_->chunk_bytes());
  for (uint64_t c = 0; c < source_->chunks(); c += per_request) {
    if (cancel != nullptr && cancel->cancelled()) return cancel->status();
    uint64_t fetched = 0;
    EVS_RETURN_IF_ERROR(
        source_->FetchChunks(c, std::min(per_request, source_->chunks() - c), &fetched));
  }
  return source_->MarkComplete();
}

bool LazyLayer::complete() const {
  if (local_cache_) return true;
  return source_ && source_->complete();
}

LazyLayer::Stats LazyLayer::stats() const {
  Stats s;
  if (source_) s.source = source_->stats();
  if (mount_) s.file = mount_->file().stats();
  s.complete = complete();
  return s;
}

}  // namespace evs::lazy
