#include "evs/tar/layer_reader.h"

#include <algorithm>
#include <cstring>

#include "tar_format.h"

namespace evs::tar {

namespace {

// OCI image-spec layer.md "Whiteouts".
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";
constexpr size_t kNameMax = 255;  // Linux NAME_MAX; also EROFS's dirent limit (§1.4)

// ".wh..wh.<x>" other than the opaque marker is aufs bookkeeping (its
// hardlink directory ".wh..wh.plnk", ".wh..wh.aufs"): moby's layer applier
// drops such entries and everything under them, and so do we.
bool IsAufsMetadata(std::string_view path) {
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    if (part.starts_with(kWhiteoutMetaPrefix) && part != kOpaqueWhiteout) return true;
    pos = slash + 1;
  }
  return false;
}

}  // namespace

Result<std::string> NormalizeLayerPath(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("path contains a NUL byte");
  }
  std::string out;
  out.reserve(path.size());
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      // Lexical: "a/../b" is "b" whatever "a" is (a symlink is not followed;
      // the writer never follows links either).
      if (out.empty()) return InvalidArgumentError("path leaves the layer root");
      size_t cut = out.rfind('/');
      out.resize(cut == std::string::npos ? 0 : cut);
      continue;
    }
    if (part.size() > kNameMax) {
      return InvalidArgumentError("path component of ", part.size(),
                                  " bytes exceeds NAME_MAX (255)");
    }
    if (!out.empty()) out += '/';
    out.append(part);
  }
  return out;
}

class LayerReader::State {
 public:
  State(ByteSource* tar, LayerReaderOptions options)
      : options_(std::move(options)),
        tar_(tar, TarReaderOptions{.input_name = options_.input_name,
                                   .tee = options_.tee,
                                   .max_extension_bytes = options_.max_extension_bytes}) {}

  Result<const LayerEntry*> Next() {
    if (!error_.ok()) return error_;
    if (done_) return nullptr;
    for (;;) {
      regular_ = false;
      auto header = tar_.Next();
      if (!header.ok()) {
        error_ = header.status();
        return error_;
      }
      if (*header == nullptr) {
        done_ = true;
        return nullptr;
      }
      auto keep = Convert(**header);
      if (!keep.ok()) {
        error_ = keep.status();
        return error_;
      }
      if (*keep) return &entry_;
    }
  }

  ChunkSource* data() { return &data_; }
  uint64_t tar_bytes() const { return tar_.offset(); }

 private:
  // The current entry's data if it is a regular file, nothing otherwise (a
  // directory or hardlink may carry bytes in the tar that are not content).
  class EntryData : public ChunkSource {
   public:
    explicit EntryData(State* state) : state_(state) {}
    Result<std::span<const uint8_t>> ReadChunk(size_t max) override {
      if (!state_->regular_) return std::span<const uint8_t>();
      return state_->tar_.ReadDataChunk(max);
    }

   private:
    State* state_;
  };

  template <typename... Args>
  Status Error(const TarHeader& h, const Args&... reason) const {
    std::string prefix = options_.input_name.empty() ? "" : options_.input_name + ": ";
    return InvalidArgumentError(prefix, "tar entry \"", format::QuoteName(h.path), "\" at offset ",
                                h.header_offset, ": ", reason...);
  }

  // Fills entry_ from `h`; false for entries a layer ignores.
  Result<bool> Convert(const TarHeader& h) {
    auto path = NormalizeLayerPath(h.path);
    if (!path.ok()) return Error(h, path.status().message());
    LayerEntry& e = entry_;
    e.path = std::move(*path);
    e.type = h.type;
    e.mode = h.mode;
    e.uid = h.uid;
    e.gid = h.gid;
    e.mtime = h.mtime;
    e.mtime_nsec = h.mtime_nsec;
    e.size = 0;
    e.link_target.clear();
    e.rdev_major = e.rdev_minor = 0;
    e.xattrs = h.xattrs;
    std::sort(e.xattrs.begin(), e.xattrs.end());
    e.header_offset = h.header_offset;
    e.data_offset = h.data_offset;

    if (IsAufsMetadata(e.path)) return false;
    std::string_view base = e.path;
    size_t slash = e.path.rfind('/');
    std::string_view dir;
    if (slash != std::string::npos) {
      base = std::string_view(e.path).substr(slash + 1);
      dir = std::string_view(e.path).substr(0, slash);
    }
    if (base.starts_with(kWhiteoutPrefix)) {
      if (base == kOpaqueWhiteout) {
        e.path.resize(dir.size());
        e.type = EntryType::kOpaqueMarker;
        e.xattrs.clear();
        return true;
      }
      std::string_view name = base.substr(kWhiteoutPrefix.size());
      if (name.empty() || name == "." || name == "..") {
        return Error(h, "whiteout names no file");
      }
      std::string target = dir.empty() ? std::string(name) : StrCat(dir, "/", name);
      e.path = std::move(target);
      // containerd's overlay applier: mknod(S_IFCHR, 0) and the entry's
      // owner; permissions 0.
      e.type = EntryType::kCharDevice;
      e.mode = 0;
      e.xattrs.clear();
      return true;
    }

    if (e.path.empty() && e.type != EntryType::kDirectory) {
      return Error(h, "a ", EntryTypeName(e.type), " cannot replace the layer root");
    }
    switch (e.type) {
      case EntryType::kRegular:
        e.size = h.size;
        regular_ = true;
        break;
      case EntryType::kHardlink: {
        auto target = NormalizeLayerPath(h.link_path);
        if (!target.ok()) return Error(h, "hardlink target: ", target.status().message());
        if (target->empty()) return Error(h, "hardlink to the layer root");
        e.link_target = std::move(*target);
        break;
      }
      case EntryType::kSymlink:
        if (h.link_path.empty()) return Error(h, "symlink with an empty target");
        if (h.link_path.find('\0') != std::string::npos) {
          return Error(h, "symlink target contains a NUL byte");
        }
        e.link_target = h.link_path;
        break;
      case EntryType::kCharDevice:
      case EntryType::kBlockDevice:
        e.rdev_major = h.dev_major;
        e.rdev_minor = h.dev_minor;
        break;
      default:
        break;
    }
    return true;
  }

  LayerReaderOptions options_;
  TarReader tar_;
  LayerEntry entry_;
  EntryData data_{this};
  bool regular_ = false;
  bool done_ = false;
  Status error_;
};

LayerReader::LayerReader(ByteSource* tar, LayerReaderOptions options)
    : state_(std::make_unique<State>(tar, std::move(options))) {}
LayerReader::~LayerReader() = default;

Result<const LayerEntry*> LayerReader::Next() { return state_->Next(); }
ChunkSource* LayerReader::data() { return state_->data(); }
uint64_t LayerReader::tar_bytes() const { return state_->tar_bytes(); }

}  // namespace evs::tar
