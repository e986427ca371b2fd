// ErofsWriter (writer.h). Add() streams file data into the image and records
// metadata in a Tree; Finish() lays the metadata out after the data and
// writes it: directory blocks, shared xattrs, inodes, and the superblock last.
#include "evs/erofs/writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <unordered_map>

#include "block_stream.h"
#include "crc32c.h"
#include "dir_blocks.h"
#include "evs/common/digest.h"
#include "evs/erofs/format.h"
#include "tail_store.h"
#include "tree.h"
#include "xattr_name.h"

namespace evs::erofs {
namespace {

constexpr uint32_t kFullBlockSize = 4096;
constexpr uint32_t kIndexBlockSize = 512;
// Tar-index mode: the superblock and the device table take the first 4096
// bytes, and the tar follows, page-aligned so that a file-backed mount reads
// whole pages of it.
constexpr uint64_t kTarOffset = 4096;
// The device table right after the superblock (erofs-utils puts it there
// too): slot offset 1152 / 128.
constexpr uint16_t kDevtSlotOff = (kSuperOffset + sizeof(SuperBlock)) / kDeviceSlotSize;
// An (name, value) pair carried by more than this many inodes is stored once
// in the shared xattr area (mkfs.erofs's default `-x 2`).
constexpr uint32_t kInlineXattrTolerance = 2;
constexpr size_t kMaxSharedPerInode = 255;  // h_shared_count is a byte
constexpr uint32_t kMaxXattrIbody = XattrIbodySize(0xFFFF);
constexpr size_t kMaxSymlink = 4095;  // PATH_MAX − 1; the kernel reads one page
// Inodes placed into holes left in earlier metadata blocks: how many holes
// are remembered (older ones are given up).
constexpr size_t kMaxHoles = 64;

uint64_t Align(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

std::array<uint8_t, 16> DeriveUuid(const std::string& seed) {
  std::array<uint8_t, 16> uuid{};
  if (seed.empty()) return uuid;
  std::string digest = Digest::Sha256Of("evs-erofs-uuid:" + seed).raw();
  std::memcpy(uuid.data(), digest.data(), uuid.size());
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0F) | 0x40);  // RFC 4122 version 4 bits
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3F) | 0x80);  // variant 1
  return uuid;
}

bool ValidPath(std::string_view path) {
  if (path.empty()) return true;  // the root
  size_t pos = 0;
  while (true) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view c = path.substr(pos, end - pos);
    if (c.empty() || c == "." || c == ".." || c.size() > kNameLen) return false;
    if (c.find('\0') != std::string_view::npos) return false;
    if (end == path.size()) return true;
    pos = end + 1;
  }
}

std::string_view BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// Size of the xattr entry for `name` = `value` (§1.5), or 0 if EROFS cannot
// hold it.
uint32_t XattrEntrySize(const std::string& name, const std::string& value) {
  auto split = SplitXattrName(name);
  if (!split || split->second.size() > kNameLen || value.size() > 0xFFFF) return 0;
  return XattrAlign(
      static_cast<uint32_t>(sizeof(XattrEntry) + split->second.size() + value.size()));
}

// The inline xattr area if nothing were shared: the most an inode can need.
uint64_t MaxXattrIbody(const std::vector<std::pair<std::string, std::string>>& xattrs) {
  if (xattrs.empty()) return 0;
  uint64_t size = sizeof(XattrIbodyHeader);
  for (const auto& [name, value] : xattrs) size += XattrEntrySize(name, value);
  return size;
}

uint16_t ModeType(EntryType type) {
  switch (type) {
    case EntryType::kRegular:
      return S_IFREG;
    case EntryType::kDirectory:
      return S_IFDIR;
    case EntryType::kSymlink:
      return S_IFLNK;
    case EntryType::kCharDevice:
      return S_IFCHR;
    case EntryType::kBlockDevice:
      return S_IFBLK;
    case EntryType::kFifo:
      return S_IFIFO;
    case EntryType::kSocket:
      return S_IFSOCK;
    default:
      return 0;
  }
}

std::string XattrKey(const std::string& name, const std::string& value) {
  std::string key;
  key.reserve(name.size() + 1 + value.size());
  key.append(name).push_back('\0');
  key.append(value);
  return key;
}

// Places inodes in the inode area. Objects with inline data must not cross a
// block boundary (§1.3: "inline data cross block boundary" is corruption);
// others may. When an object does not fit in what is left of the current
// block, the rest becomes a hole that later small objects fill, so tails do
// not waste up to a block each.
class MetaAllocator {
 public:
  explicit MetaAllocator(uint32_t block_size) : bs_(block_size) {}

