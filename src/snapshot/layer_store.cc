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
#include "evs/verity/format.h"
#include "evs/verity/layer_builder.h"

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

  // One pass (verity/layer_builder.h): the directory walk feeds the EROFS
  // writer, whose blocks feed the tree builder; the tree is appended at
  // hash_offset (DESIGN.md §4). The salt is fixed (32 zero bytes, as
  // containerd's go-dmverity layers have) and the UUIDs derive from a
  // constant seed, so the same tree always gives the same file and the same
  // root digest: the root digest is the layer's content digest, the key
  // that stores identical layers once.
  verity::LayerBuildOptions build;
  build.mode = erofs::Mode::kFull;
  build.uuid_seed = "evs unpacked layer";
  build.name = name;
  build.salt = std::string(32, '\0');
  build.random_salt = false;
  EVS_ASSIGN_OR_RETURN(verity::LayerInfo info,
                       verity::BuildLayer(verity::LayerInput::Directory(dir), image, build));
  if (!info.verity) return InternalError("layer for ", name, ": built without a verity tree");
  const verity::VerityDescriptor& tree = *info.verity;
  struct stat st;
  if (::stat(image.c_str(), &st) != 0) return ErrnoError(errno, StrCat("stat ", image));

  LayerRecord r;
  r.digest = StrCat("sha256:", tree.root_digest.hex());
  r.file_size = info.file_size;
  r.image_size = info.image.image_size;
  r.block_size = tree.params.data_block_size;
  r.hash_block_size = tree.params.hash_block_size;
  r.hash_type = tree.params.hash_type;
  r.root_digest = tree.root_digest.hex();
  r.salt = verity::SaltHex(tree.params.salt);
  r.hash_offset = tree.hash_offset;
  r.hash_algorithm = std::string(HashAlgorithmName(tree.params.algorithm));
  r.usage.size = static_cast<int64_t>(st.st_blocks) * 512;
  r.usage.inodes = static_cast<int64_t>(info.image.inodes);
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
