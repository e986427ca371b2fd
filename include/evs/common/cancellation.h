// A cancellation flag shared between the thread that starts long work (a blob
// download, a conversion) and the thread that may want it stopped (a gRPC
// handler whose client went away, a shutdown). Work polls it at its own
// natural boundaries; cancelling does not interrupt a blocking system call.
#pragma once

#include <atomic>
#include <mutex>

#include "evs/common/status.h"

namespace evs {

// Thread-safe. Once cancelled it stays cancelled; the first reason wins.
// Checking it costs one atomic load.
class Cancellation {
 public:
  Cancellation() = default;
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  // Asks the work to stop with `reason` (code kCancelled unless the caller
  // has a better one, e.g. kDeadlineExceeded).
  void Cancel(Status reason = Status(Code::kCancelled, "cancelled"));
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // The reason given to Cancel(), or OK while not cancelled.
  Status status() const;

 private:
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  Status reason_;
};

}  // namespace evs
