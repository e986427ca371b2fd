#include "tree.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace evs::erofs {

void Freeze(Node* dir) {
  Directory& d = *dir->dir;
  d.sorted.assign(d.children.begin(), d.children.end());
  std::sort(d.sorted.begin(), d.sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::unordered_map<std::string_view, Node*>().swap(d.children);
}

std::string_view Tree::Intern(std::string_view name) {
  // Names are at most 255 bytes; chunks of 64 KiB waste little.
  constexpr size_t kChunk = 64u << 10;
  if (chunk_used_ + name.size() > chunk_size_) {
    name_chunks_.emplace_back(new char[kChunk]);
    chunk_used_ = 0;
    chunk_size_ = kChunk;
  }
  char* p = name_chunks_.back().get() + chunk_used_;
  std::memcpy(p, name.data(), name.size());
  chunk_used_ += name.size();
  return std::string_view(p, name.size());
}

Tree::Tree(int64_t epoch) : epoch_(epoch) {
  root_ = NewNode(EntryType::kDirectory);
  root_->mode = 0755;
  root_->mtime = epoch;
  root_->dir->parent = root_;
}

Node* Tree::NewNode(EntryType type) {
  Node& node = nodes_.emplace_back();
  node.type = type;
  if (type == EntryType::kDirectory) node.dir = std::make_unique<Directory>();
  return &node;
}

Result<Node*> Tree::ParentDirectory(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return root_;
  std::string_view parent_path = path.substr(0, slash);
  if (cached_parent_ != nullptr && parent_path == cached_parent_path_) return cached_parent_;

  Node* dir = root_;
  size_t pos = 0;
  while (pos <= parent_path.size()) {
    size_t end = parent_path.find('/', pos);
    if (end == std::string_view::npos) end = parent_path.size();
    std::string_view name = parent_path.substr(pos, end - pos);
    auto it = dir->dir->children.find(name);
    if (it == dir->dir->children.end()) {
      Node* made = NewNode(EntryType::kDirectory);
      made->mode = 0755;
      made->mtime = epoch_;
      made->dir->parent = dir;
      dir->dir->children.emplace(Intern(name), made);
      dir = made;
    } else if (it->second->type != EntryType::kDirectory) {
      return InvalidArgumentError("parent \"", parent_path.substr(0, end),
                                  "\" exists and is not a directory");
    } else {
      dir = it->second;
    }
    pos = end + 1;
  }
  cached_parent_path_.assign(parent_path);
  cached_parent_ = dir;
  return dir;
}

Node* Tree::Lookup(std::string_view path) {
  Node* node = root_;
  size_t pos = 0;
  while (pos < path.size()) {
    if (node->type != EntryType::kDirectory) return nullptr;
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    auto it = node->dir->children.find(path.substr(pos, end - pos));
    if (it == node->dir->children.end()) return nullptr;
    node = it->second;
    pos = end + 1;
  }
  return node;
}

void Tree::Link(Node* dir, std::string_view name, Node* node) {
  auto it = dir->dir->children.find(name);
  if (it != dir->dir->children.end()) {
    if (it->second == node) return;
    Release(it->second);
    it->second = node;
  } else {
    dir->dir->children.emplace(Intern(name), node);
  }
  if (node->type == EntryType::kDirectory) {
    node->dir->parent = dir;
  } else {
    ++node->links;
  }
}

void Tree::Release(Node* node) {
  if (node->type != EntryType::kDirectory) {
    --node->links;
    return;
  }
  // The cached parent may lie in the released subtree.
  cached_parent_ = nullptr;
  std::vector<Node*> stack{node};
  while (!stack.empty()) {
    Node* d = stack.back();
    stack.pop_back();
    for (auto& [name, child] : d->dir->children) {
      if (child->type == EntryType::kDirectory) {
        stack.push_back(child);
      } else {
        --child->links;
      }
    }
    d->dir->children.clear();
  }
}

}  // namespace evs::erofs
