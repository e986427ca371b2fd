// LayerStore: the layers/ directory (DESIGN.md §3). A layer image is built
// under a staging name in layers/tmp/, then published by one rename to
// layers/sha256/<hex>/layer.erofs, so a layer directory either is complete
// or does not exist. Identical layers are stored once: publishing a digest
// that is already present keeps the existing copy. Thread-safe: layers are
// built concurrently (commits, conversions on pull).
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/snapshot/metadata_store.h"

namespace evs::snapshot {

class LayerStore;

// A layer image in its staging directory, removed when destroyed unless it
// was published. Move-only. A StagedLayer with an empty dir() names a layer
// by its record alone (a layer the source found already stored).
class StagedLayer {
 public:
  StagedLayer() = default;
  StagedLayer(std::string dir, LayerRecord record)
      : dir_(std::move(dir)), record_(std::move(record)) {}
  StagedLayer(StagedLayer&& other) noexcept;
  StagedLayer& operator=(StagedLayer&& other) noexcept;
  ~StagedLayer();

  // What the metadata store records about the image (id not yet assigned).
  const LayerRecord& record() const { return record_; }
  const std::string& dir() const { return dir_; }
  std::string image_path() const;
  // Forgets the directory (after it was renamed into place).
  void Release();

 private:
  friend class LayerStore;
  void Clear();
  std::string dir_;
  LayerRecord record_;
  // Set for directories made by LayerStore: told when the directory goes,
  // so that Cleanup knows which staging entries are in use.
  LayerStore* store_ = nullptr;
};

// How to build a layer from a blob (LayerStore::BuildFromBlob).
struct BlobLayerOptions {
  // Compute the diffID (SHA-256 of the uncompressed tar) while converting,
  // so the layer can be checked against the chain ID containerd names it by
  // (its record's diff_id). About half the CPU time of inflating
  // (docs/tar.md); the only proof that the blob is the layer the image
  // config says it is.
  bool compute_diff_id = true;
  // Check the blob digest here while streaming. false only when the source
  // checks it itself and fails the stream on a mismatch before it ends
  // (RegistryClient::FetchBlob into a BytePipe does), to save a SHA-256
  // pass over the blob (the diffID, when asked for, is then the only hash
  // computed here).
  bool check_blob_digest = true;
  // Cap on the uncompressed tar (ResourceExhausted beyond it: a gzip bomb
  // from a hostile registry). 0: none.
  uint64_t max_tar_bytes = 0;
  // Threads hashing the verity tree's level 0 (0: one per CPU, at most 8).
  int hash_threads = 0;
};

class LayerStore {
 public:
  // `layers_dir` is <root>/layers; created with its tmp/ and sha256/
  // subdirectories if missing.
  static Result<std::unique_ptr<LayerStore>> Open(const std::string& layers_dir);

  // Builds layer.erofs with its verity tree from directory `dir` (an
  // overlayfs upper directory: whiteouts as 0:0 character devices and
  // trusted.overlay.opaque xattrs are kept as they are). The record's digest
  // is the digest of the image content, so identical trees give identical
  // digests. `name` names the input in errors. Reads the whole tree and
  // writes the whole image: O(size of the tree).
  Result<StagedLayer> BuildFromDirectory(const std::string& dir, const std::string& name);

  // Builds layer.erofs with its verity tree from the layer blob read from
  // `blob` to its end (tar, gzip or zstd; DESIGN.md §1 convert-on-pull): one
  // streaming pass, no copy of the blob on disk. The blob must hash to
  // `blob_digest` (DataLoss otherwise — checked here, or by the source when
  // options.check_blob_digest is false — and nothing is kept); the record's
  // digest is the blob digest, so a layer is stored once however many
  // images use it, and its diff_id is set when computed. Errors name the
  // layer. Blocks until the stream ends; thread-safe.
  Result<StagedLayer> BuildFromBlob(ByteSource* blob, const Digest& blob_digest,
                                    const BlobLayerOptions& options);

  // Renames the staged directory to DirFor(digest) and fsyncs. Returns true
  // when it was published, false when a layer with that digest already
  // exists (the staged copy is then left to its destructor).
  Result<bool> Publish(StagedLayer* staged);

  // True when a layer with this digest is published (its directory
  // exists). One stat(2).
  bool Contains(const std::string& digest) const;

  // layers/sha256/<hex>: `digest` must be "sha256:<64 hex>" (checked).
  Result<std::string> DirFor(const std::string& digest) const;
  Result<std::string> ImagePathFor(const std::string& digest) const;

  // Removes a published layer directory; a missing one is OK.
  Status Remove(const std::string& digest);

  const std::string& dir() const { return dir_; }
  std::string staging_dir() const;
  // True when a StagedLayer made by this store still owns the staging
  // entry `name` (a conversion in progress or waiting to be committed);
  // Cleanup removes only the others.
  bool StagingInUse(const std::string& name) const;

 private:
  friend class StagedLayer;
  explicit LayerStore(std::string dir) : dir_(std::move(dir)) {}
  // A new, empty staging directory owned by the returned StagedLayer.
  Result<StagedLayer> NewStaging(const std::string& name);
  void Forget(const std::string& staging_path);

  std::string dir_;
  mutable std::mutex mu_;
  std::set<std::string> in_use_;  // staging paths owned by live StagedLayers
};

}  // namespace evs::snapshot
