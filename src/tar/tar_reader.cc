#include "evs/tar/tar_reader.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>

#include "tar_format.h"

namespace evs::tar {

using format::kBlockSize;

namespace {

constexpr size_t kSkipChunk = 1u << 20;
constexpr int64_t kMaxId = std::numeric_limits<uint32_t>::max();

uint64_t PaddingAfter(uint64_t size) { return (kBlockSize - size % kBlockSize) % kBlockSize; }

}  // namespace

class TarReader::State {
 public:
  State(ByteSource* source, TarReaderOptions options) : options_(std::move(options)) {
    src_ = dynamic_cast<ChunkSource*>(source);
    if (src_ == nullptr) {
      owned_ = std::make_unique<BufferedChunkSource>(source);
      src_ = owned_.get();
    }
  }

  Result<const TarHeader*> Next();
  Result<std::span<const uint8_t>> ReadDataChunk(size_t max);
  ChunkSource* data() { return &data_; }
  uint64_t offset() const { return offset_; }

 private:
  // The current entry's data, for callers that want a ChunkSource.
  class EntryData : public ChunkSource {
   public:
    explicit EntryData(State* state) : state_(state) {}
    Result<std::span<const uint8_t>> ReadChunk(size_t max) override {
      return state_->ReadDataChunk(max);
    }

   private:
    State* state_;
  };

  // Extension headers seen before the entry they apply to.
  struct Pending {
    std::vector<std::pair<std::string, std::string>> pax;
    std::optional<std::string> long_name;
    std::optional<std::string> long_link;
    std::optional<uint64_t> first_offset;  // of the first extension header
    uint64_t bytes = 0;                    // their sizes, summed
  };

  Result<std::span<const uint8_t>> Take(size_t max);
  Result<bool> ReadBlock();
  Status Skip(uint64_t n, std::string_view name, uint64_t at);
  Status ReadExtension(uint64_t size, std::string_view what, uint64_t at, std::string* out);
  Status Drain();
  Result<const TarHeader*> BuildHeader(uint64_t at, const Pending& pending);
  Status ApplyPax(const std::string& key, const std::string& value, uint64_t at);
  Result<int64_t> Number(format::Field field, std::string_view what, uint64_t at);
  std::string RawName() const;

  template <typename... Args>
  Status EntryError(std::string_view name, uint64_t at, const Args&... reason) const {
    std::string prefix = options_.input_name.empty() ? "" : options_.input_name + ": ";
    if (name.empty()) {
      return InvalidArgumentError(prefix, "tar header at offset ", at, ": ", reason...);
    }
    return InvalidArgumentError(prefix, "tar entry \"", format::QuoteName(name), "\" at offset ",
                                at, ": ", reason...);
  }
  Status Fail(Status s) {
    error_ = std::move(s);
    return error_;
  }

  TarReaderOptions options_;
  ChunkSource* src_ = nullptr;
  std::unique_ptr<BufferedChunkSource> owned_;
  EntryData data_{this};

  uint64_t offset_ = 0;
  uint8_t block_[kBlockSize];
  TarHeader header_;
  bool in_entry_ = false;
  uint64_t data_left_ = 0;
  uint64_t padding_left_ = 0;
  bool ended_ = false;
  Status error_;
  // pax 'g' records in force (keyword order kept; a keyword appears once).
  std::vector<std::pair<std::string, std::string>> global_;
  uint64_t global_bytes_ = 0;
};

Result<std::span<const uint8_t>> TarReader::State::Take(size_t max) {
  EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> chunk, src_->ReadChunk(max));
  if (options_.tee != nullptr && !chunk.empty()) {
    EVS_RETURN_IF_ERROR(options_.tee->Write(chunk.data(), chunk.size()));
  }
  offset_ += chunk.size();
  return chunk;
}

Result<bool> TarReader::State::ReadBlock() {
  uint64_t at = offset_;
  size_t have = 0;
  while (have < kBlockSize) {
    EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> chunk, Take(kBlockSize - have));
    if (chunk.empty()) {
      if (have == 0) return false;
      return EntryError("", at, "archive ends inside a header (", have, " of 512 bytes)");
    }
    std::memcpy(block_ + have, chunk.data(), chunk.size());
    have += chunk.size();
  }
  return true;
}

