// Builds EROFS images from LayerEntry values in tests, and reads them back.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/erofs/reader.h"
#include "evs/erofs/writer.h"
#include "test_util.h"
#include "tree_util.h"

namespace evs::testing {

inline LayerEntry Entry(std::string path, EntryType type, uint32_t mode = 0644, int64_t mtime = 0) {
  LayerEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = mode;
  e.mtime = mtime;
  return e;
}

// Writes one image to `path` through ErofsWriter.
class ImageBuilder {
 public:
  ImageBuilder(std::string path, erofs::WriterOptions options = {}) : path_(std::move(path)) {
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    auto w = erofs::ErofsWriter::Create(fd_.get(), std::move(options));
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    if (w.ok()) writer_ = std::move(*w);
  }

  // Adds `e` with `data` as its content (regular files); returns the status.
  Status Add(LayerEntry e, const std::string& data = "") {
    if (e.type == EntryType::kRegular) e.size = data.size();
    StringSource source(data);
    return writer_->Add(e, &source);
  }
  Status Dir(const std::string& path, uint32_t mode = 0755, int64_t mtime = 0) {
    return Add(Entry(path, EntryType::kDirectory, mode, mtime));
  }
  Status File(const std::string& path, const std::string& data, uint32_t mode = 0644,
              int64_t mtime = 0) {
    return Add(Entry(path, EntryType::kRegular, mode, mtime), data);
  }
  Status Link(const std::string& path, const std::string& target) {
    LayerEntry e = Entry(path, EntryType::kHardlink);
    e.link_target = target;
    return Add(e);
  }
  Status Symlink(const std::string& path, const std::string& target) {
    LayerEntry e = Entry(path, EntryType::kSymlink, 0777);
    e.link_target = target;
    return Add(e);
  }

  erofs::ErofsWriter* writer() { return writer_.get(); }
  const std::string& path() const { return path_; }

  Result<erofs::ImageInfo> Finish() { return writer_->Finish(); }

  // Finish(), expecting success, then open the image.
  std::unique_ptr<erofs::ErofsReader> FinishAndOpen() {
    auto info = Finish();
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    if (!info.ok()) return nullptr;
    info_ = *info;
    fd_.Reset();
    auto reader = erofs::ErofsReader::Open(path_);
    EXPECT_TRUE(reader.ok()) << reader.status().ToString();
    return reader.ok() ? std::move(*reader) : nullptr;
  }
  const erofs::ImageInfo& info() const { return info_; }

 private:
  std::string path_;
  UniqueFd fd_;
  std::unique_ptr<erofs::ErofsWriter> writer_;
  erofs::ImageInfo info_;
};

// The whole content of a regular file in an image.
inline std::string ReadAll(const erofs::ErofsReader& reader, const erofs::Inode& inode) {
  std::string out(inode.size, '\0');
  auto n = reader.ReadData(inode, 0, out.data(), out.size());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  if (n.ok()) out.resize(*n);
  return out;
}

// A snapshot of an image as our reader sees it, comparable with
// SnapshotTree() of a directory (tree_util.h).
inline TreeSnapshot SnapshotWithReader(const erofs::ErofsReader& reader) {
  TreeSnapshot out;
  std::map<uint64_t, std::vector<std::string>> by_nid;
  Status s = reader.Walk([&](const std::string& path, const erofs::Inode& inode) -> Status {
    TreeEntry e;
    e.type = erofs::ModeString(inode.mode)[0];
    if (e.type == '-') e.type = '-';
    e.mode = inode.mode & 07777;
    e.uid = inode.uid;
    e.gid = inode.gid;
    e.mtime = inode.mtime;
    if (inode.is_reg()) {
      e.size = inode.size;
      e.content =
          inode.size == 0 ? "empty" : HexEncode(Digest::Sha256Of(ReadAll(reader, inode)).raw());
    }
    if (inode.is_symlink()) {
      auto t = reader.ReadSymlink(inode);
      if (!t.ok()) return t.status();
      e.target = *t;
      e.size = inode.size;
    }
    e.rdev_major = inode.rdev_major;
    e.rdev_minor = inode.rdev_minor;
    auto x = reader.ReadXattrs(inode);
    if (!x.ok()) return x.status();
    e.xattrs = *x;
    std::sort(e.xattrs.begin(), e.xattrs.end());
    if (!inode.is_dir() && inode.nlink > 1) by_nid[inode.nid].push_back(path);
    out[path] = e;
    return OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (auto& [nid, paths] : by_nid) {
    std::string first = *std::min_element(paths.begin(), paths.end());
    for (const std::string& p : paths) out[p].link_group = first;
  }
  return out;
}

}  // namespace evs::testing
