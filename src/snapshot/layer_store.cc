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
    : dir_(std::exchange(other.dir_, std::string())),
      record_(std::move(other.record_)),
      store_(std::exchange(other.store_, nullptr)) {}

StagedLayer& StagedLayer::operator=(StagedLayer&& other) noexcept {
  if (this != &other) {
    Clear();
    dir_ = std::exchange(other.dir_, std::string());
    record_ = std::move(other.record_);
    store_ = std::exchange(other.store_, nullptr);
  }
  return *this;
}

StagedLayer::~StagedLayer() { Clear(); }

void StagedLayer::Clear() {
  if (!dir_.empty()) {
    Status s = RemoveTree(dir_);
    if (!s.ok()) {
      EVS_LOG(kWarning) << "staged layer not removed" << Kv("error", s.ToString());
    }
  }
  Release();
}

void StagedLayer::Release() {
  if (store_ != nullptr && !dir_.empty()) store_->Forget(dir_);
  dir_.clear();
  store_ = nullptr;
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

Result<StagedLayer> LayerStore::NewStaging(const std::string& name) {
  std::string tmpl = JoinPath(staging_dir(), "XXXXXX");
  std::lock_guard<std::mutex> lock(mu_);
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoError(errno, StrCat(name, ": create staging directory in ", staging_dir()));
  }
  in_use_.insert(tmpl);
  StagedLayer staged(tmpl, LayerRecord{});
  staged.store_ = this;
  return staged;
}

void LayerStore::Forget(const std::string& staging_path) {
  std::lock_guard<std::mutex> lock(mu_);
  in_use_.erase(staging_path);
}

bool LayerStore::StagingInUse(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_use_.count(JoinPath(staging_dir(), name)) != 0;
}

bool LayerStore::Contains(const std::string& digest) const {
  auto dir = DirFor(digest);
  struct stat st;
  return dir.ok() && ::stat(dir->c_str(), &st) == 0;
}

namespace {

// What metadata.db records about a built layer file.
Result<LayerRecord> RecordFor(const verity::LayerInfo& info, const std::string& image,
                              const std::string& name) {
  if (!info.verity) return InternalError(name, ": built without a verity tree");
  const verity::VerityDescriptor& tree = *info.verity;
  struct stat st;
  if (::stat(image.c_str(), &st) != 0) return ErrnoError(errno, StrCat("stat ", image));
  LayerRecord r;
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
  return r;
}

}  // namespace

Result<StagedLayer> LayerStore::BuildFromBlob(ByteSource* blob, const Digest& blob_digest,
                                              const BlobLayerOptions& options) {
  const std::string name = StrCat("layer ", blob_digest.ToString());
  if (blob_digest.algorithm() != HashAlgorithm::kSha256) {
    return InvalidArgumentError(name, ": only sha256 layers are stored");
  }
  EVS_ASSIGN_OR_RETURN(StagedLayer staged, NewStaging(name));
  std::string image = staged.image_path();
  // One pass (verity/layer_builder.h): decompression on its own thread, tar
  // entries into the EROFS writer, its blocks into the tree builder. The
  // blob digest is checked at the end of the stream unless the source
  // vouches for it; the diffID is computed on its own when asked for. The
  // salt and UUIDs are fixed, so one blob always gives the same file.
  verity::LayerBuildOptions build;
  build.mode = erofs::Mode::kFull;
  build.uuid_seed = blob_digest.ToString();
  build.name = name;
  if (options.check_blob_digest) build.expected_blob_digest = blob_digest;
  build.compute_diff_id = options.compute_diff_id;
  build.max_tar_bytes = options.max_tar_bytes;
  build.hash_threads = options.hash_threads;
  build.salt = std::string(32, '\0');
  build.random_salt = false;
  EVS_ASSIGN_OR_RETURN(verity::LayerInfo info,
                       verity::BuildLayer(verity::LayerInput::Tar(blob), image, build));
  if (options.compute_diff_id && !info.diff_id) {
    return InternalError(name, ": the diffID was asked for but not computed");
  }
  EVS_ASSIGN_OR_RETURN(staged.record_, RecordFor(info, image, name));
  staged.record_.digest = blob_digest.ToString();
  if (info.diff_id) staged.record_.diff_id = info.diff_id->ToString();
  EVS_RETURN_IF_ERROR(FsyncDir(staged.dir()));
  return staged;
}

Result<StagedLayer> LayerStore::BuildFromDirectory(const std::string& dir,
                                                   const std::string& name) {
  EVS_ASSIGN_OR_RETURN(StagedLayer staged, NewStaging(StrCat("layer for ", name)));
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
  EVS_ASSIGN_OR_RETURN(staged.record_, RecordFor(info, image, StrCat("layer for ", name)));
  staged.record_.digest = StrCat("sha256:", info.verity->root_digest.hex());
  EVS_RETURN_IF_ERROR(FsyncDir(staged.dir()));
  return staged;
}

Result<bool> LayerStore::Publish(StagedLayer* staged) {
  EVS_ASSIGN_OR_RETURN(std::string target, DirFor(staged->record().digest));
  if (staged->dir().empty()) {
    return NotFoundError("layer ", staged->record().digest,
                         " is not stored and has no staged copy to publish");
  }
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
