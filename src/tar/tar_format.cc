#include "tar_format.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace evs::tar::format {

Dialect DetectDialect(const uint8_t* block) {
  const char* magic = reinterpret_cast<const char*>(block + kMagic.offset);
  if (std::memcmp(magic, "ustar\0", 6) == 0) return Dialect::kUstar;
  // GNU: "ustar " followed by version " \0".
  if (std::memcmp(magic, "ustar ", 6) == 0) return Dialect::kGnu;
  return Dialect::kV7;
}

std::string_view FieldString(const uint8_t* block, Field field) {
  const char* p = reinterpret_cast<const char*>(block + field.offset);
  const void* nul = std::memchr(p, 0, field.size);
  size_t n = nul ? static_cast<size_t>(static_cast<const char*>(nul) - p) : field.size;
  return std::string_view(p, n);
}

Result<int64_t> ParseNumber(const uint8_t* block, Field field) {
  const uint8_t* p = block + field.offset;
  const uint8_t* end = p + field.size;
  if (*p & 0x80) {
    // GNU base-256. Work on the magnitude's bits: for a negative number take
    // the complement, so that both signs accumulate a non-negative value.
    bool negative = (*p & 0x40) != 0;
    uint8_t flip = negative ? 0xff : 0x00;
    uint64_t v = (*p ^ flip) & 0x3f;
    for (++p; p < end; ++p) {
      if (v >> 55) return InvalidArgumentError("base-256 number overflows 64 bits");
      v = (v << 8) | static_cast<uint8_t>(*p ^ flip);
    }
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidArgumentError("base-256 number overflows 64 bits");
    }
    // Negative: value = -(complement + 1).
    return negative ? -static_cast<int64_t>(v) - 1 : static_cast<int64_t>(v);
  }
  while (p < end && *p == ' ') ++p;
  uint64_t v = 0;
  for (; p < end && *p >= '0' && *p <= '7'; ++p) {
    if (v >> 60) return InvalidArgumentError("octal number overflows 64 bits");
    v = v * 8 + (*p - '0');
  }
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return InvalidArgumentError("octal number overflows 64 bits");
  }
  // Terminated by NUL or space (POSIX ustar), or by the end of the field.
  if (p < end && *p != 0 && *p != ' ') {
    return InvalidArgumentError("invalid character 0x", "0123456789abcdef"[*p >> 4],
                                "0123456789abcdef"[*p & 15], " in an octal number");
  }
  return static_cast<int64_t>(v);
}

Result<bool> ChecksumMatches(const uint8_t* block) {
  EVS_ASSIGN_OR_RETURN(int64_t stored, ParseNumber(block, kChecksum));
  int64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) {
    uint8_t c = (i >= kChecksum.offset && i < kChecksum.offset + kChecksum.size) ? ' ' : block[i];
    unsigned_sum += c;
    signed_sum += static_cast<int8_t>(c);
  }
  return stored == unsigned_sum || stored == signed_sum;
}

bool IsZeroBlock(const uint8_t* block) {
  static const uint8_t kZero[kBlockSize] = {};
  return std::memcmp(block, kZero, kBlockSize) == 0;
}

Result<uint64_t> ParseDecimal(std::string_view text, uint64_t max) {
  if (text.empty()) return InvalidArgumentError("empty number");
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return InvalidArgumentError("not a decimal number");
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (max - d) / 10) return InvalidArgumentError("number out of range");
    v = v * 10 + d;
  }
  return v;
}

Status ParsePaxTime(std::string_view text, int64_t* seconds, uint32_t* nanoseconds) {
  bool negative = !text.empty() && text[0] == '-';
  if (negative) text.remove_prefix(1);
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  EVS_ASSIGN_OR_RETURN(
      uint64_t s, ParseDecimal(whole, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
  uint32_t ns = 0;
  for (size_t i = 0; i < frac.size(); ++i) {
    char c = frac[i];
    if (c < '0' || c > '9') return InvalidArgumentError("not a decimal time");
    if (i < 9) ns = ns * 10 + static_cast<uint32_t>(c - '0');
  }
  for (size_t i = frac.size(); i < 9; ++i) ns *= 10;
  if (!negative) {
    *seconds = static_cast<int64_t>(s);
    *nanoseconds = ns;
  } else if (ns == 0) {
    *seconds = -static_cast<int64_t>(s);
    *nanoseconds = 0;
  } else {
    // -s.f = -(s+1) + (1 - .f)
    *seconds = -static_cast<int64_t>(s) - 1;
    *nanoseconds = 1000000000u - ns;
  }
  return OkStatus();
}

Status ParsePaxRecords(std::string_view data, uint64_t data_offset,
                       std::vector<std::pair<std::string, std::string>>* records) {
  size_t pos = 0;
  while (pos < data.size()) {
    if (data[pos] == '\0') {
      // Some writers pad the extended header with NULs.
      if (data.find_first_not_of('\0', pos) == std::string_view::npos) break;
    }
    uint64_t at = data_offset + pos;
    size_t space = data.find(' ', pos);
    if (space == std::string_view::npos || space == pos || space - pos > 20) {
      return InvalidArgumentError("malformed pax record at offset ", at, ": no length");
    }
    auto length = ParseDecimal(data.substr(pos, space - pos), data.size() - pos);
    if (!length.ok()) {
      return InvalidArgumentError("malformed pax record at offset ", at, ": length \"",
                                  QuoteName(data.substr(pos, space - pos)),
                                  "\" is not a number within the header");
    }
    // The shortest record "<len> k=\n" has the length digits, a space, a
    // keyword of one byte, '=' and the newline.
    if (*length < (space - pos) + 4) {
      return InvalidArgumentError("malformed pax record at offset ", at, ": length ", *length,
                                  " is too short");
    }
    std::string_view record = data.substr(pos, *length);
    if (record.back() != '\n') {
      return InvalidArgumentError("malformed pax record at offset ", at, ": length ", *length,
                                  " does not end at a newline");
    }
    std::string_view body = record.substr(space - pos + 1, record.size() - (space - pos + 1) - 1);
    size_t eq = body.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return InvalidArgumentError("malformed pax record at offset ", at, ": no keyword=value");
    }
    records->emplace_back(std::string(body.substr(0, eq)), std::string(body.substr(eq + 1)));
    pos += *length;
  }
  return OkStatus();
}

Result<std::string> DecodeBase64(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return InvalidArgumentError("invalid base64");
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be a valid tail: 2 or 4 bits of zero.
  if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0) return InvalidArgumentError("invalid base64");
  return out;
}

Result<std::string> DecodePercent(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return InvalidArgumentError("invalid %-escape");
    int hi = hex(text[i + 1]);
    int lo = hex(text[i + 2]);
    if (hi < 0 || lo < 0) return InvalidArgumentError("invalid %-escape");
    out.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return out;
}

std::string QuoteName(std::string_view name) {
  constexpr size_t kKeep = 120;
  std::string out;
  auto append = [&](std::string_view part) {
    for (unsigned char c : part) {
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c >= 0x20 && c != 0x7f) {
        out.push_back(static_cast<char>(c));  // printable ASCII or UTF-8 bytes
      } else {
        out += "\\x";
        out.push_back("0123456789abcdef"[c >> 4]);
        out.push_back("0123456789abcdef"[c & 15]);
      }
    }
  };
  if (name.size() <= 2 * kKeep + 16) {
    append(name);
  } else {
    append(name.substr(0, kKeep));
    out += StrCat("…(", name.size() - 2 * kKeep, " bytes)…");
    append(name.substr(name.size() - kKeep));
  }
  return out;
}

}  // namespace evs::tar::format
