// LazyBlockSource: the bytes of a lazy layer (DESIGN.md §1 "lazy", §5):
// a verity::LayerBlockSource over the layer's local cache (LayerCache) that
// fetches missing blocks from the registry with ranged GETs and checks every
// block against the dm-verity tree before it is written to the cache or
// returned.
//
// How a read is served:
//   1. Blocks verified in this attach ("trusted") are read from the cache
//      file with pread(2): no lock, no network, whatever else is in flight.
//   2. Blocks the cache has from before (a previous attach or daemon) are
//      read and verified first, under their chunk's lock but without waiting
//      for any fetch (so never for the network); one that fails is dropped
//      and fetched again.
//   3. Missing blocks: the aligned range of `fetch_size` bytes around them
//      ("chunk") is fetched with one GET — several adjacent chunks of one
//      read go in one GET; a read that needs a chunk another thread is
//      already fetching waits for that fetch instead of sending its own.
//      Each fetched block is verified; good ones are written to the cache
//      and marked, a bad one is never written, the failure is logged with
//      the layer and block number, and it is fetched once more before the
//      read fails with DataLoss.
// A fetch retries within `miss_timeout` and then fails the read with
// Unavailable (EIO through VerifiedBlockFile) — never zeros, never a hang.
// The registry blob is opened on the first miss, not at attach, so a layer
// whose tree is cached attaches without the registry (reference/
// remote-snapshotters.md §4 item 2), and a failed open is retried by the
// next miss: recovery needs no restart.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "evs/common/atomic_bitmap.h"
#include "evs/common/status.h"
#include "evs/lazy/annotations.h"
#include "evs/lazy/foreground_activity.h"
#include "evs/lazy/layer_cache.h"
#include "evs/oci/manifest.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"
#include "evs/verity/block_source.h"
#include "evs/verity/verifier.h"

