#include "tree_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>

#include "evs/common/digest.h"
#include "evs/common/fd.h"

namespace evs::testing {
namespace {

// Runs fn(dirfd, name) for `rel` below `root`, opening the parents one
// component at a time (paths may exceed PATH_MAX).
void At(const std::string& root, const std::string& rel,
        const std::function<void(int dirfd, const char* name)>& fn) {
  int dir = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0) << "open " << root << ": " << strerror(errno);
  size_t pos = 0;
  for (;;) {
    size_t slash = rel.find('/', pos);
    if (slash == std::string::npos) break;
    std::string comp = rel.substr(pos, slash - pos);
    int next = ::openat(dir, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    ::close(dir);
    ASSERT_GE(next, 0) << "open " << rel.substr(0, slash) << ": " << strerror(errno);
    dir = next;
    pos = slash + 1;
  }
  fn(dir, rel.c_str() + pos);
  ::close(dir);
}

struct Builder {
  std::string root;
  int64_t next_mtime = 1600000000;
  // (path, mtime) in creation order; applied in reverse at the end so that
  // creating children does not move a directory's mtime.
  std::vector<std::pair<std::string, int64_t>> times;

  void Time(const std::string& rel, int64_t mtime) { times.emplace_back(rel, mtime); }
  // Overrides the mtime an entry was given when it was made.
  void SetTime(const std::string& rel, int64_t mtime) {
    for (auto& [path, t] : times)
      if (path == rel) t = mtime;
  }
  int64_t NextTime() { return next_mtime += 3600; }

  void Dir(const std::string& rel, mode_t mode = 0755) {
    At(root, rel, [&](int d, const char* n) {
      ASSERT_EQ(::mkdirat(d, n, 0700), 0) << rel << ": " << strerror(errno);
      ASSERT_EQ(::fchmodat(d, n, mode, 0), 0) << rel;
    });
    Time(rel, NextTime());
  }

