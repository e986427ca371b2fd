// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) as EROFS uses it for
// the superblock checksum: the raw register, without the final inversion
// (reference/erofs-and-dm-verity-format.md §1.1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace evs::erofs {

// Continues a CRC32C register `crc` over `n` bytes. Start with 0xFFFFFFFF;
// the EROFS checksum is the returned value as it is (no XOR at the end).
uint32_t Crc32cUpdate(uint32_t crc, const void* data, size_t n);

// The superblock checksum of an image whose first bytes are `image` (at least
// kSuperOffset + ChecksumLength(block_size) bytes): CRC32C over
// [1024, 1024 + len) with the checksum field taken as zero, where len is
// block_size − 1024 for blocks larger than 1024 bytes and block_size
// otherwise (erofs-utils lib/super.c, erofs_enable_sb_chksum).
size_t SuperBlockChecksumLength(uint32_t block_size);
uint32_t SuperBlockChecksum(const uint8_t* image, uint32_t block_size);

}  // namespace evs::erofs
