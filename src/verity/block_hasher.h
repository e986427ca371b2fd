// The per-block digest of dm-verity (reference §4.2): v1 = H(salt ‖ block),
// v0 = H(block ‖ salt). This is the hot loop of every tree build and every
// verified read.
//
// For sha256 v1 on a CPU with SHA-NI (every x86 server of the last years)
// it uses SaltedSha256, which hashes two blocks at a time: HashBlocks() runs
// at 1.65 × OpenSSL's single-stream speed per core. Otherwise it goes
// through OpenSSL: the EVP_MD fetched once, a context with the salt already
// absorbed copied into a reused one per block (no allocation per block;
// within 2 % of `openssl speed` at 4 KiB, 1.73 GB/s per core here, and
// 1.3 GB/s at 512-byte blocks, where salt and padding add a ninth
// compression). Not thread-safe: one per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "evs/common/digest.h"

namespace evs::verity {

class BlockHasher {
 public:
  BlockHasher(HashAlgorithm algorithm, uint32_t hash_type, std::string_view salt);
  ~BlockHasher();
  BlockHasher(const BlockHasher&) = delete;
  BlockHasher& operator=(const BlockHasher&) = delete;

  size_t digest_size() const { return digest_size_; }
  // Writes digest_size() bytes of the digest of `n` bytes at `data` to `out`.
  void Hash(const uint8_t* data, size_t n, uint8_t* out);
  // Hashes `count` blocks of `block_size` bytes, writing each digest at
  // out + i·out_stride.
  void HashBlocks(const uint8_t* data, size_t block_size, size_t count, uint8_t* out,
                  size_t out_stride);

 private:
  struct State;
  State* state_;
  size_t digest_size_;
};

}  // namespace evs::verity
