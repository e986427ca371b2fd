#include "evs/lazy/lazy_block_source.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "evs/common/log.h"

namespace evs::lazy {
namespace {

// The cache file as it is, for the hash tree: VerityTree verifies every hash
// block it reads against the root itself.
class CacheFileSource : public verity::LayerBlockSource {
 public:
  CacheFileSource(LayerCache* cache, std::string name) : cache_(cache), name_(std::move(name)) {}
  Status ReadAt(uint64_t offset, void* buf, size_t n) override {
    if (offset > size() || n > size() - offset) {
      return Status(Code::kOutOfRange, StrCat(name_, ": read past the end at ", offset));
    }
    return cache_->ReadAt(offset, buf, n);
  }
  bool IsLocal(uint64_t, uint64_t) const override { return true; }
  uint64_t size() const override { return cache_->identity().size; }
  const std::string& name() const override { return name_; }

 private:
  LayerCache* cache_;
  std::string name_;
};

// Writes a streamed range into the cache file at increasing offsets.
class CacheRangeSink : public ByteSink {
 public:
  CacheRangeSink(LayerCache* cache, uint64_t offset) : cache_(cache), offset_(offset) {}
  Status Write(const void* data, size_t n) override {
    EVS_RETURN_IF_ERROR(cache_->WriteRaw(offset_, data, n));
    offset_ += n;
    written_ += n;
    return OkStatus();
  }
  uint64_t written() const { return written_; }

