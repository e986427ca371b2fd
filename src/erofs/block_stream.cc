#include "block_stream.h"

#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "evs/common/fd.h"

namespace evs::erofs {

BlockStream::BlockStream(int fd, uint32_t block_size, uint64_t first_block, BlockObserver* observer,
                         std::string name, size_t buffer_size)
    : fd_(fd),
      block_size_(block_size),
      observer_(observer),
      name_(std::move(name)),
      capacity_(std::max<size_t>(block_size, buffer_size / block_size * block_size)),
      base_(first_block * block_size),
      writeback_from_(base_) {
  buffer_.reset(new uint8_t[capacity_]);
}

namespace {
// Start writeback in steps of this much written data.
constexpr uint64_t kWritebackStep = 16u << 20;
}  // namespace

Status BlockStream::FlushWholeBlocks() {
  const size_t whole = fill_ / block_size_ * block_size_;
  if (whole == 0) return OkStatus();
  EVS_RETURN_IF_ERROR(PwriteAll(fd_, buffer_.get(), whole, static_cast<off_t>(base_), name_));
  if (observer_ != nullptr)
    observer_->OnBlocks(base_ / block_size_, buffer_.get(), whole / block_size_);
  const size_t rest = fill_ - whole;
  if (rest > 0) std::memmove(buffer_.get(), buffer_.get() + whole, rest);
  base_ += whole;
  fill_ = rest;
  if (base_ - writeback_from_ >= kWritebackStep) {
    // Best effort: filesystems without it (or pipes) just skip it.
    (void)::sync_file_range(fd_, static_cast<off_t>(writeback_from_),
                            static_cast<off_t>(base_ - writeback_from_), SYNC_FILE_RANGE_WRITE);
    writeback_from_ = base_;
  }
  return OkStatus();
}

Result<std::span<uint8_t>> BlockStream::Writable() {
  if (fill_ == capacity_) EVS_RETURN_IF_ERROR(FlushWholeBlocks());
  return std::span<uint8_t>(buffer_.get() + fill_, capacity_ - fill_);
}

Status BlockStream::Append(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    EVS_ASSIGN_OR_RETURN(std::span<uint8_t> room, Writable());
    const size_t k = std::min(n, room.size());
    std::memcpy(room.data(), p, k);
    Commit(k);
    p += k;
    n -= k;
  }
  return OkStatus();
}

Status BlockStream::AppendZeros(uint64_t n) {
  while (n > 0) {
    EVS_ASSIGN_OR_RETURN(std::span<uint8_t> room, Writable());
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, room.size()));
    std::memset(room.data(), 0, k);
    Commit(k);
    n -= k;
  }
  return OkStatus();
}

Status BlockStream::PadToBlock() {
  const uint64_t partial = offset() % block_size_;
  return partial == 0 ? OkStatus() : AppendZeros(block_size_ - partial);
}

Status BlockStream::Finish() {
  EVS_RETURN_IF_ERROR(PadToBlock());
  return FlushWholeBlocks();
}

}  // namespace evs::erofs
