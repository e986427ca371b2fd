#include "evs/verity/format.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace evs::verity {
namespace {

bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

uint32_t CeilLog2(uint64_t x) {
  uint32_t bits = 0;
  while ((uint64_t{1} << bits) < x) ++bits;
  return bits;
}

uint32_t FloorLog2(uint64_t x) {
  uint32_t bits = 0;
  while ((x >> (bits + 1)) != 0) ++bits;
  return bits;
}

void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Superblock field offsets (§4.1, cryptsetup lib/verity/verity.c struct
// verity_sb).
constexpr size_t kSignatureOff = 0;
constexpr size_t kVersionOff = 8;
constexpr size_t kHashTypeOff = 12;
constexpr size_t kUuidOff = 16;
constexpr size_t kAlgorithmOff = 32;
constexpr size_t kAlgorithmSize = 32;
constexpr size_t kDataBlockSizeOff = 64;
constexpr size_t kHashBlockSizeOff = 68;
constexpr size_t kDataBlocksOff = 72;
constexpr size_t kSaltSizeOff = 80;
constexpr size_t kPad1Off = 82;
constexpr size_t kSaltOff = 88;
constexpr size_t kPad2Off = kSaltOff + kMaxSaltSize;  // 344
constexpr char kSignature[8] = {'v', 'e', 'r', 'i', 't', 'y', 0, 0};

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

}  // namespace

Status VerityParams::Validate(std::string_view what) const {
  if (hash_type > 1) {
    return InvalidArgumentError(what, ": verity hash type ", hash_type, " (want 0 or 1)");
  }
  if (!IsPowerOfTwo(data_block_size) || data_block_size < 512 || data_block_size > 4096) {
    return InvalidArgumentError(what, ": verity data block size ", data_block_size,
                                " (want a power of two from 512 to 4096)");
  }
  if (!IsPowerOfTwo(hash_block_size) || hash_block_size < 512 || hash_block_size > 4096) {
    return InvalidArgumentError(what, ": verity hash block size ", hash_block_size,
                                " (want a power of two from 512 to 4096)");
  }
  if (data_blocks == 0) return InvalidArgumentError(what, ": verity over zero data blocks");
  // Keep the data and its tree addressable with 64-bit byte offsets (the
  // tree adds at most a third of the data): 2^62 bytes of data at most.
  if (data_blocks > ((uint64_t{1} << 62) / data_block_size)) {
    return InvalidArgumentError(what, ": verity data block count ", data_blocks, " overflows");
  }
  if (salt.size() > kMaxSaltSize) {
    return InvalidArgumentError(what, ": verity salt of ", salt.size(), " bytes (at most ",
                                kMaxSaltSize, ")");
  }
  return OkStatus();
}

Result<std::string> RandomSalt() {
  std::string salt(32, '\0');
  size_t got = 0;
  while (got < salt.size()) {
    ssize_t n = ::getrandom(salt.data() + got, salt.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "getrandom for verity salt");
    }
    got += static_cast<size_t>(n);
  }
  return salt;
}

std::array<uint8_t, 16> DeriveUuid(std::string_view seed) {
  Hasher h(HashAlgorithm::kSha256);
  h.Update("evs-verity-uuid");
  h.Update(seed);
  std::string d = h.FinishBytes();
  std::array<uint8_t, 16> uuid;
  std::memcpy(uuid.data(), d.data(), uuid.size());
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);  // version 4
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return uuid;
}

std::string UuidToString(const std::array<uint8_t, 16>& uuid) {
  std::string hex = HexEncode(std::string_view(reinterpret_cast<const char*>(uuid.data()), 16));
  return StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                hex.substr(16, 4), "-", hex.substr(20, 12));
}

std::string EncodeSuperblock(const VerityParams& params) {
  std::string out(kSuperblockSize, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p + kSignatureOff, kSignature, sizeof kSignature);
  PutLe32(p + kVersionOff, 1);
  PutLe32(p + kHashTypeOff, params.hash_type);
  std::memcpy(p + kUuidOff, params.uuid.data(), params.uuid.size());
  std::string_view name = HashAlgorithmName(params.algorithm);
  std::memcpy(p + kAlgorithmOff, name.data(), name.size());
  PutLe32(p + kDataBlockSizeOff, params.data_block_size);
  PutLe32(p + kHashBlockSizeOff, params.hash_block_size);
  PutLe64(p + kDataBlocksOff, params.data_blocks);
  p[kSaltSizeOff] = static_cast<uint8_t>(params.salt.size());
  p[kSaltSizeOff + 1] = static_cast<uint8_t>(params.salt.size() >> 8);
  std::memcpy(p + kSaltOff, params.salt.data(), params.salt.size());
  return out;
}