  uint64_t Place(uint64_t size, bool within_block) {
    const uint64_t occupied = Align(size, kInodeSlotSize);
    for (auto it = holes_.begin(); it != holes_.end(); ++it) {
      if (it->end - it->start < size) continue;
      const uint64_t pos = it->start;
      it->start += occupied;
      if (it->start + kInodeSlotSize > it->end) holes_.erase(it);
      return pos;
    }
    if (within_block && frontier_ % bs_ + size > bs_) {
      const uint64_t boundary = Align(frontier_, bs_);
      if (boundary - frontier_ >= kInodeSlotSize) {
        holes_.push_back({frontier_, boundary});
        if (holes_.size() > kMaxHoles) holes_.pop_front();
      }
      frontier_ = boundary;
    }
    const uint64_t pos = frontier_;
    frontier_ += occupied;
    return pos;
  }

  uint64_t end() const { return frontier_; }

 private:
  struct Hole {
    uint64_t start, end;  // within one block; `end` is its boundary
  };
  uint32_t bs_;
  // Slot 0 stays empty: nid 0 would be inode number 0, and readdir(3)
  // skips entries with d_ino 0 (the root's "." and ".." would vanish).
  uint64_t frontier_ = kInodeSlotSize;
  std::deque<Hole> holes_;
};

class WriterImpl final : public ErofsWriter {
 public:
  WriterImpl(int fd, WriterOptions options)
      : fd_(fd),
        options_(std::move(options)),
        bs_(options_.mode == Mode::kFull ? kFullBlockSize : kIndexBlockSize),
        tree_(options_.epoch),
        tails_(options_.scratch_dir, fd, options_.tail_memory_limit),
        out_name_(options_.input_name.empty() ? std::string("EROFS image")
                                              : "EROFS image of " + options_.input_name) {
    const uint64_t first = options_.mode == Mode::kFull ? 1 : kTarOffset / bs_;
    data_.emplace(fd_, bs_, first, options_.observer, out_name_);
  }

  Status Add(const LayerEntry& entry, ByteSource* data) override {
    if (!error_.ok()) return error_;
    if (finished_) return FailedPreconditionError(out_name_, ": Add after Finish");
    Status s = AddEntry(entry, data);
    if (!s.ok()) error_ = s;
    return s;
  }

  Status AddTarBytes(const void* data, size_t n) override {
    if (!error_.ok()) return error_;
    if (options_.mode != Mode::kTarIndex)
      return error_ = FailedPreconditionError(out_name_, ": AddTarBytes outside tar-index mode");
    if (finished_) return FailedPreconditionError(out_name_, ": AddTarBytes after Finish");
    Status s = data_->Append(data, n);
    tar_bytes_ += n;
    if (!s.ok()) error_ = s;
    return s;
  }

  Result<ImageInfo> Finish() override {
    if (!error_.ok()) return error_;
    if (finished_) return FailedPreconditionError(out_name_, ": Finish called twice");
    finished_ = true;
    Result<ImageInfo> info = WriteMetadata();
    if (!info.ok()) error_ = info.status();
    return info;
  }

 private:
  template <typename... Args>
  Status EntryError(const LayerEntry& e, const Args&... args) {
    std::string where = StrCat(options_.input_name.empty() ? "" : options_.input_name + ": ",
                               "entry \"", e.path, "\"");
    if (e.header_offset != 0) where += StrCat(" at offset ", e.header_offset);
    return InvalidArgumentError(where, ": ", args...);
  }

  Status ValidateXattrs(const LayerEntry& e) {
    for (const auto& [name, value] : e.xattrs) {
      auto split = SplitXattrName(name);
      if (!split) {
        return EntryError(e, "xattr \"", name,
                          "\" is outside the namespaces EROFS stores (user., trusted., "
                          "security., system.posix_acl_*)");
      }
      if (split->second.size() > kNameLen)
        return EntryError(e, "xattr name \"", name, "\" too long");
      if (value.size() > 0xFFFF)
        return EntryError(e, "xattr \"", name, "\" value of ", value.size(),
                          " bytes (at most 65535)");
    }
    if (MaxXattrIbody(e.xattrs) > kMaxXattrIbody)
      return EntryError(e, "xattrs take more than ", kMaxXattrIbody, " bytes");
    return OkStatus();
  }

  void SetAttributes(Node* node, const LayerEntry& e) {
    node->mode = e.mode & 07777;
    node->uid = e.uid;
    node->gid = e.gid;
    node->mtime = e.mtime;
    node->mtime_nsec = e.mtime_nsec < 1000000000 ? e.mtime_nsec : 0;
    node->xattrs = e.xattrs;
  }

