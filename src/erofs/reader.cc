// ErofsReader (reader.h). Follows the kernel's reading paths (fs/erofs/
// super.c, inode.c, data.c, dir.c, xattr.c) and checks, before each read,
// what the kernel checks and what it merely assumes.
#include "evs/erofs/reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "crc32c.h"
#include "xattr_name.h"

namespace evs::erofs {
namespace {

// Features the reader implements. ZERO_PADDING only concerns compressed
// data; mkfs.erofs sets it on every image.
constexpr uint32_t kKnownIncompat =
    kFeatureIncompatZeroPadding | kFeatureIncompatChunkedFile | kFeatureIncompatDeviceTable;
constexpr uint32_t kMaxSymlink = 4095;

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint8_t FileTypeOfMode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return kFtRegular;
    case S_IFDIR:
      return kFtDirectory;
    case S_IFCHR:
      return kFtCharDevice;
    case S_IFBLK:
      return kFtBlockDevice;
    case S_IFIFO:
      return kFtFifo;
    case S_IFSOCK:
      return kFtSocket;
    case S_IFLNK:
      return kFtSymlink;
    default:
      return kFtUnknown;
  }
}

}  // namespace

template <typename... Args>
Status ErofsReader::Corrupt(const Args&... args) const {
  return DataLossError(name_, ": ", args...);
}

Result<std::unique_ptr<ErofsReader>> ErofsReader::Open(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  return FromFd(std::move(fd), path);
}

Result<std::unique_ptr<ErofsReader>> ErofsReader::FromFd(UniqueFd fd, std::string name) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, StrCat("stat ", name));
  std::unique_ptr<ErofsReader> reader(new ErofsReader(std::move(fd), std::move(name)));
  EVS_RETURN_IF_ERROR(reader->ReadSuperBlock(static_cast<uint64_t>(st.st_size)));
  return reader;
}

Status ErofsReader::ReadAt(uint64_t offset, void* buf, size_t n, std::string_view what) const {
  if (offset > image_bytes_ || n > image_bytes_ - offset)
    return Corrupt(what, ": bytes [", offset, ", +", n, ") lie beyond the image end ",
                   image_bytes_);
  EVS_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_.get(), buf, n, static_cast<off_t>(offset), name_));
  if (got != n) return Corrupt(what, ": file ends at ", offset + got);
  return OkStatus();
}

Status ErofsReader::ReadSuperBlock(uint64_t file_size) {
  // §1.1: the checksum covers up to a whole block, so read 4 KiB.
  uint8_t head[4096] = {};
  EVS_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_.get(), head, sizeof head, 0, name_));
  if (got < kSuperOffset + sizeof(SuperBlock)) return Corrupt("too short for an EROFS superblock");
  const SuperBlock sb = Load<SuperBlock>(head + kSuperOffset);
  if (sb.magic != kSuperMagic)
    return Corrupt("no EROFS magic at offset 1024 (found 0x", std::hex, sb.magic, ")");
  if (sb.blkszbits < 9 || sb.blkszbits > 12)
    return Corrupt("block size 2^", static_cast<int>(sb.blkszbits), " (9..12 supported)");
  blkbits_ = sb.blkszbits;
  summary_.block_size = 1u << sb.blkszbits;
  if (sb.feature_compat & kFeatureCompatSbChksum) {
    if (got < kSuperOffset + SuperBlockChecksumLength(summary_.block_size))
      return Corrupt("too short for its superblock checksum");
    const uint32_t crc = SuperBlockChecksum(head, summary_.block_size);
    if (crc != sb.checksum)
      return Corrupt("superblock checksum 0x", std::hex, sb.checksum, " but the bytes give 0x",
                     crc);
    summary_.checksum_present = true;
  }
  if (sb.feature_incompat & ~kKnownIncompat)
    return Status(Code::kUnimplemented, StrCat(name_, ": unsupported EROFS features 0x", std::hex,
                                               sb.feature_incompat & ~kKnownIncompat));
  if (sb.dirblkbits != 0)
    return Corrupt("dirblkbits ", static_cast<int>(sb.dirblkbits), " (must be 0)");
  summary_.blocks = sb.blocks;
  summary_.inodes = sb.inos;
  summary_.root_nid = sb.root_nid;
  summary_.meta_blkaddr = sb.meta_blkaddr;
  summary_.xattr_blkaddr = sb.xattr_blkaddr;
  summary_.build_time = static_cast<int64_t>(sb.build_time);
  summary_.build_time_nsec = sb.build_time_nsec;
  summary_.feature_compat = sb.feature_compat;
  summary_.feature_incompat = sb.feature_incompat;
  std::memcpy(summary_.uuid.data(), sb.uuid, 16);
  summary_.volume_name.assign(reinterpret_cast<const char*>(sb.volume_name),
                              strnlen(reinterpret_cast<const char*>(sb.volume_name), 16));
  image_bytes_ = summary_.blocks << blkbits_;
  if (image_bytes_ > file_size)
    return Corrupt("superblock counts ", summary_.blocks, " blocks (", image_bytes_,
                   " bytes) but the file has ", file_size, " bytes");

  if (sb.feature_incompat & kFeatureIncompatDeviceTable) {
    uint64_t pos = uint64_t{sb.devt_slotoff} * kDeviceSlotSize;
    for (uint32_t i = 0; i < sb.extra_devices; ++i, pos += kDeviceSlotSize) {
      DeviceSlot slot;
      EVS_RETURN_IF_ERROR(ReadAt(pos, &slot, sizeof slot, StrCat("device table slot ", i)));
      summary_.devices.push_back({slot.blocks, slot.uniaddr});
    }
  }
  return OkStatus();
}