 private:
  LayerCache* cache_;
  uint64_t offset_;
  uint64_t written_ = 0;
};

// The more telling of two failures: a network error (the read cannot be
// retried now) over a verification failure (worth one more fetch) over OK.
void KeepWorst(Status* acc, const Status& st) {
  if (st.ok()) return;
  if (acc->ok() || (acc->code() == Code::kDataLoss && st.code() != Code::kDataLoss)) *acc = st;
}

}  // namespace

struct LazyBlockSource::InFlight {
  bool done = false;
  Status status;
};

LazyBlockSource::LazyBlockSource(registry::RegistryClient* client, RemoteLayer layer,
                                 std::unique_ptr<LayerCache> cache, LazyFetchOptions options)
    : client_(client),
      layer_(std::move(layer)),
      cache_(std::move(cache)),
      options_(std::move(options)),
      name_(StrCat("layer ", layer_.descriptor.digest.ToString())),
      size_(static_cast<uint64_t>(layer_.descriptor.size)),
      hash_offset_(layer_.verity.hash_offset),
      block_size_(layer_.verity.block_size),
      data_blocks_(hash_offset_ / block_size_),
      blocks_per_chunk_(std::max<uint64_t>(1, options_.fetch_size / block_size_)),
      chunks_((data_blocks_ + blocks_per_chunk_ - 1) / blocks_per_chunk_),
      trusted_(cache_->blocks()) {}

LazyBlockSource::~LazyBlockSource() = default;

Result<std::shared_ptr<LazyBlockSource>> LazyBlockSource::Open(registry::RegistryClient* client,
                                                               const RemoteLayer& layer,
                                                               std::unique_ptr<LayerCache> cache,
                                                               LazyFetchOptions options) {
  const std::string what = StrCat("layer ", layer.descriptor.digest.ToString());
  const LayerVerity& v = layer.verity;
  if (layer.descriptor.size <= 0 ||
      static_cast<uint64_t>(layer.descriptor.size) < v.hash_offset + verity::kSuperblockSize) {
    return InvalidArgumentError(what, ": blob of ", layer.descriptor.size,
                                " bytes cannot hold a verity tree at ", v.hash_offset);
  }
  if (options.fetch_size < v.block_size || (options.fetch_size & (options.fetch_size - 1)) != 0) {
    return InvalidArgumentError(what, ": fetch size ", options.fetch_size,
                                " is not a power of two of at least the block size ", v.block_size);
  }
  const LayerCacheIdentity& id = cache->identity();
  if (id.blob != layer.descriptor.digest ||
      id.size != static_cast<uint64_t>(layer.descriptor.size) || id.block_size != v.block_size ||
      id.hash_offset != v.hash_offset || id.root_digest != v.root_digest) {
    return InvalidArgumentError(what, ": cache ", cache->dir(), " was opened for another layer");
  }
  std::shared_ptr<LazyBlockSource> source(
      new LazyBlockSource(client, layer, std::move(cache), std::move(options)));
  EVS_RETURN_IF_ERROR(source->LoadTree());
  return source;
}

registry::CallOptions LazyBlockSource::CallWithin(std::chrono::milliseconds timeout) const {
  registry::CallOptions call;
  call.deadline = std::chrono::steady_clock::now() + timeout;
  registry::RetryPolicy retry;
  retry.max_attempts = 1 << 20;  // bounded by time, not count
  retry.initial_backoff = options_.initial_backoff;
  retry.max_backoff = options_.max_backoff;
  retry.max_elapsed = timeout;
  call.retry = retry;
  return call;
}

Result<registry::RemoteBlob*> LazyBlockSource::Remote(const registry::CallOptions& call) {
  std::lock_guard<std::mutex> lock(remote_mu_);
  if (!remote_) {
    auto blob = client_->OpenBlob(layer_.repository, layer_.descriptor, call);
    if (!blob.ok()) return blob.status();
    remote_ = std::move(*blob);
    EVS_LOG(kDebug) << "lazy layer blob opened" << Kv("layer", layer_.descriptor.digest.Short())
                    << Kv("host", remote_->host());
  }
  return remote_.get();
}

void LazyBlockSource::TrustRange(uint64_t first, uint64_t count) {
  for (uint64_t i = first; i < first + count; ++i) trusted_.Set(i);
}

Status LazyBlockSource::LoadTree() {
  const uint64_t tree_first = data_blocks_;
  const uint64_t tree_count = cache_->blocks() - data_blocks_;
  raw_ = std::make_unique<CacheFileSource>(cache_.get(), name_);
  verity::VerityTreeOptions tree_options;
  tree_options.layer_name = name_;

  if (cache_->present().AllSet(tree_first, tree_first + tree_count)) {
    auto tree =
        verity::VerityTree::Open(raw_.get(), hash_offset_, layer_.verity.root_digest, tree_options);
    Status st = tree.ok() ? (*tree)->VerifyHashTree() : tree.status();
    if (st.ok()) {
      tree_ = std::move(*tree);
      TrustRange(tree_first, tree_count);
      return OkStatus();
    }
    EVS_LOG(kWarning) << "cached hash tree does not verify; fetching it again"
                      << Kv("layer", layer_.descriptor.digest.Short()) << Kv("error", st.message());
    cache_->DropBlocks(tree_first, tree_count);
  }

  // One ranged GET for the whole region (superblock and tree), written to
  // the cache unmarked, then checked against the root digest.
  const auto start = std::chrono::steady_clock::now();
  // A container start waits for it, as for a miss.
  ForegroundActivity::Scope scope(options_.activity.get());
  const registry::CallOptions call = CallWithin(options_.tree_timeout);
  EVS_ASSIGN_OR_RETURN(registry::RemoteBlob * remote, Remote(call));
  CacheRangeSink sink(cache_.get(), hash_offset_);
  requests_.fetch_add(1);
  Status st = remote->ReadRange(hash_offset_, size_ - hash_offset_, &sink, call);
  bytes_fetched_.fetch_add(sink.written());
  tree_bytes_.fetch_add(sink.written());
  if (!st.ok()) {
    fetch_errors_.fetch_add(1);
    return st.Annotate(StrCat(name_, ": fetch hash tree"));
  }
  auto tree =
      verity::VerityTree::Open(raw_.get(), hash_offset_, layer_.verity.root_digest, tree_options);
  st = tree.ok() ? (*tree)->VerifyHashTree() : tree.status();
  if (!st.ok()) {
    verification_failures_.fetch_add(1);
    cache_->DropBlocks(tree_first, tree_count);
    EVS_LOG(kError) << "hash tree from the registry does not match the root digest; refusing "
                       "the layer"
                    << Kv("layer", layer_.descriptor.digest.Short()) << Kv("host", remote->host())
                    << Kv("root", layer_.verity.root_digest.hex()) << Kv("error", st.message());
    return DataLossError(name_, ": hash tree from ", remote->host(), " does not match root digest ",
                         layer_.verity.root_digest.ToString(), ": ", st.message());
  }
  tree_ = std::move(*tree);
  cache_->MarkPresent(tree_first, tree_count);
  TrustRange(tree_first, tree_count);
  EVS_LOG(kInfo) << "lazy layer hash tree fetched" << Kv("layer", layer_.descriptor.digest.Short())
                 << Kv("host", remote->host()) << Kv("bytes", sink.written())
                 << Kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
  return OkStatus();
}

Status LazyBlockSource::ReadAt(uint64_t offset, void* buf, size_t n) {
  if (offset > size_ || n > size_ - offset) {
    return Status(Code::kOutOfRange, StrCat(name_, ": read of ", n, " bytes at ", offset,
                                            " is past the end (", size_, " bytes)"));
  }
  if (n == 0) return OkStatus();
  const uint64_t first = offset / block_size_;
  const uint64_t last = (offset + n + block_size_ - 1) / block_size_;
  if (!trusted_.AllSet(first, last)) {
    FillContext ctx;
    Status st = EnsureTrusted(first, last, &ctx);
    if (ctx.waited) misses_.fetch_add(1, std::memory_order_relaxed);
    EVS_RETURN_IF_ERROR(st);
  }
  return cache_->ReadAt(offset, buf, n);
}

bool LazyBlockSource::IsLocal(uint64_t offset, uint64_t n) const {
  if (offset >= size_ || n == 0) return true;
  const uint64_t first = offset / block_size_;
  const uint64_t last = (std::min(size_, offset + n) + block_size_ - 1) / block_size_;
  for (uint64_t b = first; b < last; ++b) {
    if (!trusted_.Test(b) && !cache_->present().Test(b)) return false;
  }
  return true;
}

bool LazyBlockSource::ChunkReady(uint64_t chunk) const {
  const uint64_t first = chunk * blocks_per_chunk_;
  return trusted_.AllSet(first, std::min(data_blocks_, first + blocks_per_chunk_));
}

Status LazyBlockSource::FetchChunks(uint64_t first, uint64_t count, uint64_t* fetched) {
  if (first >= chunks_ || count > chunks_ - first) {
    return Status(Code::kOutOfRange,
                  StrCat(name_, ": chunks ", first, "+", count, " past the last (", chunks_, ")"));
  }
  FillContext ctx;
  ctx.foreground = false;
  Status st = EnsureTrusted(first * blocks_per_chunk_,
                            std::min(data_blocks_, (first + count) * blocks_per_chunk_), &ctx);
  *fetched += ctx.fetched;
  return st;
}

Status LazyBlockSource::EnsureTrusted(uint64_t first, uint64_t last, FillContext* ctx) {
  if (last > data_blocks_) {
    // The tree region is trusted from Open on; anything else is a bug.
    if (!trusted_.AllSet(std::max(first, data_blocks_), last)) {
      return InternalError(name_, ": hash tree blocks read before the tree was verified");
    }
    last = data_blocks_;
  }
  if (first >= last) return OkStatus();
  Status result;
  // Twice at most: a block that fails verification is fetched once more
  // (a flipped bit on the way heals; a registry that keeps serving wrong
  // bytes fails the read).
  for (int attempt = 0; attempt < 2; ++attempt) {
    // What the cache holds needs no claim and no network: a read of cached
    // blocks never waits behind a fetch of other blocks of its chunk.
    EVS_RETURN_IF_ERROR(TrustLocal(first, last));
    if (trusted_.AllSet(first, last)) return OkStatus();
    Status st = ProcessChunks(first / blocks_per_chunk_,
                              (last + blocks_per_chunk_ - 1) / blocks_per_chunk_, ctx);
    if (trusted_.AllSet(first, last)) return OkStatus();
    if (!st.ok() && st.code() != Code::kDataLoss) return st;
    result = st;
  }
  if (result.ok()) {
    for (uint64_t b = first; b < last; ++b) {
      if (!trusted_.Test(b)) {
        return DataLossError(name_, ": block ", b, " could not be verified");
      }
    }
  }
  return result;
}

Status LazyBlockSource::ProcessChunks(uint64_t first_chunk, uint64_t last_chunk, FillContext* ctx) {
  std::vector<uint64_t> mine;
  std::vector<std::shared_ptr<InFlight>> mine_flights, theirs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t c = first_chunk; c < last_chunk; ++c) {
      if (ChunkReady(c)) continue;
      auto it = in_flight_.find(c);
      if (it != in_flight_.end()) {
        theirs.push_back(it->second);
      } else {
        auto flight = std::make_shared<InFlight>();
        in_flight_.emplace(c, flight);
        mine.push_back(c);
        mine_flights.push_back(std::move(flight));
      }
    }
  }
  Status result;
  // Our chunks, in runs of adjacent ones (one GET per run).
  for (size_t i = 0; i < mine.size();) {
    size_t j = i + 1;
    while (j < mine.size() && mine[j] == mine[j - 1] + 1) ++j;
    const uint64_t first = mine[i] * blocks_per_chunk_;
    const uint64_t last = std::min(data_blocks_, (mine[j - 1] + 1) * blocks_per_chunk_);
    Status st = TrustLocal(first, last);
    if (st.ok()) {
      uint64_t a = first, b = last;
      while (a < b && trusted_.Test(a)) ++a;
      while (b > a && trusted_.Test(b - 1)) --b;
      if (a < b) {
        ctx->waited = true;
        st = Fetch(a, b, ctx);
      }
    }
    KeepWorst(&result, st);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t k = i; k < j; ++k) {
        in_flight_.erase(mine[k]);
        mine_flights[k]->done = true;
        mine_flights[k]->status = st;
      }
    }
    done_cv_.notify_all();
    i = j;
  }
  if (!theirs.empty()) {
    ctx->waited = true;
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto& flight : theirs) {
      done_cv_.wait(lock, [&] { return flight->done; });
      KeepWorst(&result, flight->status);
    }
  }
  return result;
}

