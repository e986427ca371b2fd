// The EROFS on-disk format, mirroring the kernel's fs/erofs/erofs_fs.h
// (reference/erofs-and-dm-verity-format.md §1). Only the uncompressed parts
// are described: evs writes FLAT_PLAIN, FLAT_INLINE and CHUNK_BASED inodes and
// reads the same. Everything on disk is little-endian; the structs below are
// byte images of the disk structures (x86-64 and arm64 are little-endian, and
// the static_asserts pin every size), so they are read and written with
// memcpy, never through a cast pointer into a buffer.
//
// Compatibility choices (§0 point 2): the 128-byte superblock (sb_extslots 0),
// no 48BIT/METABOX/NLINK_1/DOT_OMITTED, dirblkbits 0, and i_format bit 4 never
// set, so that every kernel since 5.16 (5.4 for full-mode images without
// chunks) mounts what evs writes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace evs::erofs {

// §1.1: the superblock sits 1024 bytes into the image.
inline constexpr uint64_t kSuperOffset = 1024;
inline constexpr uint32_t kSuperMagic = 0xE0F5E1E2;

// feature_compat bits.
inline constexpr uint32_t kFeatureCompatSbChksum = 0x1;
inline constexpr uint32_t kFeatureCompatMtime = 0x2;
inline constexpr uint32_t kFeatureCompatXattrFilter = 0x4;
// feature_incompat bits. Any bit a kernel does not know makes it refuse the
// image; the reader accepts only the ones it implements.
inline constexpr uint32_t kFeatureIncompatZeroPadding = 0x1;
inline constexpr uint32_t kFeatureIncompatComprCfgs = 0x2;
inline constexpr uint32_t kFeatureIncompatChunkedFile = 0x4;
inline constexpr uint32_t kFeatureIncompatDeviceTable = 0x8;
inline constexpr uint32_t kFeatureIncompatZtailpacking = 0x10;
inline constexpr uint32_t kFeatureIncompatFragments = 0x20;
inline constexpr uint32_t kFeatureIncompatXattrPrefixes = 0x40;
inline constexpr uint32_t kFeatureIncompat48Bit = 0x80;
inline constexpr uint32_t kFeatureIncompatMetabox = 0x100;

// The classic 128-byte superblock (erofs_fs.h before 6.15; the 6.15+ header
// only names fields in what is `reserved` here and in an extension slot that
// sb_extslots 0 leaves out).
struct SuperBlock {
  uint32_t magic;
  uint32_t checksum;  // CRC32C, see SuperBlockChecksum()
  uint32_t feature_compat;
  uint8_t blkszbits;    // 9..12 (the kernel requires ≤ PAGE_SHIFT)
  uint8_t sb_extslots;  // superblock size = 128 + 16 · sb_extslots
  uint16_t root_nid;
  uint64_t inos;        // number of inodes
  uint64_t build_time;  // a.k.a. epoch: the mtime of every compact inode
  uint32_t build_time_nsec;
  uint32_t blocks;         // image size in blocks
  uint32_t meta_blkaddr;   // inode area: inode `nid` is at meta_blkaddr·bs + 32·nid
  uint32_t xattr_blkaddr;  // shared xattr area: entry `id` is at xattr_blkaddr·bs + 4·id
  uint8_t uuid[16];
  uint8_t volume_name[16];
  uint32_t feature_incompat;
  uint16_t available_compr_algs;
  uint16_t extra_devices;  // with kFeatureIncompatDeviceTable
  uint16_t devt_slotoff;   // device table at devt_slotoff · 128
  uint8_t dirblkbits;      // must be 0
  uint8_t xattr_prefix_count;
  uint32_t xattr_prefix_start;
  uint64_t packed_nid;
  uint8_t xattr_filter_reserved;
  uint8_t reserved[23];
};
static_assert(sizeof(SuperBlock) == 128);
static_assert(offsetof(SuperBlock, inos) == 0x10);
static_assert(offsetof(SuperBlock, build_time) == 0x18);
static_assert(offsetof(SuperBlock, blocks) == 0x24);
static_assert(offsetof(SuperBlock, uuid) == 0x30);
static_assert(offsetof(SuperBlock, feature_incompat) == 0x50);
static_assert(offsetof(SuperBlock, extra_devices) == 0x56);
static_assert(offsetof(SuperBlock, dirblkbits) == 0x5A);
static_assert(offsetof(SuperBlock, packed_nid) == 0x60);

// §1.3: one slot of the device table (128 bytes).
struct DeviceSlot {
  uint8_t tag[64];
  uint32_t blocks;   // size of the device in blocks
  uint32_t uniaddr;  // flatdev: where the device starts in the primary, in blocks
  uint8_t reserved[56];
};
static_assert(sizeof(DeviceSlot) == 128);
inline constexpr uint32_t kDeviceSlotSize = 128;

// §1.2/§1.3: i_format = version bit 0 | data layout << 1.
inline constexpr uint16_t kInodeLayoutCompact = 0;
inline constexpr uint16_t kInodeLayoutExtended = 1;
enum DataLayout : uint16_t {
  kFlatPlain = 0,
  kCompressedFull = 1,
  kFlatInline = 2,
  kCompressedCompact = 3,
  kChunkBased = 4,
};
// Bits a kernel before 6.15 accepts in i_format (EROFS_I_ALL of that time).
inline constexpr uint16_t kInodeFormatAllOld = 0x0F;
inline constexpr uint16_t MakeInodeFormat(uint16_t version, DataLayout layout) {
  return static_cast<uint16_t>(version | (layout << 1));
}