  Status AddEntry(const LayerEntry& e, ByteSource* data) {
    if (!ValidPath(e.path)) return EntryError(e, "path is not normalised");
    if (e.type != EntryType::kHardlink) EVS_RETURN_IF_ERROR(ValidateXattrs(e));

    if (e.type == EntryType::kOpaqueMarker) {
      Node* dir = tree_.Lookup(e.path);
      if (dir == nullptr) {
        Result<Node*> parent = tree_.ParentDirectory(e.path);
        if (!parent.ok()) return EntryError(e, parent.status().message());
        dir = tree_.NewNode(EntryType::kDirectory);
        dir->mode = 0755;
        dir->mtime = options_.epoch;
        tree_.Link(*parent, BaseName(e.path), dir);
      } else if (dir->type != EntryType::kDirectory) {
        return EntryError(e, "opaque marker for something that is not a directory");
      }
      dir->opaque = true;
      return OkStatus();
    }

    if (e.path.empty()) {
      if (e.type != EntryType::kDirectory) return EntryError(e, "the root must be a directory");
      SetAttributes(tree_.root(), e);
      return OkStatus();
    }
    Result<Node*> parent_or = tree_.ParentDirectory(e.path);
    if (!parent_or.ok()) return EntryError(e, parent_or.status().message());
    Node* parent = *parent_or;
    const std::string_view name = BaseName(e.path);

    switch (e.type) {
      case EntryType::kHardlink: {
        if (!ValidPath(e.link_target) || e.link_target.empty())
          return EntryError(e, "hardlink target \"", e.link_target, "\" is not a normalised path");
        Node* target = tree_.Lookup(e.link_target);
        if (target == nullptr)
          return EntryError(e, "hardlink to \"", e.link_target,
                            "\", which is not an earlier entry");
        if (target->type == EntryType::kDirectory)
          return EntryError(e, "hardlink to directory \"", e.link_target, "\"");
        tree_.Link(parent, name, target);
        return OkStatus();
      }
      case EntryType::kDirectory: {
        auto it = parent->dir->children.find(name);
        if (it != parent->dir->children.end() && it->second->type == EntryType::kDirectory) {
          SetAttributes(it->second, e);  // keeps its children (writer.h)
          return OkStatus();
        }
        Node* node = tree_.NewNode(EntryType::kDirectory);
        SetAttributes(node, e);
        tree_.Link(parent, name, node);
        return OkStatus();
      }
      case EntryType::kSymlink:
        if (e.link_target.empty()) return EntryError(e, "symlink with an empty target");
        if (e.link_target.size() > kMaxSymlink)
          return EntryError(e, "symlink target of ", e.link_target.size(), " bytes (at most 4095)");
        if (e.link_target.find('\0') != std::string::npos)
          return EntryError(e, "symlink target holds a NUL byte");
        break;
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
        if (e.rdev_major > 0xFFF || e.rdev_minor > 0xFFFFF)
          return EntryError(e, "device number ", e.rdev_major, ":", e.rdev_minor,
                            " does not fit in 12:20 bits");
        break;
      case EntryType::kRegular:
      case EntryType::kFifo:
      case EntryType::kSocket:
        break;
      default:
        return EntryError(e, "unknown entry type ", static_cast<int>(e.type));
    }

    Node* node = tree_.NewNode(e.type);
    SetAttributes(node, e);
    if (e.type == EntryType::kSymlink) {
      node->size = e.link_target.size();
      EVS_ASSIGN_OR_RETURN(node->tail_ref,
                           tails_.Append(e.link_target.data(), e.link_target.size()));
    }
    if (e.type == EntryType::kCharDevice || e.type == EntryType::kBlockDevice)
      node->rdev = EncodeDev(e.rdev_major, e.rdev_minor);
    if (e.type == EntryType::kRegular) {
      node->size = e.size;
      data_bytes_ += e.size;
      if (options_.mode == Mode::kFull) {
        EVS_RETURN_IF_ERROR(WriteFileData(e, data, node));
      } else {
        if (e.size > 0 && e.data_offset % kIndexBlockSize != 0)
          return EntryError(e, "data offset ", e.data_offset, " in the tar is not 512-aligned");
        node->data_start = e.data_offset;
        node->tail_ref = e.header_offset;
      }
    }
    tree_.Link(parent, name, node);
    return OkStatus();
  }

  // Copies exactly `n` bytes of `src` into the data region.
  Status CopyToData(const LayerEntry& e, ByteSource* src, uint64_t n, uint64_t* done) {
    while (n > 0) {
      EVS_ASSIGN_OR_RETURN(std::span<uint8_t> room, data_->Writable());
      const size_t want = static_cast<size_t>(std::min<uint64_t>(n, room.size()));
      Result<size_t> got = src->Read(room.data(), want);
      if (!got.ok()) return got.status().Annotate(StrCat("entry \"", e.path, "\""));
      if (*got == 0) return EntryError(e, "data ended after ", *done, " of ", e.size, " bytes");
      data_->Commit(*got);
      *done += *got;
      n -= *got;
    }
    return OkStatus();
  }