// Blocks change state only under their chunk's lock: TrustLocal trusts or
// drops present blocks, Fetch writes and marks absent ones. The lock covers
// local I/O only (at most a chunk), never the network.
Status LazyBlockSource::TrustLocal(uint64_t first, uint64_t last) {
  std::vector<uint8_t> buf;
  for (uint64_t c = first / blocks_per_chunk_; c * blocks_per_chunk_ < last; ++c) {
    const uint64_t a = std::max(first, c * blocks_per_chunk_);
    const uint64_t z = std::min(last, (c + 1) * blocks_per_chunk_);
    bool any = false;
    for (uint64_t b = a; b < z && !any; ++b) any = !trusted_.Test(b) && cache_->present().Test(b);
    if (!any) continue;
    std::lock_guard<std::mutex> lock(ChunkLock(c));
    EVS_RETURN_IF_ERROR(TrustLocalLocked(a, z, buf));
  }
  return OkStatus();
}

Status LazyBlockSource::TrustLocalLocked(uint64_t first, uint64_t last, std::vector<uint8_t>& buf) {
  for (uint64_t b = first; b < last;) {
    if (trusted_.Test(b) || !cache_->present().Test(b)) {
      ++b;
      continue;
    }
    uint64_t end = b + 1;
    while (end < last && !trusted_.Test(end) && cache_->present().Test(end)) ++end;
    buf.resize(static_cast<size_t>((end - b) * block_size_));
    EVS_RETURN_IF_ERROR(cache_->ReadAt(b * block_size_, buf.data(), buf.size()));
    Status st = tree_->VerifyDataBlocks(b, buf.data(), static_cast<size_t>(end - b));
    if (st.ok()) {
      TrustRange(b, end - b);
    } else if (st.code() != Code::kDataLoss) {
      return st;
    } else {
      // Find which ones: keep the good, drop the bad (they are fetched
      // again like any missing block).
      for (uint64_t k = b; k < end; ++k) {
        Status one = tree_->VerifyDataBlocks(k, buf.data() + (k - b) * block_size_, 1);
        if (one.ok()) {
          trusted_.Set(k);
        } else {
          cached_dropped_.fetch_add(1, std::memory_order_relaxed);
          cache_->DropBlocks(k, 1);
          EVS_LOG(kWarning) << "cached block does not match the verity tree; dropped, fetching "
                               "it again"
                            << Kv("layer", layer_.descriptor.digest.Short()) << Kv("block", k)
                            << Kv("error", one.message());
        }
      }
    }
    b = end;
  }
  return OkStatus();
}

