#include "evs/snapshot/layer_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/common/subprocess.h"

namespace evs::snapshot {
namespace {

constexpr const char* kImageName = "layer.erofs";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

StagedLayer::StagedLayer(StagedLayer&& other) noexcept
    : dir_(std::exchange(other.dir_, std::string())), record_(std::move(other.record_)) {}

StagedLayer& StagedLayer::operator=(StagedLayer&& other) noexcept {
  if (this != &other) {
    if (!dir_.empty()) (void)RemoveTree(dir_);
    dir_ = std::exchange(other.dir_, std::string());
    record_ = std::move(other.record_);
  }
  return *this;
}

StagedLayer::~StagedLayer() {
  if (!dir_.empty()) {
    Status s = RemoveTree(dir_);
    if (!s.ok()) {
      EVS_LOG(kWarning) << "staged layer not removed" << Kv("error", s.ToString());
    }
  }
}

std::string StagedLayer::image_path() const { return JoinPath(dir_, kImageName); }

Result<std::unique_ptr<LayerStore>> LayerStore::Open(const std::string& layers_dir) {
  EVS_RETURN_IF_ERROR(MakeDirs(JoinPath(layers_dir, "tmp"), 0700));
  EVS_RETURN_IF_ERROR(MakeDirs(JoinPath(layers_dir, "sha256"), 0700));
  return std::unique_ptr<LayerStore>(new LayerStore(layers_dir));
}

std::string LayerStore::staging_dir() const { return JoinPath(dir_, "tmp"); }

Result<std::string> LayerStore::DirFor(const std::string& digest) const {
  EVS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(digest));
  if (d.algorithm() != HashAlgorithm::kSha256) {
    return InvalidArgumentError("layer digest ", digest, ": only sha256 layers are stored");
  }
  return JoinPath(JoinPath(dir_, "sha256"), d.hex());
}

Result<std::string> LayerStore::ImagePathFor(const std::string& digest) const {
  EVS_ASSIGN_OR_RETURN(std::string dir, DirFor(digest));
  return JoinPath(dir, kImageName);
}

Result<StagedLayer> LayerStore::BuildFromDirectory(const std::string& dir,
                                                   const std::string& name) {
  std::string tmpl = JoinPath(staging_dir(), "XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoError(errno, StrCat("layer for ", name, ": create staging directory"));
  }
  StagedLayer staged(tmpl, LayerRecord{});
  std::string image = staged.image_path();

  // Interim builder until the verity module's layer builder lands: erofs-utils
  // (mkfs.erofs, full mode, fixed UUID so the output is deterministic) and no
  // verity tree. Replaced by verity::BuildLayer from a directory walk.
  EVS_ASSIGN_OR_RETURN(SubprocessResult run,
                       RunSubprocess({"mkfs.erofs", "--quiet", "-U",
                                      "00000000-0000-0000-0000-000000000000", image, dir}));
  if (run.exit_code != 0) {
    return InternalError("layer for ", name, ": mkfs.erofs ", dir, " failed (exit ", run.exit_code,
                         "): ", run.stderr_data.substr(0, 1024));
  }

  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(image, O_RDONLY));
  if (::fsync(fd.get()) != 0) return ErrnoError(errno, StrCat("fsync ", image));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, StrCat("stat ", image));

  Hasher hasher(HashAlgorithm::kSha256);
  std::string buf(1 << 20, '\0');
  for (off_t off = 0;;) {
    EVS_ASSIGN_OR_RETURN(size_t n, PreadFull(fd.get(), buf.data(), buf.size(), off, image));
    if (n == 0) break;
    hasher.Update(buf.data(), n);
    off += static_cast<off_t>(n);
  }
  // struct erofs_super_block at byte 1024: inos (le64) at offset 16
  // (reference/erofs-and-dm-verity-format.md §1).
  uint8_t inos[8] = {};
  EVS_RETURN_IF_ERROR(PreadFull(fd.get(), inos, sizeof inos, 1024 + 16, image).status());
  uint64_t inodes = 0;
  for (int i = 7; i >= 0; --i) inodes = (inodes << 8) | inos[i];

  LayerRecord r;
  r.digest = Digest(HashAlgorithm::kSha256, hasher.FinishBytes()).ToString();
  r.file_size = static_cast<uint64_t>(st.st_size);
  r.image_size = static_cast<uint64_t>(st.st_size);
  r.block_size = 4096;
  r.hash_offset = 0;
  r.usage.size = static_cast<int64_t>(st.st_blocks) * 512;
  r.usage.inodes = static_cast<int64_t>(inodes);
  r.created_ns = NowNs();
  EVS_RETURN_IF_ERROR(FsyncDir(staged.dir()));
  std::string staged_dir = staged.dir();
  staged.Release();
  return StagedLayer(std::move(staged_dir), std::move(r));
}

Result<bool> LayerStore::Publish(StagedLayer* staged) {
  EVS_ASSIGN_OR_RETURN(std::string target, DirFor(staged->record().digest));
  if (::renameat2(AT_FDCWD, staged->dir().c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) !=
      0) {
    if (errno == EEXIST || errno == ENOTEMPTY) return false;
    return ErrnoError(errno, StrCat("publish layer ", staged->record().digest, " to ", target));
  }
  staged->Release();
  EVS_RETURN_IF_ERROR(FsyncDir(Dirname(target)));
  return true;
}

Status LayerStore::Remove(const std::string& digest) {
  EVS_ASSIGN_OR_RETURN(std::string dir, DirFor(digest));
  return RemoveTree(dir);
}

}  // namespace evs::snapshot