  Status WriteFileData(const LayerEntry& e, ByteSource* src, Node* node) {
    if (e.size == 0) return OkStatus();
    if (src == nullptr) return EntryError(e, "no data source for ", e.size, " bytes");
    const uint64_t whole = e.size / bs_ * bs_;
    const uint32_t tail = static_cast<uint32_t>(e.size - whole);
    // Inline when even an extended inode with every xattr inline leaves room
    // for the tail: Finish() can then always place it in one block.
    node->tail_inline = tail > 0 && sizeof(InodeExtended) + MaxXattrIbody(e.xattrs) + tail <= bs_;
    node->data_start = data_->block();
    uint64_t done = 0;
    if (!node->tail_inline) {
      EVS_RETURN_IF_ERROR(CopyToData(e, src, e.size, &done));
      return data_->PadToBlock();
    }
    EVS_RETURN_IF_ERROR(CopyToData(e, src, whole, &done));
    uint8_t buf[kFullBlockSize];
    size_t have = 0;
    while (have < tail) {
      Result<size_t> got = src->Read(buf + have, tail - have);
      if (!got.ok()) return got.status().Annotate(StrCat("entry \"", e.path, "\""));
      if (*got == 0)
        return EntryError(e, "data ended after ", done + have, " of ", e.size, " bytes");
      have += *got;
    }
    EVS_ASSIGN_OR_RETURN(node->tail_ref, tails_.Append(buf, tail));
    return OkStatus();
  }

  // ---- Finish ----

  // Every live node, breadth-first from the root with children in name
  // order, each once (a hardlinked node where it is first reached).
  void CollectNodes() {
    Node* root = tree_.root();
    root->layout.placed = true;
    order_.push_back(root);
    for (size_t i = 0; i < order_.size(); ++i) {
      Node* node = order_[i];
      if (node->type != EntryType::kDirectory) continue;
      uint32_t subdirs = 0;
      Freeze(node);
      for (auto& [name, child] : node->dir->sorted) {
        if (child->type == EntryType::kDirectory) ++subdirs;
        if (child->layout.placed) continue;
        child->layout.placed = true;
        order_.push_back(child);
      }
      node->layout.nlink = 2 + subdirs;
      if (node->opaque) {
        // trusted.overlay.opaque=y (§1.6), keeping the list sorted and unique.
        auto& x = node->xattrs;
        auto it = std::lower_bound(x.begin(), x.end(), std::string("trusted.overlay.opaque"),
                                   [](const auto& a, const std::string& b) { return a.first < b; });
        if (it != x.end() && it->first == "trusted.overlay.opaque") {
          it->second = "y";
        } else {
          x.insert(it, {"trusted.overlay.opaque", "y"});
        }
      }
    }
    for (size_t i = 0; i < order_.size(); ++i) {
      Node* node = order_[i];
      node->layout.ino = static_cast<uint32_t>(i + 1);
      if (node->type != EntryType::kDirectory) node->layout.nlink = node->links;
    }
  }

  void ChooseSharedXattrs() {
    std::unordered_map<std::string, uint32_t> counts;
    for (Node* node : order_)
      for (const auto& [name, value] : node->xattrs) ++counts[XattrKey(name, value)];
    std::vector<std::string> shared;
    for (auto& [key, count] : counts)
      if (count > kInlineXattrTolerance) shared.push_back(key);
    std::sort(shared.begin(), shared.end());
    uint64_t offset = 0;
    for (std::string& key : shared) {
      const size_t nul = key.find('\0');
      const uint32_t size = XattrEntrySize(key.substr(0, nul), key.substr(nul + 1));
      shared_ids_.emplace(key, static_cast<uint32_t>(offset / 4));
      shared_order_.push_back(std::move(key));
      offset += size;
    }
    shared_bytes_ = offset;
  }

  // Xattrs of `node` split into shared ids and inline entries.
  void SplitXattrs(const Node* node, std::vector<uint32_t>* shared,
                   std::vector<const std::pair<std::string, std::string>*>* inline_entries) {
    for (const auto& xattr : node->xattrs) {
      auto it = shared_ids_.empty() ? shared_ids_.end()
                                    : shared_ids_.find(XattrKey(xattr.first, xattr.second));
      if (it != shared_ids_.end() && shared->size() < kMaxSharedPerInode) {
        shared->push_back(it->second);
      } else {
        inline_entries->push_back(&xattr);
      }
    }
  }

