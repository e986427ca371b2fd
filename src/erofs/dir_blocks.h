// Directory data: the blocks of 12-byte dirents followed by names
// (reference/erofs-and-dm-verity-format.md §1.4; kernel fs/erofs/dir.c and
// namei.c, which binary-search names within and across blocks, so entries,
// "." and ".." included, are sorted byte-wise over the whole directory and a
// name never spans two blocks).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "evs/common/status.h"
#include "tree.h"

namespace evs::erofs {

struct DirItem {
  std::string_view name;
  Node* node;
};

// The entries of directory `dir` (frozen: tree.h Freeze()) in on-disk order,
// "." and ".." included.
std::vector<DirItem> DirectoryItems(Node* dir);

// Byte length (i_size) of the directory data for `items`: whole blocks, then
// the used part of the last one.
uint64_t DirectorySize(const std::vector<DirItem>& items, uint32_t block_size);

// The dirent file type of a node.
uint8_t FileTypeOf(const Node* node);

// Calls `emit(block, used)` once per block, in order; `block` holds
// block_size bytes, zero after the first `used`. Entries take their nid from
// node->layout.meta_offset / 32.
Status EmitDirectoryBlocks(const std::vector<DirItem>& items, uint32_t block_size,
                           const std::function<Status(const uint8_t*, size_t)>& emit);

}  // namespace evs::erofs