namespace evs::lazy {

struct LazyFetchOptions {
  // Bytes fetched around a miss: the cache is filled in aligned chunks of
  // this size (a power of two, at least the block size). 512 KiB was the
  // best cold-start time in bench/lazy (lazy_bench --sweep-fetch-size)
  // over a 100 Mbit/s, 20 ms RTT link: smaller chunks pay a round trip per
  // 4-16 file reads, larger ones fetch bytes nobody reads; docs/lazy.md has
  // the figures.
  uint32_t fetch_size = 512u << 10;
  // A miss (including its retries) gives up after this long and the read
  // fails with EIO. Long enough to ride out a registry restart or a brief
  // network blip, short enough that a container sees an error before a
  // user gives up on it.
  std::chrono::milliseconds miss_timeout{20'000};
  // The hash tree fetch at Open (with its retries) gives up after this, so
  // that a Prepare facing a dead registry falls back instead of hanging. A
  // 10 GiB layer's tree is 80 MiB: 7 s at 100 Mbit/s.
  std::chrono::milliseconds tree_timeout{60'000};
  // Retry backoff within miss_timeout and tree_timeout.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2'000};
  // Optional (lazy/foreground_activity.h): misses and the tree fetch
  // count as foreground fetches there, which background fetches yield to.
  std::shared_ptr<ForegroundActivity> activity;
};

class LazyBlockSource : public verity::LayerBlockSource {
 public:
  // Opens the source over an opened cache: makes sure the hash tree region
  // [hash_offset, size) is in the cache and matches the root digest — from
  // the cache when it is there and verifies, otherwise fetched with one
  // ranged GET — and reads the superblock. Errors: DataLoss naming the layer
  // when the fetched tree does not match the root digest (nothing of it is
  // marked in the cache; the caller must refuse the mount); InvalidArgument
  // when the descriptor and the verity parameters do not fit together;
  // Unavailable/NotFound/… from the registry when the tree had to be
  // fetched (within tree_timeout). Blocks for that one GET at most.
  // `client` must outlive the source.
  static Result<std::shared_ptr<LazyBlockSource>> Open(registry::RegistryClient* client,
                                                       const RemoteLayer& layer,
                                                       std::unique_ptr<LayerCache> cache,
                                                       LazyFetchOptions options = {});
  ~LazyBlockSource() override;

  // verity::LayerBlockSource. ReadAt may block on the network for at most
  // about miss_timeout (see the file comment); thread-safe.
  Status ReadAt(uint64_t offset, void* buf, size_t n) override;
  bool IsLocal(uint64_t offset, uint64_t n) const override;
  uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }

  const RemoteLayer& layer() const { return layer_; }
  const verity::VerityTree& tree() const { return *tree_; }
  LayerCache& cache() { return *cache_; }
  uint64_t hash_offset() const { return hash_offset_; }
  uint32_t block_size() const { return block_size_; }

  // Chunks of the data region [0, hash_offset), fetch_size bytes each.
  uint64_t chunks() const { return chunks_; }
  // True when every block of `chunk` is trusted (verified in this attach).
  bool ChunkReady(uint64_t chunk) const;
  // True when every block of the file is trusted.
  bool AllReady() const { return trusted_.Count() == trusted_.size(); }
  uint64_t chunk_bytes() const { return blocks_per_chunk_ * block_size_; }
  // Makes every block of chunks [first, first + count) trusted, like a read
  // of them (adjacent missing chunks go in one GET), but counted as
  // background work and not signalled as foreground activity. Adds the
  // bytes fetched to *fetched.
  Status FetchChunks(uint64_t first, uint64_t count, uint64_t* fetched);

  // Once AllReady(): verifies the whole file as `evs verity verify` would
  // (verity::VerifyImageFile on one thread: every block, the zero gap after
  // the superblock, nothing after the tree) and marks the cache complete.
  // FailedPrecondition if blocks are missing; DataLoss naming the block if
  // the file does not verify (the file was changed under us; the cache stays
  // incomplete and reads keep being verified). Reads the whole file once.
  Status MarkComplete();
  bool complete() const { return cache_->complete(); }

  struct Stats {
    uint64_t bytes_fetched = 0;       // from the registry, for any reason
    uint64_t tree_bytes_fetched = 0;  // the hash tree region
    uint64_t background_bytes_fetched = 0;
    uint64_t requests = 0;               // ranged GETs sent (each retried internally)
    uint64_t misses = 0;                 // reads that waited for the network
    uint64_t fetch_errors = 0;           // fetches that failed (network, registry)
    uint64_t verification_failures = 0;  // fetched blocks that did not match the tree
    uint64_t cached_blocks_dropped = 0;  // cached blocks that did not match (refetched)
    uint64_t blocks_cached = 0;          // blocks present in the cache file
    uint64_t blocks_total = 0;
  };
  Stats stats() const;

 private:
  struct InFlight;
  LazyBlockSource(registry::RegistryClient* client, RemoteLayer layer,
                  std::unique_ptr<LayerCache> cache, LazyFetchOptions options);
  Status LoadTree();
  // Work modes of the fill path: a reader waiting (foreground) or the
  // background fetcher. `fetched` accumulates bytes fetched; `waited` is set
  // when the caller had to wait for the network.
  struct FillContext {
    bool foreground = true;
    uint64_t fetched = 0;
    bool waited = false;
  };
  Status EnsureTrusted(uint64_t first, uint64_t last, FillContext* ctx);
  Status ProcessChunks(uint64_t first_chunk, uint64_t last_chunk, FillContext* ctx);
  Status TrustLocal(uint64_t first, uint64_t last);
  Status TrustLocalLocked(uint64_t first, uint64_t last, std::vector<uint8_t>& buf);
  std::mutex& ChunkLock(uint64_t chunk) { return chunk_locks_[chunk % chunk_locks_.size()]; }
  Status Fetch(uint64_t first, uint64_t last, FillContext* ctx);
  Result<registry::RemoteBlob*> Remote(const registry::CallOptions& call);
  registry::CallOptions CallWithin(std::chrono::milliseconds timeout) const;
  void TrustRange(uint64_t first, uint64_t count);

  registry::RegistryClient* client_;
  RemoteLayer layer_;
  std::unique_ptr<LayerCache> cache_;
  LazyFetchOptions options_;
  std::string name_;
  uint64_t size_ = 0;
  uint64_t hash_offset_ = 0;
  uint32_t block_size_ = 0;
  uint64_t data_blocks_ = 0;
  uint64_t blocks_per_chunk_ = 0;
  uint64_t chunks_ = 0;

  // Reads the cache file directly: what the tree below reads hash blocks
  // through (it verifies them itself).
  std::unique_ptr<verity::LayerBlockSource> raw_;
  std::unique_ptr<verity::VerityTree> tree_;
  // Blocks verified in this attach; only ever set (never cleared) while
  // the source lives, so a reader that saw a bit may read without a lock.
  AtomicBitmap trusted_;

  std::mutex mu_;                    // guards in_flight_; never held across I/O
  std::condition_variable done_cv_;  // an InFlight finished
  std::map<uint64_t, std::shared_ptr<InFlight>> in_flight_;  // by chunk

  // Serialise the local state changes of one chunk's blocks (striped).
  std::array<std::mutex, 64> chunk_locks_;

  std::mutex remote_mu_;  // held while opening the blob (bounded by the call deadline)
  std::unique_ptr<registry::RemoteBlob> remote_;

  std::atomic<uint64_t> bytes_fetched_{0}, tree_bytes_{0}, background_bytes_{0}, requests_{0},
      misses_{0}, fetch_errors_{0}, verification_failures_{0}, cached_dropped_{0};
};

}  // namespace evs::lazy