Status LazyBlockSource::Fetch(uint64_t first, uint64_t last, FillContext* ctx) {
  const uint64_t offset = first * block_size_;
  const uint64_t end = std::min(last * block_size_, hash_offset_);
  const std::string what =
      StrCat(name_, ": blocks ", first, "-", last - 1, " (bytes ", offset, "-", end - 1, ")");
  ForegroundActivity::Scope scope(ctx->foreground ? options_.activity.get() : nullptr);

  const registry::CallOptions call = CallWithin(options_.miss_timeout);
  auto remote = Remote(call);
  if (!remote.ok()) {
    fetch_errors_.fetch_add(1, std::memory_order_relaxed);
    EVS_LOG(kWarning) << "lazy fetch failed: registry blob not reachable"
                      << Kv("layer", layer_.descriptor.digest.Short()) << Kv("block", first)
                      << Kv("error", remote.status().message());
    return Status(Code::kUnavailable, StrCat(what, ": ", remote.status().message()));
  }
  std::vector<uint8_t> buf(static_cast<size_t>(end - offset));
  requests_.fetch_add(1, std::memory_order_relaxed);
  Status st = (*remote)->ReadAt(offset, buf.data(), buf.size(), call);
  if (!st.ok()) {
    fetch_errors_.fetch_add(1, std::memory_order_relaxed);
    EVS_LOG(kWarning) << "lazy fetch failed" << Kv("layer", layer_.descriptor.digest.Short())
                      << Kv("block", first) << Kv("blocks", last - first)
                      << Kv("host", (*remote)->host()) << Kv("error", st.message());
    return Status(Code::kUnavailable, StrCat(what, ": ", st.message()));
  }
  bytes_fetched_.fetch_add(buf.size(), std::memory_order_relaxed);
  if (!ctx->foreground) background_bytes_.fetch_add(buf.size(), std::memory_order_relaxed);
  ctx->fetched += buf.size();

  // Verify before anything reaches the cache: runs of blocks the cache does
  // not have are checked at once; a run that fails is split to find the bad
  // block(s). Blocks it has (trusted, or present and left to TrustLocal)
  // are not overwritten.
  auto absent = [&](uint64_t b) { return !trusted_.Test(b) && !cache_->present().Test(b); };
  std::vector<uint8_t> good(static_cast<size_t>(last - first), 0);
  Status result;
  for (uint64_t b = first; b < last;) {
    if (!absent(b)) {
      ++b;
      continue;
    }
    uint64_t run_end = b + 1;
    while (run_end < last && absent(run_end)) ++run_end;
    const uint8_t* data = buf.data() + (b - first) * block_size_;
    st = tree_->VerifyDataBlocks(b, data, static_cast<size_t>(run_end - b));
    if (st.ok()) {
      std::fill(good.begin() + (b - first), good.begin() + (run_end - first), 1);
    } else if (st.code() != Code::kDataLoss) {
      return st.Annotate(what);
    } else {
      for (uint64_t k = b; k < run_end; ++k) {
        Status one = tree_->VerifyDataBlocks(k, buf.data() + (k - first) * block_size_, 1);
        if (one.ok()) {
          good[k - first] = 1;
          continue;
        }
        verification_failures_.fetch_add(1, std::memory_order_relaxed);
        // DESIGN.md §5: never served, never cached; the log names layer
        // and block.
        EVS_LOG(kError) << "block from the registry does not match the verity tree; not cached"
                        << Kv("layer", layer_.descriptor.digest.ToString()) << Kv("block", k)
                        << Kv("offset", k * block_size_) << Kv("host", (*remote)->host())
                        << Kv("error", one.message());
        KeepWorst(&result,
                  DataLossError(name_, ": block ", k, " (offset ", k * block_size_, ") from ",
                                (*remote)->host(), " does not match the verity tree"));
      }
    }
    b = run_end;
  }
  // Store the good ones, chunk by chunk under the chunk's lock.
  for (uint64_t c = first / blocks_per_chunk_; c * blocks_per_chunk_ < last; ++c) {
    const uint64_t a = std::max(first, c * blocks_per_chunk_);
    const uint64_t z = std::min(last, (c + 1) * blocks_per_chunk_);
    std::lock_guard<std::mutex> lock(ChunkLock(c));
    for (uint64_t b = a; b < z;) {
      if (!good[b - first] || !absent(b)) {
        ++b;
        continue;
      }
      uint64_t run_end = b + 1;
      while (run_end < z && good[run_end - first] && absent(run_end)) ++run_end;
      EVS_RETURN_IF_ERROR(
          cache_->WriteBlocks(b, buf.data() + (b - first) * block_size_, run_end - b));
      TrustRange(b, run_end - b);
      b = run_end;
    }
  }
  return result;
}

