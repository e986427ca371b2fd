// Reads everything an image holds through ErofsReader, with caps so that a
// hostile image (a directory that claims 4 GiB, a file of 2^60 bytes of
// holes) cannot make it run for long. Used by the hostile test and the fuzz
// target: what matters there is that it returns, never that it succeeds.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "evs/common/fd.h"
#include "evs/erofs/reader.h"

namespace evs::testing {

inline Status ReadEverything(const erofs::ErofsReader& reader, size_t max_inodes = 20000,
                             uint64_t max_file_bytes = 1u << 20) {
  size_t visited = 0;
  std::vector<uint8_t> buf(64 << 10);
  Status walked = reader.Walk([&](const std::string& path, const erofs::Inode& inode) -> Status {
    if (++visited > max_inodes) return ResourceExhaustedError("more than ", max_inodes, " inodes");
    EVS_RETURN_IF_ERROR(reader.ReadXattrs(inode).status());
    if (inode.is_symlink()) EVS_RETURN_IF_ERROR(reader.ReadSymlink(inode).status());
    if (inode.is_reg()) {
      for (uint64_t off = 0; off < inode.size && off < max_file_bytes;) {
        EVS_ASSIGN_OR_RETURN(size_t n, reader.ReadData(inode, off, buf.data(), buf.size()));
        if (n == 0) break;
        off += n;
      }
      // The last bytes too: chunk and inline-tail paths differ from the first.
      if (inode.size > 0) {
        const uint64_t off = inode.size > 100 ? inode.size - 100 : 0;
        EVS_RETURN_IF_ERROR(reader.ReadData(inode, off, buf.data(), 100).status());
      }
    }
    if (!path.empty() && visited % 7 == 0) EVS_RETURN_IF_ERROR(reader.Lookup(path).status());
    return OkStatus();
  });
  return walked;
}

// Opens `bytes` as an image (through a memfd) and reads everything; the
// status is the first error, from opening or reading.
inline Status OpenAndReadEverything(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("evs-erofs-image", MFD_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "memfd_create");
  UniqueFd owned(fd);
  EVS_RETURN_IF_ERROR(WriteAll(fd, data, size, "memfd"));
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsReader> reader,
                       erofs::ErofsReader::FromFd(std::move(owned), "fuzzed image"));
  return ReadEverything(*reader);
}

}  // namespace evs::testing
