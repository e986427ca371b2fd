// Building dm-verity hash trees: while an image is being written (the EROFS
// writer feeds VerityTreeBuilder as a BlockObserver) or over an existing
// image file (FormatImageFile). Both write the layout of format.h so that
// `veritysetup verify --hash-offset=<hash_offset> IMG IMG <root>` accepts the
// result unchanged (DESIGN.md §4; reference §4.1–4.2).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "evs/common/block_observer.h"
#include "evs/common/status.h"
#include "evs/verity/format.h"

namespace evs::verity {

struct TreeBuildOptions {
  // Threads hashing level 0, the caller included; 0 picks one per CPU (at
  // most 8). Work is only split for batches of ≥ 1 MiB, so a writer that
  // hands over single blocks hashes them on its own thread.
  int threads = 0;
  // Level-0 digests (32 bytes per data block for sha256) are kept in memory
  // up to this many bytes — 32 MiB covers a 4 GiB image of 4096-byte blocks
  // or a 512 MiB one of 512-byte blocks — and beyond it move to an unlinked
  // file in `spill_dir`, so memory stays bounded whatever the layer size.
  size_t memory_limit = 32u << 20;
  // Directory for the spill file; empty means $TMPDIR or /tmp. Give the
  // layer's own directory so the spill lands on the same disk.
  std::string spill_dir;
  // Names the image in error messages ("layer sha256:…").
  std::string what = "image";
  // > 0: OnBlocks() only copies each batch into a queue of at most this
  // many bytes, and a thread of the builder's own hashes it, so the writer
  // waits for hashing only when the queue is full: the hashing overlaps the
  // writer's I/O waits. 0: OnBlocks() hashes before it returns (no copy;
  // what FormatImageFile uses, with batches large enough to split).
  size_t async_bytes = 0;
};

// Hashes data blocks as they are produced and, once the image is complete,
// writes the superblock and the tree after it.
//
//   auto builder = VerityTreeBuilder::Create(params, options);
//   writer_options.observer = builder->get();   // EROFS writer feeds blocks
//   ... write the image ...
//   auto descriptor = (*builder)->Finish(fd, image_blocks);
//
// Memory: bounded by options.memory_limit plus ~1/128 of the level-0 size
// for the upper levels. Thread-compatible (one producer at a time).
class VerityTreeBuilder : public BlockObserver {
 public:
  // `params` gives hash type, algorithm, block sizes, salt and UUID;
  // params.data_blocks is ignored (it is learnt in Finish()). The observed
  // block size is params.data_block_size. InvalidArgument for bad params.
  static Result<std::unique_ptr<VerityTreeBuilder>> Create(const VerityParams& params,
                                                           TreeBuildOptions options = {});
  ~VerityTreeBuilder() override;

  // BlockObserver: hashes (or, with async_bytes, queues) `count` data
  // blocks starting at block `first`, in any order, each exactly once.
  // Cannot fail here: an I/O error of the spill file is kept and returned
  // by Finish().
  void OnBlocks(uint64_t first, const uint8_t* data, size_t count) override;

  // Completes the tree for an image of `data_blocks` blocks, all of which
  // must have been observed (else Internal naming the missing count), and
  // writes superblock and tree into `fd` at hash_offset = data_blocks ·
  // data_block_size, setting the file size to the tree's end. The caller
  // fsyncs. Returns what verification and activation need. Costs one pass
  // over the level-0 digests (1/128 of the image at 4 KiB blocks).
  Result<VerityDescriptor> Finish(int fd, uint64_t data_blocks);

  // Blocks observed so far.
  uint64_t blocks_observed() const;

 private:
  VerityTreeBuilder();
  struct State;
  std::unique_ptr<State> state_;
};

struct FormatOptions {
  VerityParams params;  // data_blocks is ignored: it comes from the file size
  // When the salt is empty and this is set, a random 32-byte salt is used
  // (veritysetup's default); clear it to format without salt.
  bool random_salt = true;
  TreeBuildOptions build;
};

// Formats an existing image file in place: pads it with zeros to a whole
// data block, hashes it on all cores, appends superblock and tree, fsyncs.
// An image that already ends with a verity tree of ours (LocateTree finds
// one) is AlreadyExists: formatting twice would hash the old tree as data.
// On failure the file is cut back to its original size. Must not be
// truncated by someone else meanwhile (it is read through a mapping).
Result<VerityDescriptor> FormatImageFile(const std::string& path, FormatOptions options);

// Finds the tree appended to a layer file without being told where it is:
// the superblock sits at hash_offset = data_blocks · data_block_size and the
// file ends where the tree ends, so only a few offsets are possible for a
// given file size; each is checked for a superblock whose data_blocks
// matches. NotFound naming the path when none does.
Result<uint64_t> LocateTree(int fd, std::string_view what);

}  // namespace evs::verity
