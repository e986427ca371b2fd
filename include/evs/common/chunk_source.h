// Chunk sources: byte sources that lend their bytes instead of copying them,
// and a read-ahead source that runs another source on a thread of its own.
//
// The layer converter is a pipeline (fetch → decompress → tar → EROFS write →
// verity hash) that must run at the speed of its slowest stage on 2 cores
// (DESIGN.md §8). ReadAheadSource moves the producing stages (decompression,
// hashing of the blob) to their own thread, and ChunkSource lets the consumer
// parse tar headers in place and copy file data exactly once, into the
// writer's block buffer.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/status.h"

namespace evs {

// A ByteSource that can lend a view of its next bytes without copying them.
class ChunkSource : public ByteSource {
 public:
  // Returns a view of the next bytes of the stream: at least 1 and at most
  // `max` bytes (`max` must be > 0), or an empty view at end of stream. The
  // view stays valid until the next ReadChunk() or Read() on this source.
  // May block. An error is sticky: every later call returns it again.
  virtual Result<std::span<const uint8_t>> ReadChunk(size_t max) = 0;

  // Copies up to `n` bytes out of ReadChunk(); returns 0 only at end of
  // stream. Fills `buf` completely unless the stream ends first.
  Result<size_t> Read(void* buf, size_t n) override;
};

// Adapts any ByteSource to ChunkSource by reading it into an owned buffer
// with reads of `buffer_size` bytes. Costs one copy per byte (the inner
// source's Read into the buffer); use it for sources that are not already
// chunk sources. Does not own `inner`, which must outlive it.
class BufferedChunkSource : public ChunkSource {
 public:
  explicit BufferedChunkSource(ByteSource* inner, size_t buffer_size = 1u << 20);
  Result<std::span<const uint8_t>> ReadChunk(size_t max) override;

 private:
  ByteSource* inner_;
  std::vector<uint8_t> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
  Status error_;
  bool eof_ = false;
};

// Sees every byte a ReadAheadSource reads, on a thread of its own, in stream
// order, while the consumer reads the same bytes: work that needs every byte
// (hashing the diffID) then adds to neither the producer's nor the consumer's
// thread. A buffer is reused only once both are done with it. When
// ReadChunk() returns end of stream the observer has seen every byte; after an
// error it may not have.
class ChunkObserver {
 public:
  virtual ~ChunkObserver() = default;
  // The bytes are valid for the duration of the call.
  virtual void OnChunk(std::span<const uint8_t> bytes) = 0;
};

struct ReadAheadOptions {
  // Size of each buffer the producer thread fills. 1 MiB: large enough that
  // the hand-over (a mutex and a condition variable) is amortised over many
  // tar entries, small enough that a few of them stay in the shared cache.
  size_t chunk_size = 1u << 20;
  // Buffers in flight. Memory held is chunk_size × chunks. 4 lets the
  // producer run ahead by up to 3 buffers while the consumer works on one.
  size_t chunks = 4;
  // Optional, not owned: sees every filled buffer on a third thread (see
  // ChunkObserver).
  ChunkObserver* observer = nullptr;
};

// Runs `inner` on a thread of its own: the thread reads `inner` into a ring of
// buffers, each filled completely (a short buffer happens only at the end of
// the stream, so chunk boundaries fall on multiples of chunk_size), and the
// consumer borrows them through ReadChunk() without copying. Everything
// `inner` does inside its Read() (decompression, hashing) therefore overlaps
// with what the consumer does.
//
// With an observer, a third thread sees every buffer too (see
// ReadAheadOptions::observer).
//
// The producer stops at the first error of `inner`; the consumer receives it
// after the bytes read before it. Once ReadChunk() has returned end of stream
// or an error, the thread no longer touches `inner` and its state (digests,
// counters) may be read by the consumer.
//
// The destructor stops the thread: it waits for a Read() of `inner` in
// progress to return. If `inner` can block indefinitely (a BytePipe fed by the
// network), cancel that pipe before destroying this object.
// Does not own `inner`, which must outlive this object. Not thread-safe: one
// consumer thread.
class ReadAheadSource : public ChunkSource {
 public:
  explicit ReadAheadSource(ByteSource* inner, ReadAheadOptions options = {});
  ~ReadAheadSource() override;
  ReadAheadSource(const ReadAheadSource&) = delete;
  ReadAheadSource& operator=(const ReadAheadSource&) = delete;

  Result<std::span<const uint8_t>> ReadChunk(size_t max) override;

 private:
  struct Buffer {
    std::unique_ptr<uint8_t[]> data;
    size_t size = 0;  // bytes filled
  };
  void Produce();
  void Observe();

  ByteSource* inner_;
  ReadAheadOptions options_;
  std::vector<Buffer> buffers_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Ring state, guarded by mu_, as counts of buffers since the start: the
  // producer has published `produced_`, the consumer released `released_`,
  // the observer finished `observed_`. Buffer k lives in slot k % chunks.
  uint64_t produced_ = 0;
  uint64_t released_ = 0;  // also read unlocked by the consumer, its only writer
  uint64_t observed_ = 0;
  bool producer_done_ = false;  // no buffer will be published after produced_
  Status producer_status_;      // the error that stopped the producer, if any
  bool stopping_ = false;

  // Consumer-only state.
  bool holding_ = false;  // buffer released_ is being lent out
  size_t pos_ = 0;        // next byte to lend in it
  Status consumer_error_;
  bool consumer_eof_ = false;

  std::thread thread_;
  std::thread observer_thread_;
};

}  // namespace evs
