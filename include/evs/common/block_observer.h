// A consumer of an image's blocks as they are produced, so that work that
// needs every block (the dm-verity tree) happens in the same pass as writing
// them, not in a second read of the file.
#pragma once

#include <cstddef>
#include <cstdint>

namespace evs {

class BlockObserver {
 public:
  virtual ~BlockObserver() = default;
  // Called with `count` whole blocks starting at block `first`, each exactly
  // once over the life of the image, in any order (a writer typically emits
  // block 0, which holds the superblock, last). The bytes are only valid for
  // the duration of the call. Thread-compatible: the producer calls it from
  // one thread at a time.
  virtual void OnBlocks(uint64_t first, const uint8_t* data, size_t count) = 0;
};

}  // namespace evs
