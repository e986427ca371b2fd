// Fixtures shared by the verity tests: deterministic image contents and the
// veritysetup oracle.
#pragma once

#include <cstdint>
#include <string>

#include "evs/common/digest.h"
#include "evs/verity/format.h"

namespace evs::verity::testing {

// Writes `size` bytes of pseudo-random data derived from `seed` to `path`
// (fast: xorshift, 1 MiB at a time).
void WritePatternFile(const std::string& path, uint64_t size, uint64_t seed);

// Runs `veritysetup format` on `path` with the tree appended at
// `hash_offset`, the given block sizes, salt (raw; empty = none), UUID,
// format version and algorithm, and returns the root digest hex it prints
// (empty after an ADD_FAILURE if it failed).
std::string VeritysetupFormat(const std::string& path, const VerityParams& params);

// True when `veritysetup verify` accepts `path` with the tree at
// `hash_offset` and root `root_hex`.
bool VeritysetupVerify(const std::string& path, uint64_t hash_offset, const std::string& root_hex);

// Flips one bit of the byte at `offset` of `path` (pwrite, no truncation).
void FlipByte(const std::string& path, uint64_t offset);

}  // namespace evs::verity::testing

namespace evs::verity::testing {

// An image of pseudo-random blocks with its verity tree appended.
struct FormattedImage {
  std::string path;
  VerityDescriptor descriptor;
  TreeLayout layout;
};
FormattedImage MakeFormattedImage(const std::string& path, uint64_t blocks, uint32_t dbs = 4096);

// Appends a verity tree to an existing image file (FormatImageFile with a
// random salt); fails the test if that fails.
FormattedImage FormatExisting(const std::string& path, uint32_t dbs = 4096);

// A listing of the tree under `root` that two mounts of the same layer must
// share: path, type, mode, owner, size, symlink target, the SHA-256 of every
// regular file and every extended attribute, sorted.
std::string DescribeTree(const std::string& root);

// Offset of the only occurrence of `needle` in the file at `path`; fails
// the test when it occurs zero or several times.
uint64_t FindUnique(const std::string& path, const std::string& needle);

}  // namespace evs::verity::testing
