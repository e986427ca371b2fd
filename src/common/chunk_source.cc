#include "evs/common/chunk_source.h"

#include <algorithm>
#include <cstring>

namespace evs {

Result<size_t> ChunkSource::Read(void* buf, size_t n) {
  uint8_t* out = static_cast<uint8_t*>(buf);
  size_t done = 0;
  while (done < n) {
    auto chunk = ReadChunk(n - done);
    if (!chunk.ok()) {
      // Hand over what was read; the error is sticky and comes next time.
      if (done > 0) break;
      return chunk.status();
    }
    if (chunk->empty()) break;
    std::memcpy(out + done, chunk->data(), chunk->size());
    done += chunk->size();
  }
  return done;
}

BufferedChunkSource::BufferedChunkSource(ByteSource* inner, size_t buffer_size)
    : inner_(inner), buffer_(std::max<size_t>(buffer_size, 1)) {}

Result<std::span<const uint8_t>> BufferedChunkSource::ReadChunk(size_t max) {
  if (begin_ == end_) {
    if (!error_.ok()) return error_;
    if (eof_) return std::span<const uint8_t>();
    auto n = inner_->Read(buffer_.data(), buffer_.size());
    if (!n.ok()) {
      error_ = n.status();
      return error_;
    }
    if (*n == 0) {
      eof_ = true;
      return std::span<const uint8_t>();
    }
    begin_ = 0;
    end_ = *n;
  }
  size_t k = std::min(max, end_ - begin_);
  std::span<const uint8_t> view(buffer_.data() + begin_, k);
  begin_ += k;
  return view;
}

ReadAheadSource::ReadAheadSource(ByteSource* inner, ReadAheadOptions options)
    : inner_(inner), options_(options) {
  options_.chunk_size = std::max<size_t>(options_.chunk_size, 1);
  // Two buffers at least: one lent to the consumer, one being filled.
  options_.chunks = std::max<size_t>(options_.chunks, 2);
  buffers_.resize(options_.chunks);
  for (Buffer& b : buffers_)
    b.data = std::make_unique_for_overwrite<uint8_t[]>(options_.chunk_size);
  thread_ = std::thread([this] { Produce(); });
  if (options_.observer) observer_thread_ = std::thread([this] { Observe(); });
}

ReadAheadSource::~ReadAheadSource() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (observer_thread_.joinable()) observer_thread_.join();
}

void ReadAheadSource::Produce() {
  const size_t n = buffers_.size();
  for (;;) {
    size_t index;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        uint64_t oldest = options_.observer ? std::min(released_, observed_) : released_;
        return stopping_ || produced_ - oldest < n;
      });
      if (stopping_) return;
      index = produced_ % n;
    }
    Buffer& b = buffers_[index];
    size_t got = 0;
    Status status;
    bool eof = false;
    while (got < options_.chunk_size) {
      auto r = inner_->Read(b.data.get() + got, options_.chunk_size - got);
      if (!r.ok()) {
        status = r.status();
        break;
      }
      if (*r == 0) {
        eof = true;
        break;
      }
      got += *r;
    }
    b.size = got;
    bool last = eof || !status.ok();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (got > 0) ++produced_;
      if (last) {
        producer_done_ = true;
        producer_status_ = std::move(status);
      }
    }
    cv_.notify_all();
    if (last) return;
  }
}

void ReadAheadSource::Observe() {
  const size_t n = buffers_.size();
  for (;;) {
    uint64_t k;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || observed_ < produced_ || producer_done_; });
      if (stopping_ || observed_ == produced_) return;  // stopped, or seen everything
      k = observed_;
    }
    const Buffer& b = buffers_[k % n];
    options_.observer->OnChunk(std::span<const uint8_t>(b.data.get(), b.size));
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++observed_;
    }
    cv_.notify_all();
  }
}

Result<std::span<const uint8_t>> ReadAheadSource::ReadChunk(size_t max) {
  if (!consumer_error_.ok()) return consumer_error_;
  if (consumer_eof_) return std::span<const uint8_t>();
  const size_t n = buffers_.size();
  if (holding_) {
    Buffer& b = buffers_[released_ % n];
    if (pos_ < b.size) {
      size_t k = std::min(max, b.size - pos_);
      std::span<const uint8_t> view(b.data.get() + pos_, k);
      pos_ += k;
      return view;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++released_;
      holding_ = false;
    }
    cv_.notify_all();
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return released_ < produced_ || producer_done_; });
    if (released_ == produced_) {
      if (!producer_status_.ok()) {
        consumer_error_ = producer_status_;
        return consumer_error_;
      }
      // The end: once the observer has seen every buffer too.
      cv_.wait(lock, [&] { return !options_.observer || observed_ == produced_; });
      consumer_eof_ = true;
      return std::span<const uint8_t>();
    }
    holding_ = true;
  }
  Buffer& b = buffers_[released_ % n];
  size_t k = std::min(max, b.size);
  pos_ = k;
  return std::span<const uint8_t>(b.data.get(), k);
}

}  // namespace evs
