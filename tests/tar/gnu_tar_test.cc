// Archives made by GNU tar (--format=ustar|gnu|pax; plain, gzip, zstd, and
// multi-member gzip / multi-frame zstd) of a tree with every entry kind and
// edge case, read back through LayerStream + LayerReader, and every field
// compared with what was put in (lstat, readlink, listxattr of the tree).
// GNU tar's own listing (tar -t) is the oracle for which members exist.
//
// Needs root (mknod, chown to ids above 65535, trusted.* xattrs).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/tar/decompress.h"
#include "evs/tar/layer_reader.h"
#include "evs/tar/tar_reader.h"
#include "tar_builder.h"
#include "test_util.h"

namespace evs::tar {
namespace {

using ::evs::testing::ReadFileOrDie;
using ::evs::testing::Sh;
using ::evs::testing::ShOk;
using ::evs::testing::TempDir;

// What the tree holds at one path, read back from the filesystem.
struct Expected {
  EntryType type = EntryType::kRegular;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;
  std::string content;
  std::string link_target;
  uint32_t major = 0;
  uint32_t minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
  ino_t ino = 0;
  nlink_t nlink = 1;
};

// ---- building the tree -------------------------------------------------

void Check(bool ok, const std::string& what) {
  ASSERT_TRUE(ok) << what << ": " << std::strerror(errno);
}

int OpenDir(int parent, const std::string& name) {
  return ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

void MakeDir(int parent, const std::string& name, mode_t mode = 0755) {
  Check(::mkdirat(parent, name.c_str(), mode) == 0, "mkdir " + name);
  Check(::fchmodat(parent, name.c_str(), mode, 0) == 0, "chmod " + name);
}

void MakeFile(int parent, const std::string& name, const std::string& data, mode_t mode = 0644) {
  int fd = ::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  Check(fd >= 0, "create " + name);
  Check(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()),
        "write " + name);
  Check(::fchmod(fd, mode) == 0, "chmod " + name);  // past the umask, with suid bits
  ::close(fd);
}

void SetTime(int parent, const std::string& name, int64_t sec, long nsec) {
  timespec ts[2] = {{static_cast<time_t>(sec), nsec}, {static_cast<time_t>(sec), nsec}};
  Check(::utimensat(parent, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0, "utimensat " + name);
}

void SetXattr(int parent, const std::string& name, const std::string& key,
              const std::string& value) {
  int fd = ::openat(parent, name.c_str(), O_RDONLY | O_CLOEXEC);
  Check(fd >= 0, "open " + name);
  Check(::fsetxattr(fd, key.c_str(), value.data(), value.size(), 0) == 0,
        "setxattr " + key + " on " + name);
  ::close(fd);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// The tree. `ustar` leaves out what the ustar format cannot hold (names
// over 100 bytes without a '/' to split at, paths over 255, ids over
// 2097151, times before 1970, link targets over 100 bytes); GNU tar would
// skip those members with an error.
void BuildTree(const std::string& root_path, bool ustar) {
  int root = ::open(root_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  Check(root >= 0, "open " + root_path);

  MakeFile(root, "a", "x");
  MakeFile(root, std::string(100, 'n'), "hundred");
  if (!ustar) {
    MakeFile(root, std::string(101, 'o'), "hundred and one");
    MakeFile(root, std::string(255, 'p'), "two five five");
    // Deep: 20 directories of 220 bytes: a path of ~4.4 KB, past PATH_MAX.
    int dir = ::dup(root);
    MakeDir(dir, "deep");
    int next = OpenDir(dir, "deep");
    ::close(dir);
    dir = next;
    for (int i = 0; i < 20; ++i) {
      std::string name = std::string(218, static_cast<char>('a' + i)) + std::to_string(i % 10);
      MakeDir(dir, name);
      next = OpenDir(dir, name);
      Check(next >= 0, "open deep dir");
      ::close(dir);
      dir = next;
    }
    MakeFile(dir, "leaf", "at the bottom");
    ::close(dir);
  }
  MakeFile(root, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac.txt", "utf-8");

  MakeDir(root, "sizes");
  int sizes = OpenDir(root, "sizes");
  uint32_t seed = 1;
  for (size_t size : {0, 1, 511, 512, 513, 4095, 4096, 4097, 8191, 8192, 8193, 12287, 12288, 12289,
                      (1 << 20) + 3}) {
    MakeFile(sizes, "s" + std::to_string(size), RandomBytes(size, seed++));
  }
  ::close(sizes);

  MakeDir(root, "modes");
  int modes = OpenDir(root, "modes");
  MakeFile(modes, "setuid", "u", 04755);
  MakeFile(modes, "setgid", "g", 02755);
  MakeFile(modes, "both", "b", 06711);
  MakeFile(modes, "none", "0", 0);
  MakeDir(modes, "sticky", 01777);
  MakeDir(modes, "sgid-dir", 02775);
  ::close(modes);

  MakeDir(root, "owners");
  int owners = OpenDir(root, "owners");
  MakeFile(owners, "big", "b");
  Check(::fchownat(owners, "big", 70000, 80000, AT_SYMLINK_NOFOLLOW) == 0, "chown big");
  if (!ustar) {
    MakeFile(owners, "bigger", "b");
    Check(::fchownat(owners, "bigger", 3000000, 3000001, AT_SYMLINK_NOFOLLOW) == 0, "chown bigger");
  }
  ::close(owners);

  MakeDir(root, "links");
  int links = OpenDir(root, "links");
  MakeFile(links, "target", "hardlinked content");
  MakeDir(links, "other");
  Check(::linkat(links, "target", links, "other/second-name", 0) == 0, "link");
  Check(::linkat(links, "target", links, "third-name", 0) == 0, "link");
  Check(::symlinkat("nowhere/else", links, "dangling") == 0, "symlink");
  Check(::symlinkat("/etc/passwd", links, "absolute") == 0, "symlink");
  Check(::symlinkat("../sizes/s1", links, "relative") == 0, "symlink");
  if (!ustar) Check(::symlinkat(std::string(150, 't').c_str(), links, "long") == 0, "symlink");
  Check(::fchownat(links, "absolute", 1234, 5678, AT_SYMLINK_NOFOLLOW) == 0, "lchown");
  ::close(links);

  MakeDir(root, "dev");
  int dev = OpenDir(root, "dev");
  Check(::mknodat(dev, "null", S_IFCHR | 0666, makedev(1, 3)) == 0, "mknod");
  Check(::mknodat(dev, "loop200", S_IFBLK | 0660, makedev(7, 200)) == 0, "mknod");
  Check(::mknodat(dev, "bignums", S_IFCHR | 0600, makedev(300, 70000)) == 0, "mknod");
  Check(::mknodat(dev, "fifo", S_IFIFO | 0640, 0) == 0, "mkfifo");
  ::close(dev);

  MakeDir(root, "xattrs");
  int xattrs = OpenDir(root, "xattrs");
  MakeFile(xattrs, "file", "with xattrs");
  SetXattr(xattrs, "file", "user.comment", "hello");
  SetXattr(xattrs, "file", "user.empty", "");
  SetXattr(xattrs, "file", "user.binary", std::string("\0\x01\xff=\n", 5));
  SetXattr(xattrs, "file", "trusted.evs", "trusted value");
  SetXattr(xattrs, "file", "security.evs", "security value");
  // VFS_CAP_REVISION_2 with CAP_NET_RAW permitted and effective
  // (linux/capability.h): binary, with zero bytes.
  std::string cap(
      "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  SetXattr(xattrs, "file", "security.capability", cap);
  MakeDir(xattrs, "dir");
  SetXattr(xattrs, "dir", "user.on-a-dir", "d");
  ::close(xattrs);

  // OCI whiteouts as a layer tar carries them: ordinary empty files.
  MakeDir(root, "wh");
  int wh = OpenDir(root, "wh");
  MakeFile(wh, ".wh.gone", "");
  Check(::fchownat(wh, ".wh.gone", 11, 12, AT_SYMLINK_NOFOLLOW) == 0, "chown whiteout");
  MakeDir(wh, "opq");
  MakeFile(wh, "opq/.wh..wh..opq", "");
  MakeFile(wh, "opq/kept", "k");
  ::close(wh);
  MakeDir(root, "empty-dir");

  // Times last: adding children changes a directory's mtime.
  MakeDir(root, "times");
  int times = OpenDir(root, "times");
  MakeFile(times, "y2100", "f");
  MakeFile(times, "y2038", "f");
  MakeFile(times, "epoch", "f");
  SetTime(times, "y2100", 4102444800, 500000000);
  SetTime(times, "y2038", 2147483648, 0);
  SetTime(times, "epoch", 0, 0);
  if (!ustar) {
    MakeFile(times, "y1969", "f");
    SetTime(times, "y1969", -100001, 750000000);  // -100000.25 s
    Check(::symlinkat("y1969", times, "old-link") == 0, "symlink");
    SetTime(times, "old-link", -5000000000, 0);
  }
  SetTime(times, ".", 1600000000, 123456789);
  ::close(times);
  ::close(root);
}

// ---- reading the tree back ----------------------------------------------

void Walk(int dirfd, const std::string& prefix, std::map<std::string, Expected>* out) {
  int fd = ::dup(dirfd);
  DIR* d = ::fdopendir(fd);
  ASSERT_NE(d, nullptr);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  for (const std::string& name : names) {
    struct stat st {};
    ASSERT_EQ(::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0);
    std::string path = prefix.empty() ? name : prefix + "/" + name;
    Expected e;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime = st.st_mtim.tv_sec;
    e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    e.ino = st.st_ino;
    e.nlink = st.st_nlink;
    int child = -1;
    switch (st.st_mode & S_IFMT) {
      case S_IFREG: {
        e.type = EntryType::kRegular;
        e.size = static_cast<uint64_t>(st.st_size);
        child = ::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC);
        e.content.resize(e.size);
        ASSERT_EQ(::pread(child, e.content.data(), e.size, 0), static_cast<ssize_t>(e.size));
        break;
      }
      case S_IFDIR:
        e.type = EntryType::kDirectory;
        child = OpenDir(dirfd, name);
        break;
      case S_IFLNK: {
        e.type = EntryType::kSymlink;
        char buf[4096];
        ssize_t n = ::readlinkat(dirfd, name.c_str(), buf, sizeof buf);
        ASSERT_GT(n, 0);
        e.link_target.assign(buf, static_cast<size_t>(n));
        break;
      }
      case S_IFCHR:
      case S_IFBLK:
        e.type = S_ISCHR(st.st_mode) ? EntryType::kCharDevice : EntryType::kBlockDevice;
        e.major = major(st.st_rdev);
        e.minor = minor(st.st_rdev);
        break;
      case S_IFIFO:
        e.type = EntryType::kFifo;
        break;
    }
    if (child >= 0) {
      char names_buf[4096];
      ssize_t n = ::flistxattr(child, names_buf, sizeof names_buf);
      for (ssize_t i = 0; i < n;) {
        std::string key(names_buf + i);
        i += static_cast<ssize_t>(key.size()) + 1;
        std::string value(256, '\0');
        ssize_t v = ::fgetxattr(child, key.c_str(), value.data(), value.size());
        ASSERT_GE(v, 0);
        value.resize(static_cast<size_t>(v));
        e.xattrs.emplace_back(key, value);
      }
      std::sort(e.xattrs.begin(), e.xattrs.end());
    }
    (*out)[path] = e;
    if (e.type == EntryType::kDirectory) Walk(child, path, out);
    if (child >= 0) ::close(child);
  }
}

std::map<std::string, Expected> ReadTree(const std::string& root_path) {
  std::map<std::string, Expected> out;
  int root = ::open(root_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st {};
  ::fstat(root, &st);
  Expected r;
  r.type = EntryType::kDirectory;
  r.mode = st.st_mode & 07777;
  r.mtime = st.st_mtim.tv_sec;
  r.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  r.ino = st.st_ino;
  out[""] = r;
  Walk(root, "", &out);
  ::close(root);
  // The layer view of the whiteout files (OCI image-spec "Whiteouts").
  Expected gone = out.at("wh/.wh.gone");
  out.erase("wh/.wh.gone");
  gone.type = EntryType::kCharDevice;
  gone.mode = 0;
  gone.size = 0;
  gone.content.clear();
  gone.xattrs.clear();
  out["wh/gone"] = gone;
  Expected opq = out.at("wh/opq/.wh..wh..opq");
  out.erase("wh/opq/.wh..wh..opq");
  opq.type = EntryType::kOpaqueMarker;
  out["wh/opq (opaque)"] = opq;
  return out;
}

// ---- the test -------------------------------------------------------------

struct Archive {
  std::string format;       // ustar, gnu, pax
  std::string compression;  // none, gzip, zstd, gzip-multi, zstd-multi
};

class StringSink : public ByteSink {
 public:
  Status Write(const void* data, size_t n) override {
    bytes.append(static_cast<const char*>(data), n);
    return OkStatus();
  }
  std::string bytes;
};

class GnuTar : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    EVS_REQUIRE_ROOT();
    EVS_REQUIRE_PROGRAM("tar");
    EVS_REQUIRE_PROGRAM("gzip");
    EVS_REQUIRE_PROGRAM("zstd");
  }
};

TEST_P(GnuTar, EveryFieldMatchesWhatWasPutIn) {
  const std::string format = GetParam();
  const bool pax = format == "pax";
  TempDir dir("evs-gnu-tar");
  std::string tree = dir.Join("tree");
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  BuildTree(tree, format == "ustar");
  if (HasFatalFailure()) return;
  std::map<std::string, Expected> expected = ReadTree(tree);
  // The tree has what it claims; otherwise the comparisons below prove little.
  ASSERT_EQ(expected.at("xattrs/file").xattrs.size(), 6u);
  ASSERT_EQ(expected.at("links/target").nlink, 3u);
  ASSERT_EQ(expected.at("dev/bignums").minor, 70000u);
  ASSERT_EQ(expected.at("modes/both").mode, 06711u);
  ASSERT_EQ(expected.at("times/y2100").mtime, 4102444800);
  if (format != "ustar") {
    ASSERT_EQ(expected.at("times/y1969").mtime, -100001);
    ASSERT_EQ(expected.at("owners/bigger").uid, 3000000u);
    size_t longest = 0;
    for (const auto& [path, e] : expected) longest = std::max(longest, path.size());
    ASSERT_GT(longest, 4096u);
  }

  std::string tar_path = dir.Join("layer.tar");
  std::string xattr_flags = pax ? "--xattrs --xattrs-include='*'" : "";
  ShOk("tar --format=" + format + " " + xattr_flags + " -C '" + tree + "' -cf '" + tar_path +
       "' .");
  std::string tar = ReadFileOrDie(tar_path);
  ASSERT_FALSE(tar.empty());

  // GNU tar's own listing: the members we must see, in order.
  std::vector<std::string> listed;
  {
    std::string out = ShOk("tar -tf '" + tar_path + "' | tr '\\n' '\\0'");
    for (size_t pos = 0; pos < out.size();) {
      size_t end = out.find('\0', pos);
      listed.push_back(out.substr(pos, end - pos));
      pos = end + 1;
    }
  }

  size_t third = tar.size() / 3;
  std::vector<std::pair<std::string, std::string>> blobs = {
      {"none", tar},
      {"gzip", ShOk("gzip -c '" + tar_path + "'")},
      {"zstd", ShOk("zstd -q -c '" + tar_path + "'")},
      {"gzip-multi", ShOk("(head -c " + std::to_string(third) + " '" + tar_path +
                          "' | gzip -1; tail -c +" + std::to_string(third + 1) + " '" + tar_path +
                          "' | head -c " + std::to_string(third) + " | gzip -9; tail -c +" +
                          std::to_string(2 * third + 1) + " '" + tar_path + "' | gzip)")},
      {"zstd-multi",
       ShOk("(head -c " + std::to_string(third) + " '" + tar_path + "' | zstd -q -1; tail -c +" +
            std::to_string(third + 1) + " '" + tar_path + "' | zstd -q -19)")},
  };

  for (const auto& [compression, blob] : blobs) {
    SCOPED_TRACE(format + "/" + compression);
    StringSource source(blob);
    auto stream = LayerStream::Open(&source, {.input_name = format + "/" + compression});
    ASSERT_TRUE(stream.ok());
    StringSink tee;
    LayerReader reader(stream->get(), {.input_name = format + "/" + compression, .tee = &tee});

    std::map<std::string, const Expected*> seen_inode;  // first name of each hardlinked inode
    std::set<std::string> seen;
    size_t members = 0;
    for (;;) {
      auto next = reader.Next();
      ASSERT_TRUE(next.ok()) << next.status().ToString();
      if (*next == nullptr) break;
      const LayerEntry& e = **next;
      ++members;
      std::string key = e.type == EntryType::kOpaqueMarker ? e.path + " (opaque)" : e.path;
      SCOPED_TRACE("entry \"" + key + "\"");
      ASSERT_TRUE(expected.count(key)) << "not in the tree";
      EXPECT_TRUE(seen.insert(key).second) << "seen twice";
      const Expected& x = expected.at(key);

      // Offsets: the header sits right before the data, both block-aligned.
      EXPECT_EQ(e.data_offset, e.header_offset + 512);
      EXPECT_EQ(e.header_offset % 512, 0u);

      std::string data;
      for (;;) {
        auto c = reader.data()->ReadChunk(64 << 10);
        ASSERT_TRUE(c.ok()) << c.status().ToString();
        if (c->empty()) break;
        data.append(reinterpret_cast<const char*>(c->data()), c->size());
      }

      if (e.type == EntryType::kOpaqueMarker) continue;
      EXPECT_EQ(e.uid, x.uid);
      EXPECT_EQ(e.gid, x.gid);
      EXPECT_EQ(e.mtime, x.mtime);
      EXPECT_EQ(e.mtime_nsec, pax ? x.mtime_nsec : 0u);
      EXPECT_EQ(e.xattrs, pax ? x.xattrs : decltype(x.xattrs)());

      if (x.type == EntryType::kRegular && x.nlink > 1) {
        // Hardlinks: the first name carries the data, later ones name it.
        auto first = seen_inode.find(std::to_string(x.ino));
        if (first == seen_inode.end()) {
          seen_inode[std::to_string(x.ino)] = &x;
          EXPECT_EQ(e.type, EntryType::kRegular);
        } else {
          EXPECT_EQ(e.type, EntryType::kHardlink);
          ASSERT_TRUE(expected.count(e.link_target)) << e.link_target;
          EXPECT_EQ(expected.at(e.link_target).ino, x.ino);
          EXPECT_TRUE(seen.count(e.link_target)) << "hardlink to a later entry";
          EXPECT_EQ(e.size, 0u);
          EXPECT_EQ(data, "");
          EXPECT_EQ(e.mode, x.mode);
          continue;
        }
      }
      EXPECT_EQ(e.type, x.type);
      EXPECT_EQ(e.mode, x.mode);
      switch (x.type) {
        case EntryType::kRegular:
          EXPECT_EQ(e.size, x.size);
          EXPECT_TRUE(data == x.content) << "content differs";
          // Tar-index mode maps the file onto the tar: the bytes are there.
          EXPECT_TRUE(tar.compare(e.data_offset, e.size, x.content) == 0);
          break;
        case EntryType::kSymlink:
          EXPECT_EQ(e.link_target, x.link_target);
          break;
        case EntryType::kCharDevice:
        case EntryType::kBlockDevice:
          EXPECT_EQ(e.rdev_major, x.major);
          EXPECT_EQ(e.rdev_minor, x.minor);
          break;
        default:
          EXPECT_EQ(e.size, 0u);
          break;
      }
    }
    EXPECT_EQ(seen.size(), expected.size()) << "entries of the tree missing from the archive";
    EXPECT_EQ(members, listed.size()) << "GNU tar lists a different number of members";
    EXPECT_TRUE(tee.bytes == tar) << "the tee did not see the tar byte for byte";
    EXPECT_EQ((*stream)->diff_id(), Digest::Sha256Of(tar));
    EXPECT_EQ((*stream)->blob_digest(), Digest::Sha256Of(blob));
    EXPECT_EQ((*stream)->compression(), compression == "none"             ? Compression::kNone
                                        : compression.starts_with("gzip") ? Compression::kGzip
                                                                          : Compression::kZstd);
  }

  // The raw names, as TarReader reports them, are GNU tar's names.
  StringSource source(tar);
  TarReader raw(&source, {});
  std::vector<std::string> names;
  for (;;) {
    auto h = raw.Next();
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    if (*h == nullptr) break;
    names.push_back((*h)->path);
  }
  EXPECT_EQ(names, listed);
}

INSTANTIATE_TEST_SUITE_P(Formats, GnuTar, ::testing::Values("ustar", "gnu", "pax"));

}  // namespace
}  // namespace evs::tar
