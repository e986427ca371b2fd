// BackgroundFetcher: completes lazy layers in the background (issue 6,
// DESIGN.md §1 "a background fetch completes the layer"), so that a layer
// stops depending on the registry soon after it is mounted (stargz #30:
// background fetching is what tolerates registry failure).
//
// One fetcher serves every lazy layer of the process:
// - bounded concurrency: `concurrency` worker threads, each fetching up to
//   `request_bytes` of missing chunks with one GET at a time, layers taken
//   round-robin so that one large layer does not starve the others;
// - bounded bandwidth: a token bucket over the bytes fetched;
// - yielding: no background fetch starts while a foreground miss (a reader
//   waiting) is in flight, nor within `yield_after_miss` of the last one —
//   a container starting up gets the link to itself;
// - each chunk is verified like a foreground read (LazyBlockSource does it);
//   when every block of a layer is trusted the whole file is verified once
//   more and the cache is marked complete (LazyBlockSource::MarkComplete);
// - a registry that is down is retried with backoff (up to
//   `max_error_backoff`), forever: the layer completes once it returns.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "evs/common/status.h"
#include "evs/lazy/lazy_block_source.h"

namespace evs::lazy {

struct BackgroundFetchOptions {
  // Chunk fetches in flight at once, across all layers. Two keep a link
  // busy over one round trip of latency without crowding the registry.
  int concurrency = 2;
  // Bytes asked for per background GET (whole chunks, at least one).
  // Larger requests spend fewer round trips; smaller ones let a reader's
  // miss through sooner (it shares the link with those in flight). 2 MiB
  // is 170 ms at 100 Mbit/s.
  uint64_t request_bytes = 2u << 20;
  // Bytes per second fetched in the background, across all layers; 0 for
  // no limit. 64 MiB/s leaves room on a 1 Gbit/s node link.
  uint64_t bandwidth = 64u << 20;
  // Quiet time after the last foreground miss before background fetches
  // resume.
  std::chrono::milliseconds yield_after_miss{250};
  // What the workers yield to, and where they take a slot before each
  // fetch (lazy/foreground_activity.h). Null: one of their own, this
  // process only; the daemon's layer processes share one, so that
  // `concurrency` is then per node and a miss in any layer pauses them all.
  std::shared_ptr<ForegroundActivity> activity;
  // Backoff after a failed chunk fetch doubles up to this.
  std::chrono::milliseconds max_error_backoff{30'000};
};

class BackgroundFetcher {
 public:
  // Starts the worker threads. Cheap; threads sleep while there is no work.
  static std::unique_ptr<BackgroundFetcher> Start(BackgroundFetchOptions options = {});
  // Stops the workers (a fetch in progress finishes first: at most one
  // miss_timeout).
  ~BackgroundFetcher();
  BackgroundFetcher(const BackgroundFetcher&) = delete;
  BackgroundFetcher& operator=(const BackgroundFetcher&) = delete;

  // What lazy sources report their foreground misses to (pass it in
  // LazyFetchOptions::activity).
  std::shared_ptr<ForegroundActivity> activity() const { return activity_; }

  // Queues `source` to be completed. `on_complete` (optional) runs on a
  // worker thread once the layer is marked complete, or with the error if
  // the final verification fails. A complete source is not queued.
  void Add(std::shared_ptr<LazyBlockSource> source,
           std::function<void(const Status&)> on_complete = nullptr);
  // Takes `source` off the queue and waits until no worker uses it (at
  // most one chunk fetch). Unknown sources are ignored.
  void Remove(const LazyBlockSource* source);

  struct Stats {
    uint64_t bytes_fetched = 0;
    uint64_t chunks_fetched = 0;
    uint64_t errors = 0;
    uint64_t layers_completed = 0;
    size_t layers_queued = 0;
  };
  Stats stats() const;

 private:
  struct Entry;
  explicit BackgroundFetcher(BackgroundFetchOptions options);
  void WorkerLoop();
  // Next chunks to fetch (*count of them from *chunk), or null when there
  // is nothing to do now. Called with mu_ held.
  std::shared_ptr<Entry> NextWork(uint64_t* chunk, uint64_t* count);
  // Sleeps until `until` or until stopped; false when stopped.
  bool SleepUntil(std::chrono::steady_clock::time_point until);
  void WaitForBandwidth();
  void Charge(uint64_t bytes);
  // Waits until no foreground fetch runs and none ended for
  // yield_after_miss, then for a free slot; an invalid slot when stopped.
  ForegroundActivity::Slot WaitForQuietAndSlot();

  BackgroundFetchOptions options_;
  std::shared_ptr<ForegroundActivity> activity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<std::shared_ptr<Entry>> entries_;
  size_t next_entry_ = 0;  // round-robin position
  std::vector<std::thread> workers_;

  std::mutex bucket_mu_;
  std::chrono::steady_clock::time_point bucket_next_;  // when the next byte may go

  uint64_t bytes_fetched_ = 0, chunks_fetched_ = 0, errors_ = 0, completed_ = 0;
};

}  // namespace evs::lazy