Status TarReader::State::Skip(uint64_t n, std::string_view name, uint64_t at) {
  while (n > 0) {
    EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> chunk,
                         Take(static_cast<size_t>(std::min<uint64_t>(n, kSkipChunk))));
    if (chunk.empty()) {
      return EntryError(name, at, "archive ends inside the entry's data (", n, " bytes missing)");
    }
    n -= chunk.size();
  }
  return OkStatus();
}

Status TarReader::State::ReadExtension(uint64_t size, std::string_view what, uint64_t at,
                                       std::string* out) {
  if (size > options_.max_extension_bytes) {
    return EntryError("", at, what, " of ", size, " bytes exceeds the limit of ",
                      options_.max_extension_bytes, " bytes");
  }
  out->clear();
  out->reserve(static_cast<size_t>(size));
  uint64_t left = size;
  while (left > 0) {
    EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> chunk, Take(static_cast<size_t>(left)));
    if (chunk.empty()) {
      return EntryError("", at, "archive ends inside ", what, " (", left, " of ", size,
                        " bytes missing)");
    }
    out->append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    left -= chunk.size();
  }
  return Skip(PaddingAfter(size), "", at);
}

Status TarReader::State::Drain() {
  // Everything after the end-of-archive marker still belongs to the blob and
  // to the diffID: read it so the digests (and the tee) cover it.
  for (;;) {
    EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> chunk, Take(kSkipChunk));
    if (chunk.empty()) return OkStatus();
  }
}

std::string TarReader::State::RawName() const {
  return std::string(format::FieldString(block_, format::kName));
}

Result<int64_t> TarReader::State::Number(format::Field field, std::string_view what, uint64_t at) {
  auto v = format::ParseNumber(block_, field);
  if (!v.ok()) return EntryError(RawName(), at, what, " field: ", v.status().message());
  return *v;
}

Result<const TarHeader*> TarReader::State::Next() {
  if (!error_.ok()) return error_;
  if (ended_) return nullptr;
  if (in_entry_) {
    in_entry_ = false;
    Status s = Skip(data_left_ + padding_left_, header_.path, header_.header_offset);
    if (!s.ok()) return Fail(s);
    data_left_ = padding_left_ = 0;
  }

  Pending pending;
  for (;;) {
    uint64_t at = offset_;
    auto got = ReadBlock();
    if (!got.ok()) return Fail(got.status());
    if (!*got || format::IsZeroBlock(block_)) {
      if (pending.first_offset) {
        return Fail(
            EntryError("", *pending.first_offset, "extension header is not followed by an entry"));
      }
      // End of archive: a zero block (GNU tar stops at the first one, with a
      // warning if the second is missing) or the end of the stream.
      Status s = Drain();
      if (!s.ok()) return Fail(s);
      ended_ = true;
      return nullptr;
    }
    auto sum_ok = format::ChecksumMatches(block_);
    if (!sum_ok.ok()) {
      return Fail(EntryError(RawName(), at, "checksum field: ", sum_ok.status().message()));
    }
    if (!*sum_ok) return Fail(EntryError(RawName(), at, "bad header checksum"));

    char type = static_cast<char>(block_[format::kTypeflagOffset]);
    switch (type) {
      case 'x':
      case 'X':  // Solaris' name for 'x'
      case 'g':
      case 'L':
      case 'K': {
        const char* what = type == 'L'   ? "GNU long name header"
                           : type == 'K' ? "GNU long link name header"
                           : type == 'g' ? "pax global header"
                                         : "pax extended header";
        auto size = Number(format::kSize, "size", at);
        if (!size.ok()) return Fail(size.status());
        if (*size < 0) return Fail(EntryError("", at, what, " has a negative size"));
        // Bound what one entry's extension headers (or the global records
        // in force) may hold in memory, not only each header: endless small
        // headers must not grow memory without end.
        uint64_t held =
            (type == 'g' ? global_bytes_ : pending.bytes) + static_cast<uint64_t>(*size);
        if (held > options_.max_extension_bytes) {
          return Fail(EntryError("", at, what, "s add up to ", held,
                                 " bytes, more than the limit of ", options_.max_extension_bytes,
                                 " bytes"));
        }
        std::string body;
        Status s = ReadExtension(static_cast<uint64_t>(*size), what, at, &body);
        if (!s.ok()) return Fail(s);
        if (type != 'g') pending.bytes += body.size();
        if (!pending.first_offset) pending.first_offset = at;
        if (type == 'L' || type == 'K') {
          body.resize(std::strlen(body.c_str()));  // NUL-terminated
          (type == 'L' ? pending.long_name : pending.long_link) = std::move(body);
          continue;
        }
        std::vector<std::pair<std::string, std::string>> records;
        s = format::ParsePaxRecords(body, at + kBlockSize, &records);
        if (!s.ok()) return Fail(EntryError("", at, what, ": ", s.message()));
        if (type != 'g') {
          for (auto& r : records) pending.pax.push_back(std::move(r));
          continue;
        }
        for (auto& [key, value] : records) {
          auto it = std::find_if(global_.begin(), global_.end(),
                                 [&](const auto& g) { return g.first == key; });
          if (it != global_.end()) {
            global_bytes_ -= it->first.size() + it->second.size();
            global_.erase(it);
          }
          if (!value.empty()) {
            global_bytes_ += key.size() + value.size();
            global_.emplace_back(key, std::move(value));
          }
        }
        // A global header applies to the entries after it, not to pending
        // local headers; it does not start an entry.
        if (pending.pax.empty() && !pending.long_name && !pending.long_link) {
          pending.first_offset.reset();
        }
        continue;
      }
      case 'V': {  // GNU volume label: not a file
        auto size = Number(format::kSize, "size", at);
        if (!size.ok()) return Fail(size.status());
        if (*size < 0) return Fail(EntryError(RawName(), at, "negative size"));
        Status s = Skip(static_cast<uint64_t>(*size) + PaddingAfter(*size), RawName(), at);
        if (!s.ok()) return Fail(s);
        continue;
      }
      case 'S':
        return Fail(EntryError(RawName(), at,
                               "GNU sparse file (old GNU format, type 'S') is not supported"));
      case 'M':
        return Fail(EntryError(RawName(), at, "GNU multi-volume continuation is not supported"));
      case 'N':
        return Fail(
            EntryError(RawName(), at, "old GNU long name entry (type 'N') is not supported"));
      default:
        break;
    }
    auto header = BuildHeader(at, pending);
    if (!header.ok()) return Fail(header.status());
    return header;
  }
}