Result<Inode> ErofsReader::ReadInode(uint64_t nid) const {
  const uint64_t meta = summary_.meta_blkaddr << blkbits_;
  if (meta > image_bytes_ || nid > (image_bytes_ - meta) / kInodeSlotSize)
    return Corrupt("nid ", nid, " lies beyond the image");
  Inode inode;
  inode.nid = nid;
  inode.offset = meta + nid * kInodeSlotSize;
  const std::string what = StrCat("inode ", nid);
  uint8_t raw[sizeof(InodeExtended)];
  EVS_RETURN_IF_ERROR(ReadAt(inode.offset, raw, sizeof(InodeCompact), what));
  const uint16_t format = Load<uint16_t>(raw);
  if (format & ~kInodeFormatAllOld)
    return Status(Code::kUnimplemented,
                  StrCat(name_, ": inode ", nid, ": i_format 0x", std::hex, format));
  inode.data_layout = static_cast<uint8_t>((format >> 1) & 7);
  if (inode.data_layout > kChunkBased)
    return Corrupt(what, ": data layout ", static_cast<int>(inode.data_layout));
  uint16_t icount;
  if ((format & 1) == kInodeLayoutCompact) {
    const InodeCompact d = Load<InodeCompact>(raw);
    inode.compact = true;
    icount = d.i_xattr_icount;
    inode.mode = d.i_mode;
    inode.nlink = d.i_nlink;
    inode.size = d.i_size;
    inode.raw_u = d.i_u;
    inode.uid = d.i_uid;
    inode.gid = d.i_gid;
    inode.mtime = summary_.build_time;
    inode.mtime_nsec = summary_.build_time_nsec;
  } else {
    EVS_RETURN_IF_ERROR(ReadAt(inode.offset, raw, sizeof(InodeExtended), what));
    const InodeExtended d = Load<InodeExtended>(raw);
    icount = d.i_xattr_icount;
    inode.mode = d.i_mode;
    inode.nlink = d.i_nlink;
    inode.size = d.i_size;
    inode.raw_u = d.i_u;
    inode.uid = d.i_uid;
    inode.gid = d.i_gid;
    inode.mtime = static_cast<int64_t>(d.i_mtime);
    inode.mtime_nsec = d.i_mtime_nsec;
  }
  inode.xattr_size = XattrIbodySize(icount);
  switch (inode.mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
      break;
    case S_IFCHR:
    case S_IFBLK:
      inode.rdev_major = DevMajor(inode.raw_u);
      inode.rdev_minor = DevMinor(inode.raw_u);
      break;
    case S_IFIFO:
    case S_IFSOCK:
      break;
    default:
      return Corrupt(what, ": bogus mode 0", std::oct, inode.mode);
  }
  if (inode.data_layout == kChunkBased) {
    if (inode.raw_u & ~uint32_t{0x7F})
      return Corrupt(what, ": chunk format 0x", std::hex, inode.raw_u);
    if (inode.raw_u & kChunkFormat48Bit)
      return Status(Code::kUnimplemented, StrCat(name_, ": inode ", nid, ": 48-bit chunk indexes"));
  }
  return inode;
}

