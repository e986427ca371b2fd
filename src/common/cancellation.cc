#include "evs/common/cancellation.h"

namespace evs {

void Cancellation::Cancel(Status reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_.load(std::memory_order_relaxed)) return;
  if (reason.ok()) reason = Status(Code::kCancelled, "cancelled");
  reason_ = std::move(reason);
  cancelled_.store(true, std::memory_order_release);
}

Status Cancellation::status() const {
  if (!cancelled()) return OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

}  // namespace evs