Status TarReader::State::ApplyPax(const std::string& key, const std::string& value, uint64_t at) {
  TarHeader& h = header_;
  auto bad = [&](std::string_view why) {
    return EntryError(h.path, at, "pax record ", key, "=\"", format::QuoteName(value), "\": ", why);
  };
  auto set_xattr = [&](std::string name, std::string v) {
    for (auto& x : h.xattrs) {
      if (x.first == name) {
        x.second = std::move(v);
        return;
      }
    }
    h.xattrs.emplace_back(std::move(name), std::move(v));
  };
  if (key == "path") {
    h.path = value;
  } else if (key == "linkpath") {
    h.link_path = value;
  } else if (key == "size") {
    auto v = format::ParseDecimal(value, std::numeric_limits<int64_t>::max());
    if (!v.ok()) return bad(v.status().message());
    h.size = *v;
  } else if (key == "uid" || key == "gid") {
    auto v = format::ParseDecimal(value, kMaxId);
    if (!v.ok()) return bad(v.status().message());
    (key == "uid" ? h.uid : h.gid) = static_cast<uint32_t>(*v);
  } else if (key == "uname") {
    h.uname = value;
  } else if (key == "gname") {
    h.gname = value;
  } else if (key == "mtime") {
    Status s = format::ParsePaxTime(value, &h.mtime, &h.mtime_nsec);
    if (!s.ok()) return bad(s.message());
  } else if (key == "SCHILY.devmajor" || key == "SCHILY.devminor") {
    auto v = format::ParseDecimal(value, kMaxId);
    if (!v.ok()) return bad(v.status().message());
    (key == "SCHILY.devmajor" ? h.dev_major : h.dev_minor) = static_cast<uint32_t>(*v);
  } else if (key.starts_with("SCHILY.xattr.")) {
    std::string name = key.substr(13);
    if (name.empty()) return bad("empty xattr name");
    set_xattr(std::move(name), value);
  } else if (key.starts_with("LIBARCHIVE.xattr.")) {
    auto name = format::DecodePercent(std::string_view(key).substr(17));
    if (!name.ok() || name->empty()) return bad("bad xattr name encoding");
    auto v = format::DecodeBase64(value);
    if (!v.ok()) return bad("xattr value is not base64");
    set_xattr(std::move(*name), std::move(*v));
  } else if (key == "RHT.security.selinux") {
    // Red Hat's tar stores the SELinux label under its own keyword.
    set_xattr("security.selinux", value);
  }
  // Anything else (atime, ctime, charset, comment, hdrcharset, SCHILY.acl.*,
  // SCHILY.dev/ino/nlink, LIBARCHIVE.creationtime, …) does not change the
  // entry as a layer sees it.
  return OkStatus();
}