uint64_t ErofsReader::InlineDataOffset(const Inode& inode) const {
  return inode.offset + inode.inode_size() + inode.xattr_size;
}

Result<size_t> ErofsReader::ReadChunked(const Inode& inode, uint64_t offset, void* buf,
                                        size_t n) const {
  // §1.3 CHUNK_BASED.
  const uint32_t chunkbits = blkbits_ + (inode.raw_u & kChunkFormatBlkbitsMask);
  const bool indexes = inode.raw_u & kChunkFormatIndexes;
  const uint64_t unit = indexes ? sizeof(ChunkIndex) : sizeof(uint32_t);
  const uint64_t chunknr = offset >> chunkbits;
  const uint64_t in_chunk = offset - (chunknr << chunkbits);
  const uint64_t base = (InlineDataOffset(inode) + unit - 1) / unit * unit;
  if (chunknr > image_bytes_ / unit)
    return Corrupt("inode ", inode.nid, ": chunk ", chunknr, " beyond the image");
  const std::string what = StrCat("inode ", inode.nid, " chunk ", chunknr);
  uint32_t blkaddr;
  uint16_t device_id = 0;
  if (indexes) {
    ChunkIndex idx;
    EVS_RETURN_IF_ERROR(ReadAt(base + unit * chunknr, &idx, sizeof idx, what));
    if (idx.startblk_hi != 0) return Corrupt(what, ": startblk_hi set without 48-bit layout");
    blkaddr = idx.startblk_lo;
    device_id = idx.device_id;
  } else {
    EVS_RETURN_IF_ERROR(ReadAt(base + unit * chunknr, &blkaddr, sizeof blkaddr, what));
  }
  const uint64_t chunk_left = (uint64_t{1} << chunkbits) - in_chunk;
  n = static_cast<size_t>(std::min<uint64_t>(n, chunk_left));
  if (blkaddr == kNullAddr) {
    std::memset(buf, 0, n);
    return n;
  }
  uint64_t block = blkaddr;
  // The kernel masks the device id with roundup_pow_of_two(devices + 1) − 1
  // and, with no device= given (flatdev), adds the slot's uniaddr.
  uint32_t mask = 1;
  while (mask < summary_.devices.size() + 1) mask <<= 1;
  device_id &= static_cast<uint16_t>(mask - 1);
  if (device_id > 0) {
    if (device_id > summary_.devices.size())
      return Corrupt(what, ": device ", device_id, " not in the table");
    block += summary_.devices[device_id - 1].uniaddr;
  }
  EVS_RETURN_IF_ERROR(ReadAt((block << blkbits_) + in_chunk, buf, n, what));
  return n;
}

