#include "dir_blocks.h"

#include <algorithm>
#include <cstring>

#include "evs/erofs/format.h"

namespace evs::erofs {

std::vector<DirItem> DirectoryItems(Node* dir) {
  std::vector<DirItem> items;
  items.reserve(dir->dir->sorted.size() + 2);
  const DirItem dot{".", dir}, dotdot{"..", dir->dir->parent};
  bool dots_done = false;
  for (auto& [name, node] : dir->dir->sorted) {
    // "." and ".." sort after names starting with bytes below '.', and
    // before "..x" and everything above.
    if (!dots_done && name > std::string_view("..")) {
      items.push_back(dot);
      items.push_back(dotdot);
      dots_done = true;
    }
    items.push_back({name, node});
  }
  if (!dots_done) {
    items.push_back(dot);
    items.push_back(dotdot);
  }
  return items;
}

namespace {

// Number of items, from `begin`, that fit in one block.
size_t ItemsInBlock(const std::vector<DirItem>& items, size_t begin, uint32_t block_size) {
  size_t used = 0, i = begin;
  while (i < items.size()) {
    const size_t need = sizeof(Dirent) + items[i].name.size();
    if (used + need > block_size) break;
    used += need;
    ++i;
  }
  return i - begin;
}

}  // namespace

uint64_t DirectorySize(const std::vector<DirItem>& items, uint32_t block_size) {
  uint64_t size = 0;
  size_t i = 0;
  while (i < items.size()) {
    const size_t n = ItemsInBlock(items, i, block_size);
    size_t used = 0;
    for (size_t k = i; k < i + n; ++k) used += sizeof(Dirent) + items[k].name.size();
    i += n;
    size += i < items.size() ? block_size : used;
  }
  return size;
}

uint8_t FileTypeOf(const Node* node) {
  switch (node->type) {
    case EntryType::kRegular:
      return kFtRegular;
    case EntryType::kDirectory:
      return kFtDirectory;
    case EntryType::kSymlink:
      return kFtSymlink;
    case EntryType::kCharDevice:
      return kFtCharDevice;
    case EntryType::kBlockDevice:
      return kFtBlockDevice;
    case EntryType::kFifo:
      return kFtFifo;
    case EntryType::kSocket:
      return kFtSocket;
    default:
      return kFtUnknown;
  }
}

Status EmitDirectoryBlocks(const std::vector<DirItem>& items, uint32_t block_size,
                           const std::function<Status(const uint8_t*, size_t)>& emit) {
  std::vector<uint8_t> block(block_size);
  size_t i = 0;
  while (i < items.size()) {
    const size_t n = ItemsInBlock(items, i, block_size);
    std::fill(block.begin(), block.end(), 0);
    size_t nameoff = n * sizeof(Dirent);
    for (size_t k = 0; k < n; ++k) {
      const DirItem& item = items[i + k];
      Dirent d{};
      d.nid = item.node->layout.meta_offset / kInodeSlotSize;
      d.nameoff = static_cast<uint16_t>(nameoff);
      d.file_type = FileTypeOf(item.node);
      std::memcpy(block.data() + k * sizeof(Dirent), &d, sizeof d);
      std::memcpy(block.data() + nameoff, item.name.data(), item.name.size());
      nameoff += item.name.size();
    }
    i += n;
    EVS_RETURN_IF_ERROR(emit(block.data(), nameoff));
  }
  return OkStatus();
}

}  // namespace evs::erofs