Result<const TarHeader*> TarReader::State::BuildHeader(uint64_t at, const Pending& pending) {
  TarHeader& h = header_;
  const uint8_t* b = block_;
  format::Dialect dialect = format::DetectDialect(b);
  char type = static_cast<char>(b[format::kTypeflagOffset]);

  h.typeflag = type;
  h.header_offset = at;
  h.data_offset = at + kBlockSize;
  h.xattrs.clear();
  h.mtime_nsec = 0;
  h.dev_major = h.dev_minor = 0;

  std::string_view name = format::FieldString(b, format::kName);
  std::string_view prefix =
      dialect == format::Dialect::kUstar ? format::FieldString(b, format::kPrefix) : "";
  if (pending.long_name) {
    h.path = *pending.long_name;
  } else if (!prefix.empty()) {
    h.path.assign(prefix);
    h.path += '/';
    h.path.append(name);
  } else {
    h.path.assign(name);
  }
  if (pending.long_link) {
    h.link_path = *pending.long_link;
  } else {
    h.link_path.assign(format::FieldString(b, format::kLinkname));
  }
  if (dialect != format::Dialect::kV7) {
    h.uname.assign(format::FieldString(b, format::kUname));
    h.gname.assign(format::FieldString(b, format::kGname));
  } else {
    h.uname.clear();
    h.gname.clear();
  }

  EVS_ASSIGN_OR_RETURN(int64_t mode, Number(format::kMode, "mode", at));
  EVS_ASSIGN_OR_RETURN(int64_t uid, Number(format::kUid, "uid", at));
  EVS_ASSIGN_OR_RETURN(int64_t gid, Number(format::kGid, "gid", at));
  EVS_ASSIGN_OR_RETURN(int64_t size, Number(format::kSize, "size", at));
  EVS_ASSIGN_OR_RETURN(h.mtime, Number(format::kMtime, "mtime", at));
  if (mode < 0) return EntryError(h.path, at, "negative mode");
  // The mode field may carry S_IFMT bits (old archivers); the type comes from
  // the typeflag.
  h.mode = static_cast<uint32_t>(mode & 07777);
  // Ids that overflow the header field live in pax records; check those
  // after applying them.
  if (size < 0) return EntryError(h.path, at, "negative size ", size);
  h.size = static_cast<uint64_t>(size);
  bool is_device = type == '3' || type == '4';
  if (is_device && dialect != format::Dialect::kV7) {
    EVS_ASSIGN_OR_RETURN(int64_t major, Number(format::kDevmajor, "devmajor", at));
    EVS_ASSIGN_OR_RETURN(int64_t minor, Number(format::kDevminor, "devminor", at));
    if (major < 0 || major > kMaxId || minor < 0 || minor > kMaxId) {
      return EntryError(h.path, at, "device number ", major, ":", minor, " out of range");
    }
    h.dev_major = static_cast<uint32_t>(major);
    h.dev_minor = static_cast<uint32_t>(minor);
  }
  bool uid_from_pax = false;
  bool gid_from_pax = false;

  // GNU sparse files in pax form (GNU tar manual, "Storing Sparse Files"):
  // 0.0 has numblocks/offset/numbytes, 0.1 a map, 1.0 major/minor/name/
  // realsize and the map in the data. Rejected, whichever: the data is not
  // the file's content.
  bool sparse = false, sparse_1_0 = false, sparse_map = false;
  for (const auto& [key, value] : pending.pax) {
    if (!key.starts_with("GNU.sparse.")) continue;
    sparse = true;
    sparse_1_0 |= key == "GNU.sparse.major" || key == "GNU.sparse.minor" ||
                  key == "GNU.sparse.name" || key == "GNU.sparse.realsize";
    sparse_map |= key == "GNU.sparse.map";
  }
  if (sparse) {
    const char* version = sparse_1_0 ? "1.0" : sparse_map ? "0.1" : "0.0";
    for (const auto& [key, value] : pending.pax) {
      if (key == "GNU.sparse.name" || key == "path") h.path = value;
    }
    return EntryError(h.path, at, "GNU sparse file (pax format ", version, ") is not supported");
  }

  // pax: global records first, then the entry's own (POSIX: extended
  // header records override global ones; an empty local value cancels the
  // global record, leaving the header field).
  auto local_has = [&](const std::string& key) {
    for (const auto& r : pending.pax) {
      if (r.first == key) return true;
    }
    return false;
  };
  auto is_xattr = [](const std::string& key) {
    return key.starts_with("SCHILY.xattr.") || key.starts_with("LIBARCHIVE.xattr.");
  };
  for (const auto& [key, value] : global_) {
    if (local_has(key)) continue;
    EVS_RETURN_IF_ERROR(ApplyPax(key, value, at));
    uid_from_pax |= key == "uid";
    gid_from_pax |= key == "gid";
  }
  for (const auto& [key, value] : pending.pax) {
    // An empty xattr value is a value; an empty anything else deletes.
    if (value.empty() && !is_xattr(key)) continue;
    EVS_RETURN_IF_ERROR(ApplyPax(key, value, at));
    uid_from_pax |= key == "uid";
    gid_from_pax |= key == "gid";
  }
  if (!uid_from_pax) {
    if (uid < 0 || uid > kMaxId) return EntryError(h.path, at, "uid ", uid, " out of range");
    h.uid = static_cast<uint32_t>(uid);
  }
  if (!gid_from_pax) {
    if (gid < 0 || gid > kMaxId) return EntryError(h.path, at, "gid ", gid, " out of range");
    h.gid = static_cast<uint32_t>(gid);
  }

  // Which types carry data: as Go's archive/tar reads them (reader.go
  // isHeaderOnlyType), since containerd applies layers with it — hardlinks,
  // symlinks, devices, fifos and directories never do, whatever their size
  // field says. (GNU tar differs: it skips `size` bytes after symlinks,
  // devices and fifos.)
  bool header_only = true;
  switch (type) {
    case '0':
    case '7':
      h.type = EntryType::kRegular;
      header_only = false;
      break;
    case '\0':
      // Pre-POSIX archivers marked directories by a trailing slash.
      if (!h.path.empty() && h.path.back() == '/') {
        h.type = EntryType::kDirectory;
      } else {
        h.type = EntryType::kRegular;
        header_only = false;
      }
      break;
    case '1':
      h.type = EntryType::kHardlink;
      break;
    case '2':
      h.type = EntryType::kSymlink;
      break;
    case '3':
      h.type = EntryType::kCharDevice;
      break;
    case '4':
      h.type = EntryType::kBlockDevice;
      break;
    case '5':
      h.type = EntryType::kDirectory;
      break;
    case 'D':  // GNU dumpdir: a directory followed by a listing of its contents
      h.type = EntryType::kDirectory;
      header_only = false;
      break;
    case '6':
      h.type = EntryType::kFifo;
      break;
    default: {
      std::string shown = (type >= 0x21 && type < 0x7f) ? std::string(1, type)
                                                        : StrCat("\\x", std::hex, +(uint8_t)type);
      return EntryError(h.path, at, "unsupported entry type '", shown, "'");
    }
  }
  if (header_only) h.size = 0;
  uint64_t data_bytes = h.size;
  in_entry_ = true;
  data_left_ = data_bytes;
  padding_left_ = PaddingAfter(data_bytes);
  return &header_;
}

