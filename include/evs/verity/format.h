// The dm-verity on-disk format: parameters, the 512-byte veritysetup
// superblock, and where each level of the hash tree sits in a layer file
// (reference/erofs-and-dm-verity-format.md §4.1, §4.2; DESIGN.md §4).
//
// A layer file is laid out as
//
//   [0, hash_offset)            data: the EROFS image, zero-padded to a whole
//                               data block (hash_offset = data_blocks ·
//                               data_block_size)
//   [hash_offset, +512)         veritysetup superblock
//   [hash_start · hbs, end)     hash blocks, top level first, level 0 last
//
// so `veritysetup verify --hash-offset=<hash_offset> IMG IMG <root>` accepts
// the file as it is. Hash block numbers below are always counted in
// hash_block_size units from the start of the file, like the kernel's
// <hash_start_block> (§4.3).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/status.h"

namespace evs::verity {

inline constexpr size_t kSuperblockSize = 512;
inline constexpr size_t kMaxSaltSize = 256;

// Everything that determines the hash tree of one image. The defaults are
// veritysetup's except for the salt, which the caller chooses (see
// RandomSalt()).
struct VerityParams {
  // 1: digest = H(salt ‖ block), digests padded to a power of two (normal).
  // 0: digest = H(block ‖ salt), digests packed (Chrome OS). §4.2.
  uint32_t hash_type = 1;
  HashAlgorithm algorithm = HashAlgorithm::kSha256;
  uint32_t data_block_size = 4096;  // 512..4096, power of two (kernel: ≤ PAGE_SIZE)
  uint32_t hash_block_size = 4096;  // 512..4096, power of two
  uint64_t data_blocks = 0;         // ≥ 1
  std::string salt;                 // raw bytes, at most 256; empty means none ("-")
  std::array<uint8_t, 16> uuid{};   // recorded in the superblock, not hashed

  // OK when every field is in the ranges above; InvalidArgument naming the
  // field otherwise. `what` names the image in the message.
  Status Validate(std::string_view what) const;

  // Offset of the superblock when the tree is appended to the data.
  uint64_t hash_offset() const { return data_blocks * data_block_size; }
};

// 32 random bytes from getrandom(2) (veritysetup's default salt size).
Result<std::string> RandomSalt();

// A UUID for the superblock derived from `seed` (first 16 bytes of
// SHA-256("evs-verity-uuid" ‖ seed), RFC 4122 version-4 bits set), so the
// same layer gives the same bytes.
std::array<uint8_t, 16> DeriveUuid(std::string_view seed);
// "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
std::string UuidToString(const std::array<uint8_t, 16>& uuid);

// Encodes the 512-byte superblock of §4.1 (little-endian). `params` must be
// valid.
std::string EncodeSuperblock(const VerityParams& params);

// Decodes and checks a superblock strictly: signature, version 1, a known
// hash type and algorithm, block sizes, salt size, and that every padding
// byte (including the name and salt tails) is zero, so that a flipped byte
// anywhere but in the UUID is an error. DataLoss naming `what` and the field.
Result<VerityParams> DecodeSuperblock(std::string_view bytes, std::string_view what);

// Where the levels of the tree are, computed as veritysetup and the kernel do
// (§4.2). Pure arithmetic; no I/O.
struct TreeLayout {
  // Computes the layout of the tree appended at `hash_offset` with a
  // superblock (`with_superblock`) or without one (`veritysetup
  // --no-superblock`). InvalidArgument if the parameters are invalid or the
  // tree would need more than 63 levels.
  static Result<TreeLayout> Compute(const VerityParams& params, uint64_t hash_offset,
                                    bool with_superblock = true);

  uint64_t hash_offset = 0;  // superblock offset in the file
  uint32_t hash_block_size = 0;
  uint32_t digest_size = 0;  // 32 (sha256) or 64 (sha512)
  uint32_t digest_slot = 0;  // bytes per entry in a hash block (v1: 2^ceil(log2 d))
  uint32_t fanout_bits = 0;  // log2(entries per hash block)
  uint64_t data_blocks = 0;
  uint64_t hash_start_block = 0;  // first hash block (the top level) in the file
  // Per level, level 0 first (the one whose entries are data-block digests):
  // its first hash block in the file and its number of hash blocks. Empty
  // when data_blocks == 1 (the root is the digest of the data block).
  std::vector<uint64_t> level_start;
  std::vector<uint64_t> level_blocks;
  uint64_t hash_blocks = 0;  // sum of level_blocks
  uint64_t end_offset = 0;   // file size once the tree is written

  uint32_t levels() const { return static_cast<uint32_t>(level_blocks.size()); }
  uint64_t fanout() const { return uint64_t{1} << fanout_bits; }
  // Which level a hash block (file block number) belongs to, or -1.
  int LevelOf(uint64_t hash_block) const;
};

// Hex of the salt as the kernel table and veritysetup print it: "-" for none.
std::string SaltHex(std::string_view salt);
// Inverse of SaltHex; InvalidArgument for bad hex or more than 256 bytes.
Result<std::string> ParseSaltHex(std::string_view hex);

// Everything another part needs to verify or activate one layer file: what
// metadata.db records beside the layer (DESIGN.md §3) and what the manifest
// annotations carry for lazy layers.
struct VerityDescriptor {
  VerityParams params;
  uint64_t hash_offset = 0;
  Digest root_digest;  // algorithm = params.algorithm
};

}  // namespace evs::verity
