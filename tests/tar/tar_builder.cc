#include "tar_builder.h"

#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>

#include "evs/common/digest.h"

namespace evs::tar::testing {

namespace {

void PutField(std::string& block, size_t offset, size_t size, std::string_view value) {
  std::memcpy(block.data() + offset, value.data(), std::min(size, value.size()));
}

void PutOctal(std::string& block, size_t offset, size_t size, uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(size - 1),
                static_cast<unsigned long long>(value));
  PutField(block, offset, size - 1, buf);
}

}  // namespace

std::string Base256(int64_t value, size_t size) {
  std::string out(size, '\0');
  uint64_t v = static_cast<uint64_t>(value);
  for (size_t i = size; i-- > 0;) {
    out[i] = static_cast<char>(v & 0xff);
    v = value < 0 ? (v >> 8) | (uint64_t{0xff} << 56) : v >> 8;
  }
  out[0] = static_cast<char>(value < 0 ? 0xff : 0x80);
  return out;
}

std::string Header(const HeaderSpec& s) {
  std::string b(512, '\0');
  PutField(b, 0, 100, s.name);
  PutOctal(b, 100, 8, s.mode);
  PutOctal(b, 108, 8, s.uid);
  PutOctal(b, 116, 8, s.gid);
  PutOctal(b, 124, 12, s.size);
  PutOctal(b, 136, 12, static_cast<uint64_t>(s.mtime < 0 ? 0 : s.mtime));
  b[156] = s.type;
  PutField(b, 157, 100, s.linkname);
  if (s.magic == HeaderSpec::kUstar) {
    PutField(b, 257, 6, std::string_view("ustar\0", 6));
    PutField(b, 263, 2, "00");
  } else if (s.magic == HeaderSpec::kGnu) {
    PutField(b, 257, 8, std::string_view("ustar  \0", 8));
  }
  if (s.magic != HeaderSpec::kV7) {
    PutField(b, 265, 32, s.uname);
    PutField(b, 297, 32, s.gname);
    PutOctal(b, 329, 8, s.devmajor);
    PutOctal(b, 337, 8, s.devminor);
  }
  if (s.magic == HeaderSpec::kUstar) PutField(b, 345, 155, s.prefix);
  for (const auto& [field, image] : s.raw) {
    size_t off = field == "mode"       ? 100
                 : field == "uid"      ? 108
                 : field == "gid"      ? 116
                 : field == "size"     ? 124
                 : field == "mtime"    ? 136
                 : field == "devmajor" ? 329
                 : field == "devminor" ? 337
                 : field == "checksum" ? 148
                                       : 0;
    size_t len = (field == "size" || field == "mtime") ? 12 : 8;
    std::memset(b.data() + off, 0, len);
    PutField(b, off, len, image);
  }
  std::memset(b.data() + 148, ' ', 8);
  int64_t sum = 0;
  for (unsigned char c : b) sum += s.signed_checksum ? static_cast<signed char>(c) : c;
  sum += s.checksum_delta;
  char buf[16];
  std::snprintf(buf, sizeof buf, "%06llo", static_cast<unsigned long long>(sum));
  if (sum < 0) std::snprintf(buf, sizeof buf, "%06llo", 0ull);  // not representable
  PutField(b, 148, 6, buf);
  b[154] = '\0';
  b[155] = ' ';
  return b;
}

std::string PaxRecord(std::string_view key, std::string_view value) {
  std::string body = " ";
  body.append(key);
  body.push_back('=');
  body.append(value);
  body.push_back('\n');
  size_t len = body.size() + 1;
  while (std::to_string(len).size() + body.size() != len) ++len;
  return std::to_string(len) + body;
}

std::string Padded(std::string_view data) {
  std::string out(data);
  out.resize((out.size() + 511) / 512 * 512, '\0');
  return out;
}

std::string Member(HeaderSpec spec, std::string_view data) {
  if (!data.empty()) spec.size = data.size();
  return Header(spec) + Padded(data);
}

std::string PaxHeader(std::string_view records, char type) {
  HeaderSpec s;
  s.name = "PaxHeaders/x";
  s.type = type;
  s.size = records.size();
  return Header(s) + Padded(records);
}

std::string GnuLongHeader(char type, std::string_view name) {
  HeaderSpec s;
  s.name = "././@LongLink";
  s.type = type;
  s.magic = HeaderSpec::kGnu;
  std::string data(name);
  data.push_back('\0');
  s.size = data.size();
  return Header(s) + Padded(data);
}

std::string EndOfArchive() { return std::string(1024, '\0'); }

Result<std::vector<ReadEntry>> ReadTar(std::string archive, TarReaderOptions options) {
  StringSource source(std::move(archive));
  TarReader reader(&source, std::move(options));
  std::vector<ReadEntry> out;
  for (;;) {
    EVS_ASSIGN_OR_RETURN(const TarHeader* h, reader.Next());
    if (h == nullptr) return out;
    ReadEntry e{*h, {}};
    char buf[700];  // odd size: reads straddle blocks
    for (;;) {
      EVS_ASSIGN_OR_RETURN(size_t n, reader.ReadData(buf, sizeof buf));
      if (n == 0) break;
      e.data.append(buf, n);
    }
    out.push_back(std::move(e));
  }
}

Result<std::vector<ReadLayerEntry>> ReadLayer(std::string archive, LayerReaderOptions options) {
  StringSource source(std::move(archive));
  LayerReader reader(&source, std::move(options));
  std::vector<ReadLayerEntry> out;
  for (;;) {
    EVS_ASSIGN_OR_RETURN(const LayerEntry* e, reader.Next());
    if (e == nullptr) return out;
    ReadLayerEntry r{*e, {}};
    for (;;) {
      EVS_ASSIGN_OR_RETURN(std::span<const uint8_t> c, reader.data()->ReadChunk(1000));
      if (c.empty()) break;
      r.data.append(reinterpret_cast<const char*>(c.data()), c.size());
    }
    out.push_back(std::move(r));
  }
}

std::string Gzip(std::string_view data, int level) {
  z_stream z{};
  deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string Zstd(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  out.resize(ZSTD_isError(n) ? 0 : n);
  return out;
}

std::string Sha256Hex(std::string_view data) { return Digest::Sha256Of(data).hex(); }

}  // namespace evs::tar::testing
