// BuildLayer: the one way the rest of evs makes a layer file — an EROFS image
// with its dm-verity tree appended (DESIGN.md §3–4) — from a layer blob (a
// tar, plain, gzip or zstd) or from a directory (a committed overlay upper
// directory). One pass: the EROFS writer hands every block it writes to the
// tree builder, so the image is never read back; the file appears under its
// name only when complete (temp name, fsync, rename) and nothing is left
// behind on failure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/erofs/writer.h"
#include "evs/tar/decompress.h"
#include "evs/verity/format.h"

namespace evs::verity {

// What to build from: exactly one of the two.
struct LayerInput {
  // A layer blob, read to its end (compression detected by magic).
  static LayerInput Tar(ByteSource* blob) { return LayerInput{blob, ""}; }
  // A directory tree, read with erofs::AddDirectory (full mode only).
  static LayerInput Directory(std::string path) { return LayerInput{nullptr, std::move(path)}; }

  ByteSource* tar = nullptr;
  std::string directory;
};

struct LayerBuildOptions {
  // Full (4096-byte blocks, file data in the image) or tar-index (512-byte
  // blocks over the embedded tar; verity then uses 512-byte data blocks,
  // reference §0.4).
  erofs::Mode mode = erofs::Mode::kFull;
  // Seeds the EROFS UUID and the verity superblock UUID (e.g. the blob
  // digest), so the same input and salt give the same bytes.
  std::string uuid_seed;
  // Names the input in errors and logs ("layer sha256:…").
  std::string name;
  // Tar input: checked at the end of the stream (DataLoss on mismatch).
  std::optional<Digest> expected_blob_digest;
  std::optional<Digest> expected_diff_id;
  // Tar input: cap on the uncompressed size (0: none).
  uint64_t max_tar_bytes = 0;
  // Tar input: compute the blob digest and diffID while streaming even when
  // none is expected, so LayerInfo carries them (erofs::ConvertOptions::
  // compute_digests: two more SHA-256 passes, about 0.8 × the cost of
  // inflating, on threads of their own).
  bool compute_digests = false;
  // Tar input: compute the diffID alone (erofs::ConvertOptions::
  // compute_diff_id): one SHA-256 pass over the tar, not over the blob,
  // for callers whose source checks the blob digest itself.
  bool compute_diff_id = false;

  // Append the verity tree (the default; off only to measure its cost).
  bool verity = true;
  // Verity parameters. An empty salt with random_salt gives 32 random bytes
  // (veritysetup's default); clear random_salt for no salt.
  std::string salt;
  bool random_salt = true;
  HashAlgorithm algorithm = HashAlgorithm::kSha256;
  uint32_t hash_type = 1;
  // Threads hashing level 0 (0: one per CPU, at most 8).
  int hash_threads = 0;
  // Blocks wait for hashing in a queue of up to this many bytes, hashed on
  // the tree builder's own thread(s), so that the writer goes on writing
  // (TreeBuildOptions::async_bytes); 0 hashes on the writer's thread.
  size_t hash_queue_bytes = 8u << 20;
  // Replace an existing file at the output path (else AlreadyExists).
  bool replace = false;
};

struct LayerInfo {
  erofs::ImageInfo image;  // EROFS size, block size, inodes, tar placement
  // The tree, when options.verity: hash offset, root digest, salt, block
  // sizes — what metadata.db records and the manifest annotations carry.
  std::optional<VerityDescriptor> verity;
  uint64_t file_size = 0;  // image + superblock + tree
  // Tar input only, each when computed (compute_digests, compute_diff_id,
  // or an expected digest given): from the tar module, while streaming.
  std::optional<Digest> blob_digest;
  std::optional<Digest> diff_id;
  tar::Compression compression = tar::Compression::kNone;
  uint64_t blob_bytes = 0;
  uint64_t tar_bytes = 0;
  uint64_t entries = 0;
};

// Builds the layer file at `out_path`. Blocks until done (decompression runs
// on a thread of its own, level-0 hashing on the tree builder's). Memory is
// bounded independent of layer size: the writer's metadata, the hash queue,
// 32 MiB of level-0 digests at most (then spilled to an unlinked file beside
// `out_path`), ~1/128 of that for the upper levels.
//
// Errors name the input: a bad stream or tar, an entry the image cannot hold
// (InvalidArgument), the tar cap (ResourceExhausted), a digest mismatch
// (DataLoss), an existing output without `replace` (AlreadyExists), I/O
// (Internal). On any error no file is left at `out_path` or beside it.
Result<LayerInfo> BuildLayer(const LayerInput& input, const std::string& out_path,
                             const LayerBuildOptions& options);

}  // namespace evs::verity