  uint32_t XattrAreaSize(const Node* node) {
    if (node->xattrs.empty()) return 0;
    std::vector<uint32_t> shared;
    std::vector<const std::pair<std::string, std::string>*> entries;
    SplitXattrs(node, &shared, &entries);
    uint32_t size = sizeof(XattrIbodyHeader) + 4 * static_cast<uint32_t>(shared.size());
    for (const auto* x : entries) size += XattrEntrySize(x->first, x->second);
    return size;
  }

  // Chooses inode size, data layout and inline size of every node, and
  // allocates directory and symlink blocks from `*next_block` on.
  Status ChooseLayouts(uint64_t* next_block) {
    for (Node* node : order_) {
      auto& l = node->layout;
      l.xattr_size = XattrAreaSize(node);
      if (node->type == EntryType::kDirectory)
        node->size = DirectorySize(DirectoryItems(node), bs_);
      const uint64_t size = node->size;
      const bool compact = node->mtime == options_.epoch && node->mtime_nsec == 0 &&
                           node->uid <= 0xFFFF && node->gid <= 0xFFFF && l.nlink <= 0xFFFF &&
                           size <= 0xFFFFFFFFu;
      l.inode_size = compact ? sizeof(InodeCompact) : sizeof(InodeExtended);
      const uint64_t head = l.inode_size + l.xattr_size;
      l.data_layout = kFlatPlain;
      l.inline_size = 0;
      switch (node->type) {
        case EntryType::kRegular:
          if (options_.mode == Mode::kTarIndex) {
            if (size > 0) {
              l.data_layout = kChunkBased;
              l.inline_size = static_cast<uint32_t>(Align(head, sizeof(ChunkIndex)) - head +
                                                    ChunkCount(size) * sizeof(ChunkIndex));
            }
          } else if (node->tail_inline) {
            l.data_layout = kFlatInline;
            l.inline_size = static_cast<uint32_t>(size % bs_);
            if (head + l.inline_size > bs_) return InternalError("inline tail does not fit");
          }
          break;
        case EntryType::kDirectory:
        case EntryType::kSymlink: {
          // A directory's inline tail needs one zero byte after it: namei.c
          // reads the last name of a block up to a NUL or the block's end.
          const uint64_t tail = size % bs_;
          const uint64_t nul = node->type == EntryType::kDirectory ? 1 : 0;
          if (tail > 0 && head + tail + nul <= bs_) {
            l.data_layout = kFlatInline;
            l.inline_size = static_cast<uint32_t>(tail);
            l.extra_blocks = static_cast<uint32_t>(size / bs_);
          } else {
            l.extra_blocks = static_cast<uint32_t>((size + bs_ - 1) / bs_);
          }
          l.extra_block = l.extra_blocks > 0 ? *next_block : 0;
          *next_block += l.extra_blocks;
          break;
        }
        default:
          break;
      }
    }
    return OkStatus();
  }

  // Tar-index mode: one chunk covers the whole file when it can (mkfs.erofs
  // --tar=i: chunkbits = max(blkbits, ilog2(size − 1) + 1), §1.7), at most
  // blocksize << 31.
  uint32_t ChunkBits(uint64_t size) const {
    uint32_t bits = 0;
    while (bits < 31 && (uint64_t{bs_} << bits) < size) ++bits;
    return bits;
  }
  uint64_t ChunkCount(uint64_t size) const {
    const uint64_t chunk = uint64_t{bs_} << ChunkBits(size);
    return (size + chunk - 1) / chunk;
  }

  void PlaceInodes() {
    MetaAllocator allocator(bs_);
    for (Node* node : order_) {
      auto& l = node->layout;
      const bool inline_data = l.data_layout == kFlatInline;
      uint64_t size = l.inode_size + l.xattr_size + l.inline_size;
      if (inline_data && node->type == EntryType::kDirectory) size += 1;
      l.meta_offset = allocator.Place(size, inline_data);
    }
    meta_bytes_ = allocator.end();
  }

  Status WriteExtraBlocks(BlockStream* out) {
    for (Node* node : order_) {
      const auto& l = node->layout;
      if (l.extra_blocks == 0) continue;
      if (out->block() != l.extra_block) return InternalError("directory blocks out of order");
      if (node->type == EntryType::kSymlink) {
        char target[kMaxSymlink];
        EVS_RETURN_IF_ERROR(tails_.Read(node->tail_ref, target, node->size));
        EVS_RETURN_IF_ERROR(
            out->Append(target, std::min<uint64_t>(node->size, uint64_t{l.extra_blocks} * bs_)));
        EVS_RETURN_IF_ERROR(out->PadToBlock());
        continue;
      }
      uint64_t emitted = 0;
      EVS_RETURN_IF_ERROR(EmitDirectoryBlocks(DirectoryItems(node), bs_,
                                              [&](const uint8_t* block, size_t) -> Status {
                                                if (emitted++ >= l.extra_blocks)
                                                  return OkStatus();  // the inline tail
                                                return out->Append(block, bs_);
                                              }));
    }
    return out->PadToBlock();
  }