Result<std::span<const uint8_t>> TarReader::State::ReadDataChunk(size_t max) {
  if (!error_.ok()) return error_;
  if (!in_entry_ || data_left_ == 0 || max == 0) return std::span<const uint8_t>();
  auto chunk = Take(static_cast<size_t>(std::min<uint64_t>(max, data_left_)));
  if (!chunk.ok()) return Fail(chunk.status());
  if (chunk->empty()) {
    return Fail(EntryError(header_.path, header_.header_offset,
                           "archive ends inside the entry's data (", data_left_, " of ",
                           header_.size, " bytes missing)"));
  }
  data_left_ -= chunk->size();
  return chunk;
}

TarReader::TarReader(ByteSource* source, TarReaderOptions options)
    : state_(std::make_unique<State>(source, std::move(options))) {}
TarReader::~TarReader() = default;

Result<const TarHeader*> TarReader::Next() { return state_->Next(); }
Result<size_t> TarReader::ReadData(void* buf, size_t n) { return state_->data()->Read(buf, n); }
Result<std::span<const uint8_t>> TarReader::ReadDataChunk(size_t max) {
  return state_->ReadDataChunk(max);
}
ChunkSource* TarReader::data() { return state_->data(); }
uint64_t TarReader::offset() const { return state_->offset(); }

}  // namespace evs::tar
