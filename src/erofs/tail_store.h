// TailStore: the inline tails of regular files (the last size mod 4096
// bytes), kept from the moment a file streams in until Finish() writes them
// after their inodes. In memory up to a limit, then in an unlinked scratch
// file, so that a layer of a million small files does not hold its tails in
// RAM (writer.h, "Layout").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "evs/common/fd.h"
#include "evs/common/status.h"

namespace evs::erofs {

class TailStore {
 public:
  // `scratch_dir`: where the scratch file is created (O_TMPFILE) once the
  // tails exceed `memory_limit` bytes; empty means the directory of
  // `output_fd`, then $TMPDIR, then /tmp.
  TailStore(std::string scratch_dir, int output_fd, size_t memory_limit);

  // Stores `n` bytes; returns the reference to read them back with.
  Result<uint64_t> Append(const void* data, size_t n);
  // Reads back `n` bytes stored at `ref`.
  Status Read(uint64_t ref, void* out, size_t n);

  uint64_t size() const { return size_; }

 private:
  Status Spill();

  std::string scratch_dir_;
  int output_fd_;
  size_t memory_limit_;
  std::vector<uint8_t> memory_;   // bytes [0, memory_.size()) while not spilled
  UniqueFd file_;                 // after spilling: every byte
  std::vector<uint8_t> pending_;  // bytes appended to the file but not written yet
  uint64_t pending_base_ = 0;
  uint64_t size_ = 0;
};

}  // namespace evs::erofs