Status LazyBlockSource::MarkComplete() {
  if (cache_->complete()) return OkStatus();
  if (!AllReady()) {
    return FailedPreconditionError(name_, ": ", trusted_.size() - trusted_.Count(),
                                   " blocks are not fetched yet");
  }
  EVS_RETURN_IF_ERROR(cache_->Flush());
  verity::VerifyOptions verify;
  verify.hash_offset = hash_offset_;
  verify.layer_name = name_;
  verify.threads = 1;
  Status st = verity::VerifyImageFile(cache_->data_path(), layer_.verity.root_digest, verify);
  if (!st.ok()) {
    EVS_LOG(kError) << "fully fetched lazy layer does not verify; not marked complete"
                    << Kv("layer", layer_.descriptor.digest.ToString())
                    << Kv("error", st.message());
    return st;
  }
  EVS_RETURN_IF_ERROR(cache_->MarkComplete());
  EVS_LOG(kInfo) << "lazy layer complete and verified"
                 << Kv("layer", layer_.descriptor.digest.Short()) << Kv("bytes", size_)
                 << Kv("fetched", bytes_fetched_.load());
  return OkStatus();
}

LazyBlockSource::Stats LazyBlockSource::stats() const {
  Stats s;
  s.bytes_fetched = bytes_fetched_.load();
  s.tree_bytes_fetched = tree_bytes_.load();
  s.background_bytes_fetched = background_bytes_.load();
  s.requests = requests_.load();
  s.misses = misses_.load();
  s.fetch_errors = fetch_errors_.load();
  s.verification_failures = verification_failures_.load();
  s.cached_blocks_dropped = cached_dropped_.load();
  s.blocks_cached = cache_->present().Count();
  s.blocks_total = cache_->blocks();
  return s;
}

}  // namespace evs::lazy
