#include "crc32c.h"

#include <array>
#include <cstring>

#include "evs/erofs/format.h"

namespace evs::erofs {
namespace {

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

}  // namespace

uint32_t Crc32cUpdate(uint32_t crc, const void* data, size_t n) {
  // A byte at a time: it runs over at most 3 KiB per image.
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

size_t SuperBlockChecksumLength(uint32_t block_size) {
  return block_size > kSuperOffset ? block_size - kSuperOffset : block_size;
}

uint32_t SuperBlockChecksum(const uint8_t* image, uint32_t block_size) {
  const uint8_t* sb = image + kSuperOffset;
  const size_t len = SuperBlockChecksumLength(block_size);
  static constexpr uint8_t kZero[4] = {0, 0, 0, 0};
  constexpr size_t kFieldOffset = offsetof(SuperBlock, checksum);
  uint32_t crc = Crc32cUpdate(0xFFFFFFFFu, sb, kFieldOffset);
  crc = Crc32cUpdate(crc, kZero, sizeof kZero);
  return Crc32cUpdate(crc, sb + kFieldOffset + 4, len - kFieldOffset - 4);
}

}  // namespace evs::erofs