Result<VerityParams> DecodeSuperblock(std::string_view bytes, std::string_view what) {
  if (bytes.size() < kSuperblockSize) {
    return DataLossError(what, ": verity superblock truncated to ", bytes.size(), " bytes");
  }
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (std::memcmp(p + kSignatureOff, kSignature, sizeof kSignature) != 0) {
    return DataLossError(what, ": no verity superblock (bad signature)");
  }
  uint32_t version = GetLe32(p + kVersionOff);
  if (version != 1) return DataLossError(what, ": verity superblock version ", version);
  VerityParams params;
  params.hash_type = GetLe32(p + kHashTypeOff);
  std::memcpy(params.uuid.data(), p + kUuidOff, params.uuid.size());
  const char* name = reinterpret_cast<const char*>(p + kAlgorithmOff);
  size_t name_len = strnlen(name, kAlgorithmSize);
  if (name_len == kAlgorithmSize) {
    return DataLossError(what, ": verity superblock algorithm name not terminated");
  }
  if (!AllZero(p + kAlgorithmOff + name_len, kAlgorithmSize - name_len)) {
    return DataLossError(what, ": verity superblock algorithm field has bytes after its name");
  }
  auto algorithm = ParseHashAlgorithm(std::string_view(name, name_len));
  if (!algorithm.ok())
    return DataLossError(what, ": verity superblock: ", algorithm.status().message());
  params.algorithm = *algorithm;
  params.data_block_size = GetLe32(p + kDataBlockSizeOff);
  params.hash_block_size = GetLe32(p + kHashBlockSizeOff);
  params.data_blocks = GetLe64(p + kDataBlocksOff);
  size_t salt_size = p[kSaltSizeOff] | (size_t{p[kSaltSizeOff + 1]} << 8);
  if (salt_size > kMaxSaltSize) {
    return DataLossError(what, ": verity superblock salt size ", salt_size);
  }
  params.salt.assign(reinterpret_cast<const char*>(p + kSaltOff), salt_size);
  if (!AllZero(p + kPad1Off, kSaltOff - kPad1Off) ||
      !AllZero(p + kSaltOff + salt_size, kMaxSaltSize - salt_size) ||
      !AllZero(p + kPad2Off, kSuperblockSize - kPad2Off)) {
    return DataLossError(what, ": verity superblock has non-zero padding");
  }
  Status valid = params.Validate(what);
  if (!valid.ok()) return Status(Code::kDataLoss, valid.message());
  return params;
}

Result<TreeLayout> TreeLayout::Compute(const VerityParams& params, uint64_t hash_offset,
                                       bool with_superblock) {
  EVS_RETURN_IF_ERROR(params.Validate("verity tree"));
  TreeLayout t;
  t.hash_offset = hash_offset;
  t.hash_block_size = params.hash_block_size;
  t.data_blocks = params.data_blocks;
  t.digest_size = static_cast<uint32_t>(HashSize(params.algorithm));
  // §4.2: v1 pads each digest to a power of two, v0 packs them; either way
  // a hash block holds 2^floor(log2(hbs / d)) entries.
  t.digest_slot = params.hash_type == 1 ? (1u << CeilLog2(t.digest_size)) : t.digest_size;
  t.fanout_bits = FloorLog2(params.hash_block_size / t.digest_size);
  uint64_t hbs = params.hash_block_size;
  uint64_t sb = with_superblock ? kSuperblockSize : 0;
  t.hash_start_block = (hash_offset + sb + hbs - 1) / hbs;

  uint32_t levels = 0;
  while (t.fanout_bits * levels < 64 && ((params.data_blocks - 1) >> (t.fanout_bits * levels))) {
    ++levels;
  }
  if (levels > 63) return InvalidArgumentError("verity tree of ", levels, " levels (at most 63)");
  t.level_start.assign(levels, 0);
  t.level_blocks.assign(levels, 0);
  for (uint32_t i = 0; i < levels; ++i) {
    uint32_t shift = (i + 1) * t.fanout_bits;
    uint64_t n = shift >= 64 ? 1 : ((params.data_blocks + (uint64_t{1} << shift) - 1) >> shift);
    t.level_blocks[i] = n;
  }
  // Levels are stored top first (§4.2, "stored a depth at a time starting
  // from the root").
  uint64_t pos = t.hash_start_block;
  for (int i = static_cast<int>(levels) - 1; i >= 0; --i) {
    t.level_start[i] = pos;
    pos += t.level_blocks[i];
  }
  t.hash_blocks = pos - t.hash_start_block;
  t.end_offset = pos * hbs;
  return t;
}

int TreeLayout::LevelOf(uint64_t hash_block) const {
  for (uint32_t i = 0; i < levels(); ++i) {
    if (hash_block >= level_start[i] && hash_block < level_start[i] + level_blocks[i]) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

std::string SaltHex(std::string_view salt) { return salt.empty() ? "-" : HexEncode(salt); }

Result<std::string> ParseSaltHex(std::string_view hex) {
  if (hex == "-" || hex.empty()) return std::string();
  auto raw = HexDecode(hex);
  if (!raw.ok()) return InvalidArgumentError("salt \"", hex, "\" is not hex");
  if (raw->size() > kMaxSaltSize) {
    return InvalidArgumentError("salt of ", raw->size(), " bytes (at most ", kMaxSaltSize, ")");
  }
  return *raw;
}

}  // namespace evs::verity