  Status WriteSharedXattrs(BlockStream* out) {
    for (const std::string& key : shared_order_) {
      const size_t nul = key.find('\0');
      EVS_RETURN_IF_ERROR(AppendXattrEntry(out, key.substr(0, nul), key.substr(nul + 1)));
    }
    return out->PadToBlock();
  }

  static Status AppendXattrEntry(BlockStream* out, std::string_view name, std::string_view value) {
    auto split = SplitXattrName(name);
    XattrEntry entry{};
    entry.e_name_len = static_cast<uint8_t>(split->second.size());
    entry.e_name_index = split->first;
    entry.e_value_size = static_cast<uint16_t>(value.size());
    EVS_RETURN_IF_ERROR(out->Append(&entry, sizeof entry));
    EVS_RETURN_IF_ERROR(out->Append(split->second.data(), split->second.size()));
    EVS_RETURN_IF_ERROR(out->Append(value.data(), value.size()));
    const size_t used = sizeof entry + split->second.size() + value.size();
    return out->AppendZeros(XattrAlign(static_cast<uint32_t>(used)) - used);
  }

  uint32_t StartBlock(const Node* node) {
    const auto& l = node->layout;
    switch (node->type) {
      case EntryType::kRegular:
        if (node->size == 0) return 0;
        return node->size >= bs_ || !node->tail_inline ? static_cast<uint32_t>(node->data_start)
                                                       : 0;
      case EntryType::kDirectory:
      case EntryType::kSymlink:
        return static_cast<uint32_t>(l.extra_block);
      default:
        return 0;
    }
  }

  Status WriteInode(BlockStream* out, Node* node) {
    const auto& l = node->layout;
    const uint64_t size = node->size;

    uint32_t i_u = 0;
    if (node->type == EntryType::kCharDevice || node->type == EntryType::kBlockDevice) {
      i_u = node->rdev;
    } else if (l.data_layout == kChunkBased) {
      i_u = kChunkFormatIndexes | ChunkBits(size);
    } else {
      i_u = StartBlock(node);
    }
    const uint16_t mode = static_cast<uint16_t>(ModeType(node->type) | node->mode);
    std::vector<uint32_t> shared;
    std::vector<const std::pair<std::string, std::string>*> entries;
    SplitXattrs(node, &shared, &entries);
    const uint16_t icount =
        l.xattr_size == 0
            ? 0
            : static_cast<uint16_t>((l.xattr_size - sizeof(XattrIbodyHeader)) / 4 + 1);

    if (l.inode_size == sizeof(InodeCompact)) {
      InodeCompact d{};
      d.i_format = MakeInodeFormat(kInodeLayoutCompact, static_cast<DataLayout>(l.data_layout));
      d.i_xattr_icount = icount;
      d.i_mode = mode;
      d.i_nlink = static_cast<uint16_t>(l.nlink);
      d.i_size = static_cast<uint32_t>(size);
      d.i_u = i_u;
      d.i_ino = l.ino;
      d.i_uid = static_cast<uint16_t>(node->uid);
      d.i_gid = static_cast<uint16_t>(node->gid);
      EVS_RETURN_IF_ERROR(out->Append(&d, sizeof d));
    } else {
      InodeExtended d{};
      d.i_format = MakeInodeFormat(kInodeLayoutExtended, static_cast<DataLayout>(l.data_layout));
      d.i_xattr_icount = icount;
      d.i_mode = mode;
      d.i_size = size;
      d.i_u = i_u;
      d.i_ino = l.ino;
      d.i_uid = node->uid;
      d.i_gid = node->gid;
      d.i_mtime = static_cast<uint64_t>(node->mtime);
      d.i_mtime_nsec = node->mtime_nsec;
      d.i_nlink = l.nlink;
      EVS_RETURN_IF_ERROR(out->Append(&d, sizeof d));
    }

    if (l.xattr_size > 0) {
      XattrIbodyHeader h{};
      h.h_shared_count = static_cast<uint8_t>(shared.size());
      EVS_RETURN_IF_ERROR(out->Append(&h, sizeof h));
      EVS_RETURN_IF_ERROR(out->Append(shared.data(), shared.size() * sizeof(uint32_t)));
      for (const auto* x : entries) EVS_RETURN_IF_ERROR(AppendXattrEntry(out, x->first, x->second));
    }

    if (l.data_layout == kChunkBased) {
      const uint64_t head = l.inode_size + l.xattr_size;
      EVS_RETURN_IF_ERROR(out->AppendZeros(Align(head, sizeof(ChunkIndex)) - head));
      const uint32_t bits = ChunkBits(size);
      const uint64_t blocks_per_chunk = uint64_t{1} << bits;
      const uint64_t first = node->data_start / bs_;
      for (uint64_t i = 0, n = ChunkCount(size); i < n; ++i) {
        ChunkIndex c{};
        c.device_id = 1;  // the tar: device table slot 0
        c.startblk_lo = static_cast<uint32_t>(first + i * blocks_per_chunk);
        EVS_RETURN_IF_ERROR(out->Append(&c, sizeof c));
      }
    } else if (l.data_layout == kFlatInline) {
      if (node->type == EntryType::kRegular) {
        uint8_t tail[kFullBlockSize];
        EVS_RETURN_IF_ERROR(tails_.Read(node->tail_ref, tail, l.inline_size));
        EVS_RETURN_IF_ERROR(out->Append(tail, l.inline_size));
      } else if (node->type == EntryType::kSymlink) {
        char target[kMaxSymlink];
        EVS_RETURN_IF_ERROR(tails_.Read(node->tail_ref, target, node->size));
        EVS_RETURN_IF_ERROR(out->Append(target + uint64_t{l.extra_blocks} * bs_, l.inline_size));
      } else {
        std::vector<uint8_t> last;
        EVS_RETURN_IF_ERROR(EmitDirectoryBlocks(DirectoryItems(node), bs_,
                                                [&](const uint8_t* block, size_t used) -> Status {
                                                  last.assign(block, block + used);
                                                  return OkStatus();
                                                }));
        if (last.size() != l.inline_size) return InternalError("directory tail size changed");
        EVS_RETURN_IF_ERROR(out->Append(last.data(), last.size()));
      }
    }
    return OkStatus();
  }