Result<size_t> ErofsReader::ReadData(const Inode& inode, uint64_t offset, void* buf,
                                     size_t n) const {
  if (!inode.is_reg() && !inode.is_dir() && !inode.is_symlink())
    return FailedPreconditionError(name_, ": inode ", inode.nid, " has no data");
  if (offset >= inode.size) return size_t{0};
  n = static_cast<size_t>(std::min<uint64_t>(n, inode.size - offset));
  uint8_t* out = static_cast<uint8_t*>(buf);
  size_t done = 0;
  const uint64_t bs = summary_.block_size;
  while (done < n) {
    const uint64_t pos = offset + done;
    size_t k = 0;
    switch (inode.data_layout) {
      case kFlatPlain:
      case kFlatInline: {
        // FLAT_INLINE: all blocks but the last from raw_blkaddr, the last
        // one inline after the inode and its xattrs (§1.3; data.c).
        const uint64_t nblocks = inode.size / bs + (inode.size % bs != 0);
        const uint64_t plain_end =
            inode.data_layout == kFlatInline ? (nblocks - 1) * bs : inode.size;
        if (pos < plain_end) {
          if (pos > image_bytes_)
            return Corrupt("inode ", inode.nid, ": data offset ", pos, " beyond the image");
          k = static_cast<size_t>(std::min<uint64_t>(n - done, plain_end - pos));
          EVS_RETURN_IF_ERROR(ReadAt((uint64_t{inode.raw_u} << blkbits_) + pos, out + done, k,
                                     StrCat("inode ", inode.nid, " data")));
        } else {
          const uint64_t tail_len = inode.size - plain_end;
          const uint64_t at = InlineDataOffset(inode);
          if (at % bs + tail_len > bs)
            return Corrupt("inode ", inode.nid, ": inline data crosses a block boundary");
          k = static_cast<size_t>(std::min<uint64_t>(n - done, inode.size - pos));
          EVS_RETURN_IF_ERROR(ReadAt(at + (pos - plain_end), out + done, k,
                                     StrCat("inode ", inode.nid, " inline data")));
        }
        break;
      }
      case kChunkBased: {
        EVS_ASSIGN_OR_RETURN(k, ReadChunked(inode, pos, out + done, n - done));
        break;
      }
      default:
        return Status(Code::kUnimplemented,
                      StrCat(name_, ": inode ", inode.nid, ": compressed data (layout ",
                             static_cast<int>(inode.data_layout), ")"));
    }
    done += k;
  }
  return done;
}

Result<std::string> ErofsReader::ReadSymlink(const Inode& inode) const {
  if (!inode.is_symlink())
    return FailedPreconditionError(name_, ": inode ", inode.nid, " is not a symlink");
  if (inode.size == 0 || inode.size > kMaxSymlink)
    return Corrupt("inode ", inode.nid, ": symlink of ", inode.size, " bytes");
  std::string target(inode.size, '\0');
  EVS_ASSIGN_OR_RETURN(size_t got, ReadData(inode, 0, target.data(), target.size()));
  target.resize(got);
  return target;
}

Result<std::vector<DirectoryEntry>> ErofsReader::ReadDirectory(const Inode& dir) const {
  if (!dir.is_dir())
    return FailedPreconditionError(name_, ": inode ", dir.nid, " is not a directory");
  if (dir.size > image_bytes_)
    return Corrupt("directory ", dir.nid, ": size ", dir.size, " exceeds the image");
  const uint32_t bs = summary_.block_size;
  std::vector<DirectoryEntry> entries;
  std::vector<uint8_t> block(bs);
  std::string previous;
  for (uint64_t pos = 0; pos < dir.size; pos += bs) {
    const size_t maxsize = static_cast<size_t>(std::min<uint64_t>(bs, dir.size - pos));
    const std::string what = StrCat("directory ", dir.nid, " block ", pos / bs);
    EVS_ASSIGN_OR_RETURN(size_t got, ReadData(dir, pos, block.data(), maxsize));
    if (got != maxsize) return Corrupt(what, ": short read");
    if (maxsize < sizeof(Dirent))
      return Corrupt(what, ": ", maxsize, " bytes cannot hold a dirent");
    // §1.4, dir.c: nameoff of the first dirent gives the count.
    const uint32_t nameoff0 = Load<uint16_t>(block.data() + 8);
    if (nameoff0 < sizeof(Dirent) || nameoff0 >= maxsize || nameoff0 % sizeof(Dirent) != 0)
      return Corrupt(what, ": first name offset ", nameoff0);
    const size_t count = nameoff0 / sizeof(Dirent);
    for (size_t i = 0; i < count; ++i) {
      const Dirent d = Load<Dirent>(block.data() + i * sizeof(Dirent));
      const size_t start = d.nameoff;
      size_t end;
      if (i + 1 < count) {
        end = Load<uint16_t>(block.data() + (i + 1) * sizeof(Dirent) + 8);
      } else if (start <= maxsize) {
        end = start + strnlen(reinterpret_cast<const char*>(block.data()) + start, maxsize - start);
      } else {
        end = start;
      }
      if (start < nameoff0 || end < start || end > maxsize)
        return Corrupt(what, ": dirent ", i, " name at [", start, ", ", end, ")");
      if (end == start || end - start > kNameLen)
        return Corrupt(what, ": dirent ", i, " name of ", end - start, " bytes");
      std::string name(reinterpret_cast<const char*>(block.data()) + start, end - start);
      if (name.find('\0') != std::string::npos || name.find('/') != std::string::npos)
        return Corrupt(what, ": dirent ", i, " name holds NUL or '/'");
      // namei.c binary-searches: names must increase strictly, across blocks too.
      if (!entries.empty() && !(previous < name))
        return Corrupt(what, ": name \"", name, "\" out of order after \"", previous, "\"");
      previous = name;
      entries.push_back({std::move(name), d.nid, d.file_type});
    }
  }
  return entries;
}

