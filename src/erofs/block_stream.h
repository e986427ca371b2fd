// BlockStream: sequential writing of whole blocks at a fixed place in the
// image through one buffer, handing every block to the BlockObserver exactly
// once as it is written (reference/erofs-and-dm-verity-format.md §1; the
// observer feeds the dm-verity tree, DESIGN.md §4).
//
// It also starts writeback of what it wrote every few MiB
// (sync_file_range(SYNC_FILE_RANGE_WRITE), which does not wait), so that the
// disk writes overlap the conversion and the caller's final fsync finds
// little left to do; and it keeps the amount of dirty page cache a
// conversion leaves behind small.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "evs/common/block_observer.h"
#include "evs/common/status.h"

namespace evs::erofs {

class BlockStream {
 public:
  // Writes to `fd` (not owned) starting at block `first_block`. `name` names
  // the output in errors. Allocates `buffer_size` bytes (rounded up to whole
  // blocks, at least one).
  BlockStream(int fd, uint32_t block_size, uint64_t first_block, BlockObserver* observer,
              std::string name, size_t buffer_size = 1u << 20);

  // Absolute byte offset in the image of the next byte appended.
  uint64_t offset() const { return base_ + fill_; }
  // Block that the next byte falls into.
  uint64_t block() const { return offset() / block_size_; }

  // The free part of the buffer (never empty): fill it, then Commit() what
  // was filled. Writes out the full buffer first when needed.
  Result<std::span<uint8_t>> Writable();
  void Commit(size_t n) { fill_ += n; }

  Status Append(const void* data, size_t n);
  Status AppendZeros(uint64_t n);
  // Zero-fills up to the next block boundary (nothing if already on one).
  Status PadToBlock();
  // Pads to a block boundary and writes everything buffered.
  Status Finish();

 private:
  // Writes the whole blocks buffered; keeps a partial last block.
  Status FlushWholeBlocks();

  int fd_;
  uint32_t block_size_;
  BlockObserver* observer_;
  std::string name_;
  std::unique_ptr<uint8_t[]> buffer_;
  size_t capacity_;
  uint64_t base_;            // image offset of buffer_[0], a block boundary
  size_t fill_ = 0;          // bytes buffered
  uint64_t writeback_from_;  // first byte whose writeback has not been started
};

}  // namespace evs::erofs
