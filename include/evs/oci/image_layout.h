// An OCI image layout on disk (image-spec image-layout.md): "oci-layout",
// "index.json" and content-addressed "blobs/<alg>/<hex>". Every file is
// written under a temporary name, fsynced and renamed (common/file.h), so a
// crash leaves either the old or the new file, never a partial one; blobs
// are verified against their digest before they are renamed into place.
#pragma once

#include <string>
#include <string_view>

#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/common/status.h"
#include "evs/oci/manifest.h"

namespace evs::oci {

// A directory holding an OCI image layout. Thread-compatible: concurrent blob
// writes are fine (distinct temp names), index updates must be serialised by
// the caller.
class ImageLayout {
 public:
  // Opens `dir`, creating it, "oci-layout" and an empty index when missing.
  // FailedPrecondition if "oci-layout" exists with another version.
  static Result<ImageLayout> Create(const std::string& dir);
  // Opens an existing layout; NotFound / InvalidArgument naming the file
  // when "oci-layout" or "index.json" is missing or malformed.
  static Result<ImageLayout> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // "<dir>/blobs/<alg>/<hex>".
  std::string BlobPath(const Digest& digest) const;
  // True when the blob file exists with exactly `size` bytes (contents are
  // not re-hashed; blobs are only ever renamed into place after verifying).
  bool HasBlob(const Digest& digest, int64_t size) const;

  // A temporary file that becomes the blob when Commit()ted; the caller
  // verifies the bytes (registry/ does while streaming) before committing.
  Result<AtomicFile> CreateBlobFile(const Digest& digest) const;
  // Writes a small blob, verifying `data` hashes to `digest` (DataLoss
  // otherwise, nothing written).
  Status WriteBlob(const Digest& digest, std::string_view data) const;
  // Reads a blob of at most `max_size` bytes and verifies its digest.
  Result<std::string> ReadBlob(const Digest& digest, size_t max_size = 64u << 20) const;

  // The parsed index.json.
  Result<ImageIndex> ReadIndex() const;
  // Adds `desc` to index.json with annotation ref.name = `ref_name` (when
  // not empty), replacing an entry with the same ref.name; rewrites the file
  // atomically.
  Status AddToIndex(Descriptor desc, std::string_view ref_name) const;

 private:
  explicit ImageLayout(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace evs::oci
