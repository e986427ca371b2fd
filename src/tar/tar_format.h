// The tar header block and pax records, as bytes (internal to src/tar).
//
// Layout: POSIX.1-2017 "pax" utility, "ustar Interchange Format" (the header
// block), GNU tar manual "Basic Tar Format" (the GNU magic, base-256 numbers,
// 'L'/'K' long names), POSIX "pax Extended Header" (records).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evs/common/status.h"

namespace evs::tar::format {

inline constexpr size_t kBlockSize = 512;

struct Field {
  size_t offset;
  size_t size;
};

inline constexpr Field kName{0, 100};
inline constexpr Field kMode{100, 8};
inline constexpr Field kUid{108, 8};
inline constexpr Field kGid{116, 8};
inline constexpr Field kSize{124, 12};
inline constexpr Field kMtime{136, 12};
inline constexpr Field kChecksum{148, 8};
inline constexpr size_t kTypeflagOffset = 156;
inline constexpr Field kLinkname{157, 100};
inline constexpr Field kMagic{257, 6};
inline constexpr Field kVersion{263, 2};
inline constexpr Field kUname{265, 32};
inline constexpr Field kGname{297, 32};
inline constexpr Field kDevmajor{329, 8};
inline constexpr Field kDevminor{337, 8};
inline constexpr Field kPrefix{345, 155};  // POSIX ustar only; GNU keeps atime etc. here

// Which of the three header layouts a block uses: POSIX ustar ("ustar\0" +
// "00": name = prefix/name), GNU ("ustar  \0": no prefix), or v7 (no magic:
// no uname, gname, device numbers or prefix).
enum class Dialect { kV7, kUstar, kGnu };
Dialect DetectDialect(const uint8_t* block);

// The NUL-terminated string in a field (the whole field if it has no NUL).
std::string_view FieldString(const uint8_t* block, Field field);

// A numeric field: octal digits (leading spaces allowed, ended by NUL, space
// or the end of the field; an empty field is 0), or GNU base-256 when the
// first byte has its top bit set (big-endian two's complement of the other
// bits; bit 0x40 of the first byte is the sign). InvalidArgument with a short
// reason for a bad digit or a value outside int64.
Result<int64_t> ParseNumber(const uint8_t* block, Field field);

// True if the stored checksum matches the sum of the block's bytes with the
// checksum field taken as spaces, summed as unsigned or as signed chars (old
// tars used signed). InvalidArgument if the checksum field is not a number.
Result<bool> ChecksumMatches(const uint8_t* block);

bool IsZeroBlock(const uint8_t* block);

// Decimal unsigned number, as pax records carry ("size", "uid", …). No sign,
// no spaces, no empty string; InvalidArgument beyond `max`.
Result<uint64_t> ParseDecimal(std::string_view text, uint64_t max);

// A pax time: "-?digits[.digits]" → whole seconds (floored) and nanoseconds
// (digits beyond nine are dropped). "-1.5" is -2 s + 500000000 ns.
Status ParsePaxTime(std::string_view text, int64_t* seconds, uint32_t* nanoseconds);

// Splits extended header data into "keyword=value" records, each stored as
// "<length> <keyword>=<value>\n" where <length> counts the whole record.
// Trailing NUL padding is tolerated. A record whose length lies (not a number,
// too short, past the end, not ending in a newline) or has no '=' or an empty
// keyword is InvalidArgument naming its offset: `data_offset` + its position.
Status ParsePaxRecords(std::string_view data, uint64_t data_offset,
                       std::vector<std::pair<std::string, std::string>>* records);

// RFC 4648 §4 base64, padding optional (libarchive writes none). nullopt-like
// failure as InvalidArgument.
Result<std::string> DecodeBase64(std::string_view text);
// %XX decoding of a LIBARCHIVE.xattr name (libarchive url_encode()).
Result<std::string> DecodePercent(std::string_view text);

// A name for messages: printable ASCII and UTF-8 kept, other bytes as \xNN,
// long names shortened in the middle.
std::string QuoteName(std::string_view name);

}  // namespace evs::tar::format