  void File(const std::string& rel, const std::string& data, mode_t mode = 0644) {
    At(root, rel, [&](int d, const char* n) {
      int fd = ::openat(d, n, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      ASSERT_GE(fd, 0) << rel << ": " << strerror(errno);
      ASSERT_TRUE(WriteAll(fd, data.data(), data.size(), rel).ok());
      ASSERT_EQ(::fchmod(fd, mode), 0);
      ::close(fd);
    });
    Time(rel, NextTime());
  }

  void Sized(const std::string& rel, uint64_t size, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string data(size, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    File(rel, data);
  }

  void Symlink(const std::string& rel, const std::string& target) {
    At(root, rel, [&](int d, const char* n) {
      ASSERT_EQ(::symlinkat(target.c_str(), d, n), 0) << rel << ": " << strerror(errno);
    });
    Time(rel, NextTime());
  }

  void Hardlink(const std::string& rel, const std::string& existing) {
    ASSERT_EQ(::link((root + "/" + existing).c_str(), (root + "/" + rel).c_str()), 0)
        << rel << ": " << strerror(errno);
  }

  void Node(const std::string& rel, mode_t mode, dev_t dev) {
    At(root, rel, [&](int d, const char* n) {
      ASSERT_EQ(::mknodat(d, n, mode, dev), 0) << rel << ": " << strerror(errno);
      ASSERT_EQ(::fchmodat(d, n, mode & 07777, 0), 0) << rel;
    });
    Time(rel, NextTime());
  }

  void Owner(const std::string& rel, uid_t uid, gid_t gid) {
    At(root, rel, [&](int d, const char* n) {
      ASSERT_EQ(::fchownat(d, n, uid, gid, AT_SYMLINK_NOFOLLOW), 0)
          << rel << ": " << strerror(errno);
    });
  }

  void Mode(const std::string& rel, mode_t mode) {
    // After chown, which clears setuid/setgid.
    At(root, rel, [&](int d, const char* n) { ASSERT_EQ(::fchmodat(d, n, mode, 0), 0) << rel; });
  }

  void Xattr(const std::string& rel, const std::string& name, const std::string& value) {
    At(root, rel, [&](int d, const char* n) {
      std::string p = "/proc/self/fd/" + std::to_string(d) + "/" + n;
      ASSERT_EQ(::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0), 0)
          << rel << " " << name << ": " << strerror(errno);
    });
  }

  void Socket(const std::string& rel) {
    At(root, rel, [&](int d, const char* n) {
      int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::string p = "/proc/self/fd/" + std::to_string(d) + "/" + n;
      ASSERT_LT(p.size(), sizeof addr.sun_path);
      std::memcpy(addr.sun_path, p.c_str(), p.size());
      ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
          << rel << ": " << strerror(errno);
      ::close(s);
    });
    Time(rel, NextTime());
  }

  void ApplyTimes() {
    for (auto it = times.rbegin(); it != times.rend(); ++it) {
      At(root, it->first, [&](int d, const char* n) {
        timespec ts[2] = {{it->second, 0}, {it->second, 0}};
        if (*n == '\0') {  // the root itself
          ASSERT_EQ(::futimens(d, ts), 0) << strerror(errno);
          return;
        }
        ASSERT_EQ(::utimensat(d, n, ts, AT_SYMLINK_NOFOLLOW), 0)
            << it->first << ": " << strerror(errno);
      });
    }
  }
};

std::string Sha256Hex(int dirfd, const char* name) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return "open failed";
  Hasher h(HashAlgorithm::kSha256);
  static std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n <= 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return HexEncode(h.FinishBytes());
}

std::vector<std::pair<std::string, std::string>> ListXattrs(const std::string& proc_path) {
  std::vector<std::pair<std::string, std::string>> out;
  static std::vector<char> names(1 << 16), value(1 << 16);
  ssize_t n = ::llistxattr(proc_path.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  for (ssize_t pos = 0; pos < n;) {
    std::string name(names.data() + pos);
    pos += static_cast<ssize_t>(name.size()) + 1;
    ssize_t v = ::lgetxattr(proc_path.c_str(), name.c_str(), value.data(), value.size());
    out.emplace_back(name, v >= 0 ? std::string(value.data(), static_cast<size_t>(v)) : "<error>");
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void WriteRandomFile(const std::string& path, uint64_t size, uint32_t seed) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  std::mt19937 rng(seed);
  std::vector<uint32_t> buf(1 << 18);
  while (size > 0) {
    for (auto& w : buf) w = rng();
    size_t n = static_cast<size_t>(std::min<uint64_t>(size, buf.size() * 4));
    ASSERT_TRUE(WriteAll(fd, buf.data(), n, path).ok());
    size -= n;
  }
  ::close(fd);
}

void BuildEdgeTree(const std::string& root, const TreeFeatures& f) {
  Builder b{root};
  b.Time("", 1500000000);
  b.File("a", "x");                          // 1-byte name
  b.File(std::string(100, 'n'), "hundred");  // 100-byte name
  if (f.long_names) {
    b.File(std::string(101, 'm'), "hundred and one");
    b.File(std::string(255, 'L'), "two hundred fifty-five");
    b.Symlink("longlink", std::string(300, 't'));
  }
  b.File("h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83 \xe6\x97\xa5\xe6\x9c\xac", "utf-8");
  b.Dir("\xd0\xba\xd0\xb0\xd1\x82");
  b.File("\xd0\xba\xd0\xb0\xd1\x82/\xd1\x84", "cyrillic");
  b.File("-dash", "sorts before the dot");
  b.File(".hidden", "sorts between . and ..");

  b.Dir("sizes");
  uint32_t seed = 1;
  for (uint64_t s : {0, 1, 2000, 4000, 4095, 4096, 4097, 8191, 8192, 8193, 12287, 12288, 12289})
    b.Sized("sizes/s" + std::to_string(s), s, seed++);

  b.Dir("links");
  b.Dir("links/sub");
  b.Sized("links/hard1", 5000, 77);
  b.Hardlink("links/sub/hard2", "links/hard1");
  b.Hardlink("hard3", "links/hard1");
  b.File("links/e1", "");
  b.Hardlink("links/e2", "links/e1");

  b.Dir("symlinks");
  b.Symlink("symlinks/rel", "../a");
  b.Symlink("symlinks/dangling", "does/not/exist");
  b.Symlink("symlinks/absolute", "/etc/passwd");
  b.Symlink("symlinks/dirlink", "../sizes");

  b.Dir("modes");
  b.File("modes/suid", "s", 04755);
  b.File("modes/sgid", "g", 02755);
  b.Dir("modes/sticky", 01777);
  b.File("modes/none", "0", 0);
  b.File("modes/all", "7", 07777);
  b.Dir("modes/private", 0700);
  b.File("modes/private/f", "p");

  b.Dir("owners");
  b.File("owners/big", "b");
  b.Owner("owners/big", 100000, 200000);
  b.File("owners/edge", "e");
  b.Owner("owners/edge", 65535, 65536);
  b.Dir("owners/dir");
  b.Owner("owners/dir", 70000, 70001);
  b.Symlink("owners/link", "big");
  b.Owner("owners/link", 123456, 654321);
  b.File("owners/suid", "s");
  b.Owner("owners/suid", 1000, 1000);
  b.Mode("owners/suid", 06755);

  b.Dir("times");
  b.File("times/future", "2106");
  b.File("times/epoch", "1970");
  b.Dir("times/olddir");
  b.SetTime("times/future", (int64_t{1} << 32) + 12345);
  b.SetTime("times/epoch", 0);
  b.SetTime("times/olddir", 1);
  if (f.negative_mtime) {
    b.File("times/past", "1966");
    b.SetTime("times/past", -100000000);
  }

  if (f.xattrs) {
    b.Dir("xattrs");
    b.File("xattrs/plain", "p");
    b.Xattr("xattrs/plain", "user.foo", "bar");
    b.Xattr("xattrs/plain", "user.binary", std::string("\x00\x01\xff", 3));
    b.Xattr("xattrs", "trusted.t", "on a directory");
    // security.capability on several files: stored once, shared (VFS cap v2:
    // cap_net_bind_service permitted and effective).
    const std::string cap(
        "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
    for (int i = 1; i <= 5; ++i) {
      b.File("xattrs/cap" + std::to_string(i), "c");
      b.Xattr("xattrs/cap" + std::to_string(i), "security.capability", cap);
    }
    b.Sized("xattrs/tail_not_inline", 4000, 99);
    b.Xattr("xattrs/tail_not_inline", "user.big", std::string(3000, 'v'));
    b.File("xattrs/multi", "m");
    for (int i = 0; i < 3; ++i)
      b.Xattr("xattrs/multi", "user.m" + std::to_string(i), std::string(i + 1, 'q'));
  }

  if (f.devices) {
    b.Dir("devs");
    b.Node("devs/null", S_IFCHR | 0666, makedev(1, 3));
    b.Node("devs/loop", S_IFBLK | 0660, makedev(7, 0));
    b.Node("devs/big", S_IFCHR | 0600, makedev(4095, 1048575));
    b.Node("devs/fifo", S_IFIFO | 0644, 0);
  }
  if (f.sockets) b.Socket("socket");

  b.Dir("wh");
  b.Dir("opq");
  b.File("opq/kept", "k");
  if (f.overlay) {
    b.Node("wh/gone", S_IFCHR | 0, makedev(0, 0));
    b.Xattr("opq", "trusted.overlay.opaque", "y");
  } else {
    b.File("wh/.wh.gone", "");
    b.File("opq/.wh..wh..opq", "");
  }
  if (f.xattr_on_symlink) b.Xattr("symlinks/rel", "trusted.sym", "1");

  if (f.deep_paths) {
    std::string path = "deep";
    b.Dir(path);
    for (int i = 0; i < 21; ++i) {
      path += "/" + std::string(200, static_cast<char>('a' + i));
      b.Dir(path);
    }
    b.File(path + "/bottom", "deep down");
  }
  b.ApplyTimes();
}

void BuildWideDirectory(const std::string& dir, int count) {
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(d, 0);
  for (int i = 0; i < count; ++i) {
    std::string name = "entry-" + std::to_string(i) + std::string(i % 37, 'x');
    int fd = ::openat(d, name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << name;
    ::close(fd);
  }
  ::close(d);
}

namespace {

void SnapshotInto(int dirfd, const std::string& rel, TreeSnapshot* out,
                  std::map<std::pair<dev_t, ino_t>, std::vector<std::string>>* inodes) {
  int dup = ::dup(dirfd);
  DIR* d = ::fdopendir(dup);
  ASSERT_NE(d, nullptr);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = rel.empty() ? name : rel + "/" + name;
    struct stat st;
    ASSERT_EQ(::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0) << path;
    TreeEntry e;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime = st.st_mtim.tv_sec;
    e.xattrs = ListXattrs("/proc/self/fd/" + std::to_string(dirfd) + "/" + name);
    switch (st.st_mode & S_IFMT) {
      case S_IFREG:
        e.type = '-';
        e.size = static_cast<uint64_t>(st.st_size);
        e.content = st.st_size == 0 ? "empty" : Sha256Hex(dirfd, name.c_str());
        break;
      case S_IFDIR:
        e.type = 'd';
        break;
      case S_IFLNK: {
        e.type = 'l';
        std::vector<char> buf(8192);
        ssize_t n = ::readlinkat(dirfd, name.c_str(), buf.data(), buf.size());
        e.target.assign(buf.data(), n > 0 ? static_cast<size_t>(n) : 0);
        e.size = static_cast<uint64_t>(st.st_size);
        break;
      }
      case S_IFCHR:
        e.type = 'c';
        break;
      case S_IFBLK:
        e.type = 'b';
        break;
      case S_IFIFO:
        e.type = 'p';
        break;
      case S_IFSOCK:
        e.type = 's';
        break;
    }
    if (e.type == 'c' || e.type == 'b') {
      e.rdev_major = major(st.st_rdev);
      e.rdev_minor = minor(st.st_rdev);
    }
    if (e.type != 'd' && st.st_nlink > 1) (*inodes)[{st.st_dev, st.st_ino}].push_back(path);
    (*out)[path] = e;
    if (e.type == 'd') {
      int sub = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      ASSERT_GE(sub, 0) << path;
      SnapshotInto(sub, path, out, inodes);
      ::close(sub);
    }
  }
}

}  // namespace

TreeSnapshot SnapshotTree(const std::string& root) {
  TreeSnapshot out;
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << root;
  if (fd < 0) return out;
  struct stat st;
  ::fstat(fd, &st);
  TreeEntry r;
  r.type = 'd';
  r.mode = st.st_mode & 07777;
  r.uid = st.st_uid;
  r.gid = st.st_gid;
  r.mtime = st.st_mtim.tv_sec;
  r.xattrs = ListXattrs("/proc/self/fd/" + std::to_string(fd));
  out[""] = r;
  std::map<std::pair<dev_t, ino_t>, std::vector<std::string>> inodes;
  SnapshotInto(fd, "", &out, &inodes);
  ::close(fd);
  for (auto& [ino, paths] : inodes) {
    std::string first = *std::min_element(paths.begin(), paths.end());
    for (const std::string& p : paths) out[p].link_group = first;
  }
  return out;
}

TreeSnapshot ApplyWhiteouts(TreeSnapshot snapshot) {
  TreeSnapshot out;
  for (auto& [path, e] : snapshot) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (name == ".wh..wh..opq") continue;
    if (name.rfind(".wh.", 0) == 0) {
      TreeEntry w;
      w.type = 'c';
      w.mode = 0;
      w.uid = e.uid;
      w.gid = e.gid;
      w.mtime = e.mtime;
      out[(dir.empty() ? "" : dir + "/") + name.substr(4)] = w;
      continue;
    }
    out[path] = e;
  }
  for (auto& [path, e] : snapshot) {
    size_t slash = path.rfind('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (name != ".wh..wh..opq") continue;
    auto& x = out[slash == std::string::npos ? "" : path.substr(0, slash)].xattrs;
    x.emplace_back("trusted.overlay.opaque", "y");
    std::sort(x.begin(), x.end());
  }
  return out;
}

namespace {

std::string Describe(const TreeEntry& e) {
  std::ostringstream o;
  o << e.type << " mode=" << std::oct << e.mode << std::dec << " uid=" << e.uid << " gid=" << e.gid
    << " mtime=" << e.mtime;
  if (e.type != 'd') o << " size=" << e.size;
  if (!e.content.empty()) o << " sha256=" << e.content.substr(0, 12);
  if (!e.target.empty()) o << " target=" << e.target.substr(0, 40);
  if (e.type == 'c' || e.type == 'b') o << " dev=" << e.rdev_major << ":" << e.rdev_minor;
  for (auto& [k, v] : e.xattrs) o << " " << k << "=(" << v.size() << " bytes)";
  if (!e.link_group.empty()) o << " linkgroup=" << e.link_group.substr(0, 40);
  return o.str();
}

}  // namespace

std::string DiffSnapshots(const TreeSnapshot& expected, const TreeSnapshot& actual) {
  std::ostringstream o;
  int shown = 0;
  auto note = [&](const std::string& line) {
    if (shown++ < 20) o << line << "\n";
  };
  for (auto& [path, e] : expected) {
    auto it = actual.find(path);
    std::string shown_path = "\"" + path.substr(0, 120) + (path.size() > 120 ? "…" : "") + "\"";
    if (it == actual.end()) {
      note("missing " + shown_path + ": " + Describe(e));
      continue;
    }
    TreeEntry a = it->second, x = e;
    if (x.type == 'd') a.size = x.size = 0;
    if (Describe(x) != Describe(a) || x.content != a.content || x.target != a.target ||
        x.xattrs != a.xattrs || x.link_group != a.link_group)
      note("differs " + shown_path + ":\n  expected " + Describe(x) + "\n  actual   " +
           Describe(a));
  }
  for (auto& [path, e] : actual)
    if (!expected.count(path)) note("unexpected \"" + path.substr(0, 120) + "\": " + Describe(e));
  if (shown > 20) o << "… and " << shown - 20 << " more\n";
  return o.str();
}

}  // namespace evs::testing