  Status WriteInodes(BlockStream* out, uint64_t meta_base) {
    std::vector<Node*> by_offset = order_;
    std::stable_sort(by_offset.begin(), by_offset.end(), [](const Node* a, const Node* b) {
      return a->layout.meta_offset < b->layout.meta_offset;
    });
    for (Node* node : by_offset) {
      const uint64_t at = meta_base + node->layout.meta_offset;
      if (out->offset() > at) return InternalError("inodes overlap at ", at);
      EVS_RETURN_IF_ERROR(out->AppendZeros(at - out->offset()));
      EVS_RETURN_IF_ERROR(WriteInode(out, node));
    }
    return out->Finish();
  }

  Status WriteSuperBlock(uint64_t total_blocks, uint64_t meta_blkaddr, uint64_t xattr_blkaddr) {
    const size_t head_size = options_.mode == Mode::kFull ? kFullBlockSize : kTarOffset;
    std::vector<uint8_t> head(head_size, 0);
    SuperBlock sb{};
    sb.magic = kSuperMagic;
    sb.feature_compat = kFeatureCompatSbChksum;
    sb.blkszbits = static_cast<uint8_t>(__builtin_ctz(bs_));
    sb.root_nid = static_cast<uint16_t>(tree_.root()->layout.meta_offset / kInodeSlotSize);
    sb.inos = order_.size();
    sb.build_time = static_cast<uint64_t>(options_.epoch);
    sb.blocks = static_cast<uint32_t>(total_blocks);
    sb.meta_blkaddr = static_cast<uint32_t>(meta_blkaddr);
    sb.xattr_blkaddr = static_cast<uint32_t>(xattr_blkaddr);
    std::array<uint8_t, 16> uuid = DeriveUuid(options_.uuid_seed);
    std::memcpy(sb.uuid, uuid.data(), uuid.size());
    if (options_.mode == Mode::kTarIndex) {
      sb.feature_incompat = kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable;
      sb.extra_devices = 1;
      sb.devt_slotoff = kDevtSlotOff;
      DeviceSlot slot{};
      slot.blocks = static_cast<uint32_t>((tar_bytes_ + bs_ - 1) / bs_);
      slot.uniaddr = static_cast<uint32_t>(kTarOffset / bs_);
      std::memcpy(head.data() + kDevtSlotOff * kDeviceSlotSize, &slot, sizeof slot);
    }
    std::memcpy(head.data() + kSuperOffset, &sb, sizeof sb);
    const uint32_t crc = SuperBlockChecksum(head.data(), bs_);
    std::memcpy(head.data() + kSuperOffset + offsetof(SuperBlock, checksum), &crc, sizeof crc);
    BlockStream out(fd_, bs_, 0, options_.observer, out_name_, head_size);
    EVS_RETURN_IF_ERROR(out.Append(head.data(), head.size()));
    return out.Finish();
  }