// Chunk format (i_u.c.format of CHUNK_BASED inodes).
inline constexpr uint16_t kChunkFormatBlkbitsMask = 0x1F;
inline constexpr uint16_t kChunkFormatIndexes = 0x20;
inline constexpr uint16_t kChunkFormat48Bit = 0x40;

// 32-byte compact inode. Its mtime is the superblock's build_time.
struct InodeCompact {
  uint16_t i_format;
  uint16_t i_xattr_icount;
  uint16_t i_mode;
  uint16_t i_nlink;
  uint32_t i_size;
  uint32_t i_mtime;  // 6.15+: seconds added to build_time; evs writes 0
  uint32_t i_u;      // startblk (flat), rdev (devices), chunk format (chunked)
  uint32_t i_ino;    // only for 32-bit stat
  uint16_t i_uid;
  uint16_t i_gid;
  uint32_t i_reserved;
};
static_assert(sizeof(InodeCompact) == 32);

// 64-byte extended inode.
struct InodeExtended {
  uint16_t i_format;
  uint16_t i_xattr_icount;
  uint16_t i_mode;
  uint16_t i_reserved;  // 6.15+: i_nb (unused without 48BIT)
  uint64_t i_size;
  uint32_t i_u;
  uint32_t i_ino;
  uint32_t i_uid;
  uint32_t i_gid;
  uint64_t i_mtime;  // two's complement: mtimes before 1970 are negative
  uint32_t i_mtime_nsec;
  uint32_t i_nlink;
  uint8_t i_reserved2[16];
};
static_assert(sizeof(InodeExtended) == 64);
static_assert(offsetof(InodeExtended, i_mtime) == 0x20);

inline constexpr uint32_t kInodeSlotSize = 32;  // nids count 32-byte slots

// §1.5: the inline xattr area begins with this header, then h_shared_count
// le32 shared xattr ids, then entries.
struct XattrIbodyHeader {
  uint32_t h_name_filter;  // only read with kFeatureCompatXattrFilter; evs writes 0
  uint8_t h_shared_count;
  uint8_t h_reserved2[7];
};
static_assert(sizeof(XattrIbodyHeader) == 12);

// An xattr entry (inline and shared), followed by the name suffix and the
// value, padded to 4 bytes.
struct XattrEntry {
  uint8_t e_name_len;
  uint8_t e_name_index;
  uint16_t e_value_size;
};
static_assert(sizeof(XattrEntry) == 4);

inline constexpr uint8_t kXattrIndexUser = 1;
inline constexpr uint8_t kXattrIndexPosixAclAccess = 2;
inline constexpr uint8_t kXattrIndexPosixAclDefault = 3;
inline constexpr uint8_t kXattrIndexTrusted = 4;
inline constexpr uint8_t kXattrIndexLustre = 5;
inline constexpr uint8_t kXattrIndexSecurity = 6;
inline constexpr uint8_t kXattrLongPrefix = 0x80;

// Size of the inline xattr area for an i_xattr_icount (erofs_xattr_ibody_size).
inline constexpr uint32_t XattrIbodySize(uint16_t icount) {
  return icount == 0 ? 0 : 12 + 4 * (static_cast<uint32_t>(icount) - 1);
}
inline constexpr uint32_t XattrAlign(uint32_t n) { return (n + 3) & ~3u; }

// §1.3: one chunk index of a CHUNK_BASED inode with kChunkFormatIndexes.
struct ChunkIndex {
  uint16_t startblk_hi;  // 0 without 48BIT
  uint16_t device_id;    // 0: primary; N: device table slot N-1
  uint32_t startblk_lo;  // kNullAddr: a hole
};
static_assert(sizeof(ChunkIndex) == 8);
inline constexpr uint32_t kNullAddr = 0xFFFFFFFF;

// §1.4: directory blocks start with an array of these; nameoff of the first
// entry / 12 is the entry count of the block.
struct Dirent {
  uint64_t nid;
  uint16_t nameoff;
  uint8_t file_type;
  uint8_t reserved;
} __attribute__((packed));
static_assert(sizeof(Dirent) == 12);

inline constexpr uint32_t kNameLen = 255;

// Dirent file types (the kernel's FT_*).
enum FileType : uint8_t {
  kFtUnknown = 0,
  kFtRegular = 1,
  kFtDirectory = 2,
  kFtCharDevice = 3,
  kFtBlockDevice = 4,
  kFtFifo = 5,
  kFtSocket = 6,
  kFtSymlink = 7,
};

// §1.2: rdev as the kernel's new_encode_dev()/new_decode_dev().
inline constexpr uint32_t EncodeDev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12);
}
inline constexpr uint32_t DevMajor(uint32_t dev) { return (dev & 0xfff00) >> 8; }
inline constexpr uint32_t DevMinor(uint32_t dev) { return (dev & 0xff) | ((dev >> 12) & 0xfff00); }

}  // namespace evs::erofs
