// Hand-built tar archives for the tar tests: headers GNU tar would never
// write (bad checksums, lying pax records, base-256 fields, sparse types).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/status.h"
#include "evs/tar/layer_reader.h"
#include "evs/tar/tar_reader.h"

namespace evs::tar::testing {

// Fields of one header block. Numeric fields are written as octal unless a
// raw field image is given (e.g. a base-256 encoding).
struct HeaderSpec {
  std::string name;
  char type = '0';
  uint64_t mode = 0644;
  uint64_t uid = 0;
  uint64_t gid = 0;
  uint64_t size = 0;
  int64_t mtime = 0;
  std::string linkname;
  std::string uname;
  std::string gname;
  uint64_t devmajor = 0;
  uint64_t devminor = 0;
  std::string prefix;  // POSIX ustar only
  enum Magic { kUstar, kGnu, kV7 } magic = kUstar;
  // Raw images replacing a numeric field ("size", "uid", "gid", "mtime",
  // "mode", "devmajor"); written as is, padded with NULs to the field.
  std::vector<std::pair<std::string, std::string>> raw;
  bool signed_checksum = false;  // store the signed-char sum instead
  int checksum_delta = 0;        // corrupt the stored checksum
};

// One 512-byte header block.
std::string Header(const HeaderSpec& spec);
// "<len> key=value\n" with the right length.
std::string PaxRecord(std::string_view key, std::string_view value);
// `data` padded with NULs to a multiple of 512.
std::string Padded(std::string_view data);
// A header for `spec` (size set from `data`) followed by the padded data.
std::string Member(HeaderSpec spec, std::string_view data = "");
// A pax 'x' (or 'g') header carrying `records`.
std::string PaxHeader(std::string_view records, char type = 'x');
// GNU 'L' / 'K' header carrying `name`.
std::string GnuLongHeader(char type, std::string_view name);
// Two zero blocks.
std::string EndOfArchive();
// Base-256 image of `value` for a field of `size` bytes.
std::string Base256(int64_t value, size_t size);

// Everything a TarReader reports for one entry, data included.
struct ReadEntry {
  TarHeader header;
  std::string data;
};
// Reads a whole archive; the status is the first error.
Result<std::vector<ReadEntry>> ReadTar(std::string archive, TarReaderOptions options = {});

struct ReadLayerEntry {
  LayerEntry entry;
  std::string data;
};
Result<std::vector<ReadLayerEntry>> ReadLayer(std::string archive, LayerReaderOptions options = {});

// gzip / zstd of `data` in memory (zlib, libzstd).
std::string Gzip(std::string_view data, int level = 6);
std::string Zstd(std::string_view data, int level = 3);

std::string Sha256Hex(std::string_view data);

}  // namespace evs::tar::testing
