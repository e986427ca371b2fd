// Checking layer bytes against a dm-verity root digest: one data block at a
// time (VerityTree, what verified reads and lazy loading call per block) or
// a whole image file (VerifyImageFile, `evs verity verify`).
//
// The root digest is the only thing trusted; it comes from metadata.db or
// from a manifest fetched by digest (DESIGN.md §4). Everything else — the
// superblock's salt and sizes, every hash block — is checked against it
// before it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/verity/block_source.h"
#include "evs/verity/format.h"

namespace evs::verity {

struct VerityTreeOptions {
  // Verified hash blocks kept in memory. The levels above 0 (1/128 of level
  // 0 at sha256 and 4 KiB hash blocks) are always kept; level-0 blocks are
  // dropped round-robin beyond this and re-read (and re-verified against
  // their kept parent) when needed again. 64 MiB holds the whole tree of an
  // 8 GiB image of 4 KiB blocks or a 1 GiB image of 512-byte blocks.
  size_t cache_bytes = 64u << 20;
  // Names the layer in errors and logs; default: the source's name().
  std::string layer_name;
};

// A hash tree opened against a root digest. Each hash block is read from the
// source and verified up to the root the first time one of its entries is
// needed, then remembered, so a data block costs one hash and one compare
// once its path is known. Thread-safe: any number of threads may verify at
// once (a hash block two threads miss at the same moment may be read twice;
// both copies are checked).
class VerityTree {
 public:
  // Reads the superblock at `hash_offset` of `source` (not owned; must
  // outlive the tree) and checks that it is well-formed (DecodeSuperblock),
  // that data_blocks · data_block_size == hash_offset, that its algorithm is
  // the root digest's, and that the source is large enough to hold the
  // tree. DataLoss naming the layer otherwise; Unavailable if the source
  // cannot read the superblock now.
  static Result<std::unique_ptr<VerityTree>> Open(LayerBlockSource* source, uint64_t hash_offset,
                                                  const Digest& root_digest,
                                                  VerityTreeOptions options = {});
  ~VerityTree();

  const VerityParams& params() const;
  const TreeLayout& layout() const;
  const std::string& layer_name() const;
  uint64_t hash_offset() const { return layout().hash_offset; }

  // Checks `count` consecutive data blocks (params().data_block_size bytes
  // each, at `data`) starting at data block `first`. OK only when every
  // block matches. DataLoss "layer L: data block N (offset O) does not match
  // its hash" or "layer L: hash block H (level l) …" for a bad tree;
  // Unavailable when a hash block cannot be read now; OutOfRange for blocks
  // past the image. Costs one hash per block plus, the first time, one read
  // and hash per hash block on the path to the root.
  Status VerifyDataBlocks(uint64_t first, const uint8_t* data, size_t count);

  // Reads and verifies every hash block from the top down (what lazy
  // loading does after fetching the tree). Same errors as above.
  Status VerifyHashTree();

  struct Stats {
    uint64_t hash_blocks_read = 0;
    uint64_t data_blocks_verified = 0;
    uint64_t failures = 0;
  };
  Stats stats() const;

 private:
  VerityTree();
  struct State;
  std::unique_ptr<State> state_;
};

struct VerifyOptions {
  // Where the superblock is; default: found with LocateTree.
  std::optional<uint64_t> hash_offset;
  // When set, the superblock's salt must equal it (metadata.db records the
  // salt, so a changed salt is named as such instead of as a root mismatch).
  std::optional<std::string> expected_salt;
  // Names the layer in errors; default: the path.
  std::string layer_name;
  // Hashing threads, the caller included; 0 = one per CPU (at most 8).
  int threads = 0;
};

// Verifies a whole layer file against `root_digest`: the superblock, every
// hash block top-down, every data block, that the gap between superblock
// and tree is zero and that nothing follows the tree. The first failure is
// returned as DataLoss naming the layer and the block ("data block 17",
// "hash block 3 (level 0)", "superblock"). Reads the whole file once, on all
// cores; memory bounded by the tree cache.
Status VerifyImageFile(const std::string& path, const Digest& root_digest,
                       VerifyOptions options = {});

}  // namespace evs::verity