Result<Xattrs> ErofsReader::ReadXattrs(const Inode& inode) const {
  Xattrs out;
  if (inode.xattr_size == 0) return out;
  const std::string what = StrCat("inode ", inode.nid, " xattrs");
  if (inode.xattr_size < sizeof(XattrIbodyHeader))
    return Corrupt(what, ": area of ", inode.xattr_size, " bytes");
  std::vector<uint8_t> body(inode.xattr_size);
  EVS_RETURN_IF_ERROR(ReadAt(inode.offset + inode.inode_size(), body.data(), body.size(), what));
  const XattrIbodyHeader h = Load<XattrIbodyHeader>(body.data());
  size_t pos = sizeof h + 4 * size_t{h.h_shared_count};
  if (pos > body.size())
    return Corrupt(what, ": ", static_cast<int>(h.h_shared_count), " shared ids overflow the area");

  auto decode = [&](uint8_t index, std::string_view suffix, std::string value,
                    const std::string& where) -> Status {
    if (index & kXattrLongPrefix)
      return Status(Code::kUnimplemented, StrCat(name_, ": ", where, ": long xattr name prefix"));
    auto prefix = XattrPrefixOf(index);
    if (!prefix) return Corrupt(where, ": unknown xattr name index ", static_cast<int>(index));
    out.emplace_back(StrCat(*prefix, suffix), std::move(value));
    return OkStatus();
  };

  for (size_t i = 0; i < h.h_shared_count; ++i) {
    const uint32_t id = Load<uint32_t>(body.data() + sizeof h + 4 * i);
    const std::string where = StrCat(what, ": shared xattr ", id);
    const uint64_t base = summary_.xattr_blkaddr << blkbits_;
    if (base > image_bytes_) return Corrupt(where, ": shared area beyond the image");
    const uint64_t at = base + uint64_t{id} * 4;
    XattrEntry e;
    EVS_RETURN_IF_ERROR(ReadAt(at, &e, sizeof e, where));
    std::string text(size_t{e.e_name_len} + e.e_value_size, '\0');
    EVS_RETURN_IF_ERROR(ReadAt(at + sizeof e, text.data(), text.size(), where));
    EVS_RETURN_IF_ERROR(decode(e.e_name_index, std::string_view(text).substr(0, e.e_name_len),
                               text.substr(e.e_name_len), where));
  }
  while (pos < body.size()) {
    const std::string where = StrCat(what, ": entry at ", pos);
    if (body.size() - pos < sizeof(XattrEntry)) return Corrupt(where, ": truncated");
    const XattrEntry e = Load<XattrEntry>(body.data() + pos);
    const size_t len = sizeof e + e.e_name_len + e.e_value_size;
    if (len > body.size() - pos) return Corrupt(where, ": runs past the area");
    const char* p = reinterpret_cast<const char*>(body.data() + pos + sizeof e);
    EVS_RETURN_IF_ERROR(decode(e.e_name_index, std::string_view(p, e.e_name_len),
                               std::string(p + e.e_name_len, e.e_value_size), where));
    pos += XattrAlign(static_cast<uint32_t>(len));
  }
  return out;
}

