#include "evs/lazy/foreground_activity.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "evs/common/file.h"
#include "evs/common/log.h"

namespace evs::lazy {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string ActivityFile(const std::string& dir) { return JoinPath(dir, "activity"); }

// flock(2) with EINTR retried.
bool Lock(int fd, int op) {
  for (;;) {
    if (::flock(fd, op) == 0) return true;
    if (errno != EINTR) return false;
  }
}

}  // namespace

ForegroundActivity::ForegroundActivity() = default;

ForegroundActivity::~ForegroundActivity() {
  if (shared_last_end_ != nullptr) ::munmap(shared_last_end_, sizeof(int64_t));
}

Result<std::shared_ptr<ForegroundActivity>> ForegroundActivity::OpenShared(const std::string& dir,
                                                                           int slots) {
  if (slots < 1) return InvalidArgumentError("background fetch slots: ", slots, " (want >= 1)");
  EVS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  const std::string path = ActivityFile(dir);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return ErrnoError(errno, StrCat("open ", path));
  // Every process sizes it the same; the new bytes read as zero ("no
  // foreground fetch yet").
  if (::ftruncate(fd.get(), sizeof(int64_t)) != 0) {
    return ErrnoError(errno, StrCat("ftruncate ", path));
  }
  void* p = ::mmap(nullptr, sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) return ErrnoError(errno, StrCat("mmap ", path));
  static_assert(std::atomic<int64_t>::is_always_lock_free,
                "a lock-free atomic is what two processes can share");
  auto a = std::make_shared<ForegroundActivity>();
  a->dir_ = dir;
  a->slots_ = slots;
  a->shared_last_end_ = static_cast<std::atomic<int64_t>*>(p);
  return a;
}

ForegroundActivity::Scope::Scope(ForegroundActivity* activity) : activity_(activity) {
  if (activity_ == nullptr) return;
  activity_->in_flight_.fetch_add(1);
  if (activity_->shared_last_end_ != nullptr) {
    // Its own open file description: flock locks belong to those, so two
    // threads of this process hold two locks. Without it (an fd limit),
    // other processes see the fetch only when it ends.
    const std::string path = ActivityFile(activity_->dir_);
    lock_ = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (lock_ && !Lock(lock_.get(), LOCK_SH)) lock_.Reset();
  }
}

ForegroundActivity::Scope::~Scope() {
  if (activity_ == nullptr) return;
  activity_->Ended();
  activity_->in_flight_.fetch_sub(1);
  // lock_ closes after the end time is published.
}

void ForegroundActivity::Ended() {
  const int64_t now = NowNs();
  last_end_ns_.store(now);
  if (shared_last_end_ != nullptr) {
    int64_t seen = shared_last_end_->load();
    while (seen < now && !shared_last_end_->compare_exchange_weak(seen, now)) {
    }
  }
}

int64_t ForegroundActivity::LastEndNs() const {
  int64_t last = last_end_ns_.load();
  if (shared_last_end_ != nullptr) last = std::max(last, shared_last_end_->load());
  return last;
}

bool ForegroundActivity::Busy(std::chrono::nanoseconds quiet) const {
  if (in_flight_.load() > 0) return true;
  const int64_t last = LastEndNs();
  if (last != 0 && NowNs() - last < quiet.count()) return true;
  if (shared_last_end_ == nullptr) return false;
  // A foreground fetch of another process holds a shared lock.
  UniqueFd probe(::open(ActivityFile(dir_).c_str(), O_RDONLY | O_CLOEXEC));
  if (!probe) return false;
  if (!Lock(probe.get(), LOCK_EX | LOCK_NB)) return errno == EWOULDBLOCK;
  return false;  // closing the probe drops the lock
}

ForegroundActivity::Slot ForegroundActivity::TryBackgroundSlot() const {
  Slot slot;
  if (shared_last_end_ == nullptr) {
    slot.ok_ = true;
    return slot;
  }
  for (int i = 0; i < slots_; ++i) {
    const std::string path = JoinPath(dir_, StrCat("background.", i));
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) {
      EVS_LOG(kWarning) << "background fetch slot file not usable; fetching without it"
                        << Kv("path", path) << Kv("errno", errno);
      slot.ok_ = true;
      return slot;
    }
    if (Lock(fd.get(), LOCK_EX | LOCK_NB)) {
      slot.ok_ = true;
      slot.lock_ = std::move(fd);
      return slot;
    }
  }
  return slot;
}

}  // namespace evs::lazy
