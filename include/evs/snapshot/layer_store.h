// LayerStore: the layers/ directory (DESIGN.md §3). A layer image is built
// under a staging name in layers/tmp/, then published by one rename to
// layers/sha256/<hex>/layer.erofs, so a layer directory either is complete
// or does not exist. Identical layers are stored once: publishing a digest
// that is already present keeps the existing copy.
#pragma once

#include <memory>
#include <string>

#include "evs/common/status.h"
#include "evs/snapshot/metadata_store.h"

namespace evs::snapshot {

// A layer image in its staging directory, removed when destroyed unless it
// was published. Move-only.
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
  void Release() { dir_.clear(); }

 private:
  std::string dir_;
  LayerRecord record_;
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

  // Renames the staged directory to DirFor(digest) and fsyncs. Returns true
  // when it was published, false when a layer with that digest already
  // exists (the staged copy is then left to its destructor).
  Result<bool> Publish(StagedLayer* staged);

  // layers/sha256/<hex>: `digest` must be "sha256:<64 hex>" (checked).
  Result<std::string> DirFor(const std::string& digest) const;
  Result<std::string> ImagePathFor(const std::string& digest) const;

  // Removes a published layer directory; a missing one is OK.
  Status Remove(const std::string& digest);

  const std::string& dir() const { return dir_; }
  std::string staging_dir() const;

 private:
  explicit LayerStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace evs::snapshot