  // The path of a live node, for error messages (a walk of the frozen tree).
  std::string PathOf(const Node* target) {
    std::vector<std::pair<Node*, std::string>> stack{{tree_.root(), ""}};
    while (!stack.empty()) {
      auto [dir, path] = std::move(stack.back());
      stack.pop_back();
      for (auto& [name, child] : dir->dir->sorted) {
        std::string child_path = path.empty() ? std::string(name) : StrCat(path, "/", name);
        if (child == target) return child_path;
        if (child->type == EntryType::kDirectory) stack.emplace_back(child, std::move(child_path));
      }
    }
    return "?";
  }

  // Tar-index mode: every file's data lies within the tar received, and its
  // chunk indexes can address it (32-bit block numbers: 2 TiB of tar).
  Status CheckTarRanges() {
    for (Node* node : order_) {
      if (node->type != EntryType::kRegular || node->size == 0) continue;
      const uint64_t end = node->data_start + node->size;
      const uint64_t last_block =
          node->data_start / bs_ +
          (ChunkCount(node->size) - 1) * (uint64_t{1} << ChunkBits(node->size));
      if (end > tar_bytes_ || end < node->data_start || last_block > 0xFFFFFFFEu) {
        return InvalidArgumentError(options_.input_name.empty() ? "" : options_.input_name + ": ",
                                    "entry \"", PathOf(node), "\" at offset ", node->tail_ref,
                                    ": data [", node->data_start, ", +", node->size,
                                    ") lies beyond the ", tar_bytes_, " tar bytes received");
      }
    }
    return OkStatus();
  }

  Result<ImageInfo> WriteMetadata() {
    // The data (full) or the tar (tar-index) region ends on a block boundary.
    EVS_RETURN_IF_ERROR(data_->Finish());
    const uint64_t extra_first = data_->block();
    uint64_t next_block = extra_first;
    data_.reset();  // its buffer is not needed any more
    CollectNodes();
    if (options_.mode == Mode::kTarIndex) EVS_RETURN_IF_ERROR(CheckTarRanges());
    ChooseSharedXattrs();
    EVS_RETURN_IF_ERROR(ChooseLayouts(&next_block));

    const uint64_t xattr_blkaddr = next_block;
    next_block += (shared_bytes_ + bs_ - 1) / bs_;
    const uint64_t meta_blkaddr = next_block;
    PlaceInodes();
    const uint64_t total_blocks = meta_blkaddr + (meta_bytes_ + bs_ - 1) / bs_;
    if (total_blocks > 0xFFFFFFFFu)
      return ResourceExhaustedError(out_name_, ": image of ", total_blocks, " blocks exceeds 2^32");

    BlockStream out(fd_, bs_, extra_first, options_.observer, out_name_);
    EVS_RETURN_IF_ERROR(WriteExtraBlocks(&out));
    if (out.block() != xattr_blkaddr) return InternalError("shared xattrs misplaced");
    EVS_RETURN_IF_ERROR(WriteSharedXattrs(&out));
    if (out.block() != meta_blkaddr) return InternalError("inodes misplaced");
    EVS_RETURN_IF_ERROR(WriteInodes(&out, meta_blkaddr * bs_));
    if (out.block() != total_blocks) return InternalError("image size mismatch");
    EVS_RETURN_IF_ERROR(
        WriteSuperBlock(total_blocks, meta_blkaddr, shared_bytes_ > 0 ? xattr_blkaddr : 0));

    ImageInfo info;
    info.image_size = total_blocks * bs_;
    info.block_size = bs_;
    info.inodes = order_.size();
    info.data_bytes = data_bytes_;
    if (options_.mode == Mode::kTarIndex) {
      info.tar_offset = kTarOffset;
      info.tar_size = tar_bytes_;
    }
    return info;
  }

  int fd_;
  WriterOptions options_;
  uint32_t bs_;
  Tree tree_;
  TailStore tails_;
  std::string out_name_;
  std::optional<BlockStream> data_;  // full: file data; tar-index: the tar
  Status error_;
  bool finished_ = false;
  uint64_t data_bytes_ = 0;
  uint64_t tar_bytes_ = 0;

  std::vector<Node*> order_;
  std::unordered_map<std::string, uint32_t> shared_ids_;
  std::vector<std::string> shared_order_;
  uint64_t shared_bytes_ = 0;
  uint64_t meta_bytes_ = 0;
};

}  // namespace

Result<std::unique_ptr<ErofsWriter>> ErofsWriter::Create(int fd, WriterOptions options) {
  if (fd < 0) return InvalidArgumentError("ErofsWriter: invalid file descriptor");
  return std::unique_ptr<ErofsWriter>(new WriterImpl(fd, std::move(options)));
}

}  // namespace evs::erofs