Result<Inode> ErofsReader::Lookup(std::string_view path) const {
  EVS_ASSIGN_OR_RETURN(Inode inode, Root());
  size_t pos = 0;
  std::string walked;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view name = path.substr(pos, end - pos);
    pos = end + 1;
    if (name.empty() || name == ".") continue;
    if (!inode.is_dir())
      return NotFoundError(name_, ": \"", path, "\": \"", walked, "\" is not a directory");
    EVS_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ReadDirectory(inode));
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const DirectoryEntry& e) { return e.name == name; });
    if (!walked.empty()) walked += '/';
    walked += name;
    if (it == entries.end())
      return NotFoundError(name_, ": \"", path, "\": no \"", walked, "\" in the image");
    EVS_ASSIGN_OR_RETURN(inode, ReadInode(it->nid));
  }
  return inode;
}

Status ErofsReader::Walk(
    const std::function<Status(const std::string& path, const Inode& inode)>& visit) const {
  EVS_ASSIGN_OR_RETURN(Inode root, Root());
  if (!root.is_dir()) return Corrupt("root inode ", root.nid, " is not a directory");
  struct Pending {
    std::string path;
    Inode inode;
    uint64_t parent;
  };
  std::vector<Pending> stack{{"", root, root.nid}};
  std::unordered_set<uint64_t> seen_dirs{root.nid};
  while (!stack.empty()) {
    Pending p = std::move(stack.back());
    stack.pop_back();
    EVS_RETURN_IF_ERROR(visit(p.path, p.inode));
    if (!p.inode.is_dir()) continue;
    EVS_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ReadDirectory(p.inode));
    const std::string where = p.path.empty() ? "/" : p.path;
    bool dot = false, dotdot = false;
    std::vector<Pending> children;
    for (DirectoryEntry& e : entries) {
      if (e.name == ".") {
        if (e.nid != p.inode.nid)
          return Corrupt("directory \"", where, "\": \".\" names nid ", e.nid);
        dot = true;
        continue;
      }
      if (e.name == "..") {
        if (e.nid != p.parent)
          return Corrupt("directory \"", where, "\": \"..\" names nid ", e.nid);
        dotdot = true;
        continue;
      }
      std::string path = p.path.empty() ? e.name : p.path + "/" + e.name;
      EVS_ASSIGN_OR_RETURN(Inode child, ReadInode(e.nid));
      if (FileTypeOfMode(child.mode) != e.file_type)
        return Corrupt("\"", path, "\": dirent type ", static_cast<int>(e.file_type), " but inode ",
                       e.nid, " has mode 0", std::oct, child.mode);
      if (child.is_dir() && !seen_dirs.insert(child.nid).second)
        return Corrupt("\"", path, "\": directory nid ", child.nid, " reached twice");
      children.push_back({std::move(path), child, p.inode.nid});
    }
    if (!dot || !dotdot) return Corrupt("directory \"", where, "\" lacks \".\" or \"..\"");
    // Reversed onto the stack so that entries are visited in on-disk order.
    for (auto it = children.rbegin(); it != children.rend(); ++it) stack.push_back(std::move(*it));
  }
  return OkStatus();
}

std::string ModeString(uint32_t mode) {
  std::string s(10, '-');
  switch (mode & S_IFMT) {
    case S_IFDIR:
      s[0] = 'd';
      break;
    case S_IFLNK:
      s[0] = 'l';
      break;
    case S_IFCHR:
      s[0] = 'c';
      break;
    case S_IFBLK:
      s[0] = 'b';
      break;
    case S_IFIFO:
      s[0] = 'p';
      break;
    case S_IFSOCK:
      s[0] = 's';
      break;
    default:
      break;
  }
  const char* rwx = "rwxrwxrwx";
  for (int i = 0; i < 9; ++i)
    if (mode & (0400 >> i)) s[1 + i] = rwx[i];
  if (mode & S_ISUID) s[3] = (mode & S_IXUSR) ? 's' : 'S';
  if (mode & S_ISGID) s[6] = (mode & S_IXGRP) ? 's' : 'S';
  if (mode & S_ISVTX) s[9] = (mode & S_IXOTH) ? 't' : 'T';
  return s;
}

}  // namespace evs::erofs
