#include "evs/lazy/background_fetcher.h"

#include <algorithm>
#include <limits>

#include "evs/common/log.h"

namespace evs::lazy {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kCompleteLayer = std::numeric_limits<uint64_t>::max();

}  // namespace

struct BackgroundFetcher::Entry {
  std::shared_ptr<LazyBlockSource> source;
  std::function<void(const Status&)> on_complete;
  uint64_t cursor = 0;  // next chunk to hand out
  int busy = 0;         // workers using it now
  bool removed = false;
  bool completing = false;
  std::chrono::milliseconds backoff{0};
  Clock::time_point retry_at{};
};

BackgroundFetcher::BackgroundFetcher(BackgroundFetchOptions options)
    : options_(std::move(options)),
      activity_(options_.activity ? options_.activity : std::make_shared<ForegroundActivity>()),
      bucket_next_(Clock::now()) {}

std::unique_ptr<BackgroundFetcher> BackgroundFetcher::Start(BackgroundFetchOptions options) {
  std::unique_ptr<BackgroundFetcher> f(new BackgroundFetcher(std::move(options)));
  const int n = std::clamp(f->options_.concurrency, 1, 64);
  for (int i = 0; i < n; ++i) f->workers_.emplace_back([p = f.get()] { p->WorkerLoop(); });
  return f;
}

BackgroundFetcher::~BackgroundFetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void BackgroundFetcher::Add(std::shared_ptr<LazyBlockSource> source,
                            std::function<void(const Status&)> on_complete) {
  if (source->complete()) return;
  auto entry = std::make_shared<Entry>();
  entry->source = std::move(source);
  entry->on_complete = std::move(on_complete);
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.push_back(std::move(entry));
  }
  cv_.notify_all();
}

void BackgroundFetcher::Remove(const LazyBlockSource* source) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const auto& e) { return e->source.get() == source; });
  if (it == entries_.end()) return;
  std::shared_ptr<Entry> entry = *it;
  entry->removed = true;
  entries_.erase(it);
  cv_.wait(lock, [&] { return entry->busy == 0; });
}

BackgroundFetcher::Stats BackgroundFetcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.bytes_fetched = bytes_fetched_;
  s.chunks_fetched = chunks_fetched_;
  s.errors = errors_;
  s.layers_completed = completed_;
  s.layers_queued = entries_.size();
  return s;
}

std::shared_ptr<BackgroundFetcher::Entry> BackgroundFetcher::NextWork(uint64_t* chunk,
                                                                      uint64_t* count) {
  const auto now = Clock::now();
  for (size_t n = 0; n < entries_.size(); ++n) {
    const size_t i = (next_entry_ + n) % entries_.size();
    const std::shared_ptr<Entry>& e = entries_[i];
    if (e->completing || e->retry_at > now) continue;
    LazyBlockSource& source = *e->source;
    while (e->cursor < source.chunks() && source.ChunkReady(e->cursor)) ++e->cursor;
    if (e->cursor < source.chunks()) {
      const uint64_t want = std::max<uint64_t>(1, options_.request_bytes / source.chunk_bytes());
      *chunk = e->cursor;
      *count = std::min(want, source.chunks() - e->cursor);
      e->cursor += *count;
      ++e->busy;
      next_entry_ = i + 1;  // round-robin: the next request is for the next layer
      return e;
    }
    if (e->busy > 0) continue;  // the last chunks are still in flight
    if (source.AllReady()) {
      e->completing = true;
      ++e->busy;
      *chunk = kCompleteLayer;
      *count = 0;
      return e;
    }
    e->cursor = 0;  // some chunk failed on the way: another pass
  }
  return nullptr;
}

bool BackgroundFetcher::SleepUntil(Clock::time_point until) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_until(lock, until, [&] { return stopping_; });
}

ForegroundActivity::Slot BackgroundFetcher::WaitForQuietAndSlot() {
  for (;;) {
    if (!activity_->Busy(options_.yield_after_miss)) {
      ForegroundActivity::Slot slot = activity_->TryBackgroundSlot();
      if (slot.ok()) return slot;
    }
    if (!SleepUntil(Clock::now() + std::chrono::milliseconds(20))) return {};
  }
}

// A token bucket kept as the time at which the bytes fetched so far have
// been paid for: a worker starts a fetch only once that time has come, and
// charges what it fetched afterwards (a chunk may be partly cached, so the
// size is known only then).
void BackgroundFetcher::WaitForBandwidth() {
  if (options_.bandwidth == 0) return;
  Clock::time_point until;
  {
    std::lock_guard<std::mutex> lock(bucket_mu_);
    until = bucket_next_;
  }
  SleepUntil(until);
}

void BackgroundFetcher::Charge(uint64_t bytes) {
  if (options_.bandwidth == 0 || bytes == 0) return;
  std::lock_guard<std::mutex> lock(bucket_mu_);
  // Idle time does not accumulate credit beyond one second's worth.
  bucket_next_ = std::max(bucket_next_, Clock::now() - std::chrono::seconds(1)) +
                 std::chrono::nanoseconds(bytes * 1'000'000'000ull / options_.bandwidth);
}

void BackgroundFetcher::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Entry> entry;
    uint64_t chunk = 0, count = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        if (stopping_) return;
        entry = NextWork(&chunk, &count);
        if (entry) break;
        cv_.wait_for(lock, std::chrono::milliseconds(500));
      }
    }
    LazyBlockSource& source = *entry->source;
    if (chunk == kCompleteLayer) {
      Status st = source.MarkComplete();
      bool removed = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        removed = entry->removed;
        if (st.ok()) ++completed_;
        auto it = std::find(entries_.begin(), entries_.end(), entry);
        if (it != entries_.end()) entries_.erase(it);
      }
      // Outside the lock (the callback may call back into the fetcher), but
      // before `busy` drops, so Remove() waits for it.
      if (entry->on_complete && !removed) entry->on_complete(st);
      {
        std::lock_guard<std::mutex> lock(mu_);
        --entry->busy;
      }
      cv_.notify_all();
      continue;
    }

    uint64_t fetched = 0;
    Status st;
    {
      // The slot is held for the fetch only. Stopping: the fetch is
      // skipped (the layer stays incomplete, as it would be anyway).
      ForegroundActivity::Slot slot = WaitForQuietAndSlot();
      if (slot.ok()) {
        WaitForBandwidth();
        st = source.FetchChunks(chunk, count, &fetched);
      }
    }

    Charge(fetched);
    std::lock_guard<std::mutex> lock(mu_);
    --entry->busy;
    bytes_fetched_ += fetched;
    if (fetched > 0) chunks_fetched_ += count;
    if (st.ok()) {
      entry->backoff = std::chrono::milliseconds(0);
    } else {
      ++errors_;
      entry->cursor = std::min(entry->cursor, chunk);
      entry->backoff = std::clamp(entry->backoff * 2, std::chrono::milliseconds(500),
                                  options_.max_error_backoff);
      entry->retry_at = Clock::now() + entry->backoff;
      EVS_LOG(kWarning) << "background fetch failed; will retry"
                        << Kv("layer", source.layer().descriptor.digest.Short())
                        << Kv("chunk", chunk) << Kv("chunks", count)
                        << Kv("retry_ms", entry->backoff.count()) << Kv("error", st.message());
    }
    cv_.notify_all();
  }
}

}  // namespace evs::lazy
