// Tree: the filesystem an image will hold, built entry by entry with the
// semantics of writer.h (later entries replace earlier ones, missing parents
// are created, hardlinks share one node). It holds metadata only: a regular
// file's data has already been written to the image when its node is made,
// and the node remembers where.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "evs/common/status.h"
#include "evs/tar/entry.h"

namespace evs::erofs {

struct Node;

struct Directory {
  Node* parent = nullptr;  // the root is its own parent
  // Names point into the tree's name arena. Unordered: a hash node costs
  // about half what a std::map node with its std::string does, and the
  // writer sorts once per directory when it lays the directory out
  // (Freeze()).
  std::unordered_map<std::string_view, Node*> children;
  // Once the tree is complete (Freeze()): the children in byte-wise name
  // order (std::string_view compares as unsigned char), the order EROFS
  // directories must have (§1.4); `children` is emptied then.
  std::vector<std::pair<std::string_view, Node*>> sorted;
};

// Sorts a directory's children into Directory::sorted and frees the hash
// table. Call once no entry will be added any more.
void Freeze(Node* dir);

// One inode.
struct Node {
  EntryType type = EntryType::kDirectory;  // never kHardlink or kOpaqueMarker
  uint32_t mode = 0;                       // permission bits, 07777
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint32_t rdev = 0;    // EncodeDev(major, minor) for devices
  uint32_t links = 0;   // directory entries naming a non-directory
  bool opaque = false;  // directories: add trusted.overlay.opaque=y
  bool tail_inline = false;
  // i_size: regular files and symlinks from the entry; directories once
  // Finish() has laid them out.
  uint64_t size = 0;
  // Full mode: first block of the file's data in the image (its tail block
  // too when the tail is not inline). Tar-index mode: the data's offset in
  // the tar.
  uint64_t data_start = 0;
  // TailStore reference of a regular file's inline tail (full mode) or of a
  // symlink's target; for tar-index regular files, the offset of the tar
  // header (error messages). Kept in one field: nodes are the writer's
  // per-entry memory.
  uint64_t tail_ref = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name
  std::unique_ptr<Directory> dir;                           // directories only

  // Filled by the writer's Finish().
  struct Layout {
    bool placed = false;
    uint8_t inode_size = 0;    // 32 or 64
    uint8_t data_layout = 0;   // DataLayout
    uint32_t xattr_size = 0;   // inline xattr area
    uint32_t inline_size = 0;  // bytes after the xattrs (tail or chunk indexes)
    uint32_t ino = 0;          // i_ino
    uint32_t nlink = 0;
    uint64_t meta_offset = 0;  // from the start of the inode area; nid = /32
    uint64_t extra_block = 0;  // directory / symlink blocks
    uint32_t extra_blocks = 0;
  } layout;
};

class Tree {
 public:
  // The root starts as a directory 0755 root:root with mtime `epoch`.
  explicit Tree(int64_t epoch);

  Node* root() { return root_; }

  // A new node, owned by the tree (nodes live as long as the tree, so an
  // entry replaced later never leaves a dangling pointer behind).
  Node* NewNode(EntryType type);

  // The directory that holds `path` (a normalised, non-empty path), creating
  // missing parents as directories 0755 root:root with mtime epoch.
  // InvalidArgument if a component exists and is not a directory.
  Result<Node*> ParentDirectory(std::string_view path);

  // The node at `path` ("" is the root), or nullptr.
  Node* Lookup(std::string_view path);

  // Makes `name` in `dir` name `node`, releasing what it named before: a
  // non-directory loses a link, a directory's subtree loses one link per
  // name in it (writer.h: a directory replaced by anything else loses its
  // children).
  void Link(Node* dir, std::string_view name, Node* node);

 private:
  void Release(Node* node);
  // A copy of `name` that lives as long as the tree.
  std::string_view Intern(std::string_view name);

  int64_t epoch_;
  std::deque<Node> nodes_;
  std::vector<std::unique_ptr<char[]>> name_chunks_;
  size_t chunk_used_ = 0, chunk_size_ = 0;
  Node* root_;
  // Entries arrive grouped by directory: remember the last parent found.
  std::string cached_parent_path_;
  Node* cached_parent_ = nullptr;
};

}  // namespace evs::erofs
