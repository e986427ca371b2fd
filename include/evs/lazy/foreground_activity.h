// What background fetches yield to (DESIGN.md §1 "lazy"; issue 6: the
// background fetch yields to foreground misses): the foreground fetches —
// a reader waiting for a miss, or a layer's hash tree being fetched at
// attach — that are running, and when the last one ended.
//
// Within one process a ForegroundActivity is two atomics. The daemon serves
// each lazy layer from a process of its own, and a container's start reads
// several layers: a miss in one layer must pause the background fetches of
// all of them, or they crowd it off a slow link (bench/lazy/
// lazy_e2e_bench.sh measured 0.37 x a full pull with per-process yielding).
// OpenShared makes the processes of one daemon share it through files in a
// directory (<root>/lazy):
//
//   activity      8 bytes, mapped shared: when the last foreground fetch of
//                 any process ended (CLOCK_MONOTONIC, which steady_clock is
//                 on Linux: one clock for every process). A foreground
//                 fetch holds a shared flock(2) on the file while it runs;
//                 a background worker that can take the exclusive lock
//                 knows none runs.
//   background.N  a background fetch holds an exclusive flock on one of
//                 these: `slots` fetches at once on the node, not per layer.
//
// flock(2) locks go with their holder, so a process that dies mid-fetch
// leaves nothing held.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs::lazy {

class ForegroundActivity {
 public:
  // This process only; background slots are not limited here (the
  // BackgroundFetcher's own worker count is the limit).
  ForegroundActivity();
  ~ForegroundActivity();
  ForegroundActivity(const ForegroundActivity&) = delete;
  ForegroundActivity& operator=(const ForegroundActivity&) = delete;

  // Shared by every process that opens the same `dir` (made 0700 if
  // missing), with `slots` (>= 1) background fetches at once among them.
  static Result<std::shared_ptr<ForegroundActivity>> OpenShared(const std::string& dir, int slots);

  // A foreground fetch, from construction to destruction.
  class Scope {
   public:
    explicit Scope(ForegroundActivity* activity);  // null: no-op
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    ForegroundActivity* activity_;
    UniqueFd lock_;  // the shared lock on `activity` (shared mode)
  };

  // True while a foreground fetch runs (in any sharing process), or the
  // last one ended less than `quiet` ago.
  bool Busy(std::chrono::nanoseconds quiet) const;

  // A background fetch's slot: held while it lives. TryBackgroundSlot
  // returns an invalid one when all are taken (never, in this-process-only
  // mode, where it returns a valid empty slot).
  class Slot {
   public:
    Slot() = default;
    bool ok() const { return ok_; }

   private:
    friend class ForegroundActivity;
    bool ok_ = false;
    UniqueFd lock_;
  };
  Slot TryBackgroundSlot() const;

 private:
  void Ended();
  int64_t LastEndNs() const;

  std::atomic<int> in_flight_{0};  // this process
  std::atomic<int64_t> last_end_ns_{0};
  // Shared mode.
  std::string dir_;
  int slots_ = 0;
  std::atomic<int64_t>* shared_last_end_ = nullptr;  // mapped from `activity`
};

}  // namespace evs::lazy
