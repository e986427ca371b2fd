#include "evs/verity/block_source.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

namespace evs::verity {

Result<std::unique_ptr<FileBlockSource>> FileBlockSource::Open(const std::string& path,
                                                               std::string name) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) return InvalidArgumentError(path, ": not a regular file");
  std::unique_ptr<FileBlockSource> source(new FileBlockSource());
  source->fd_ = std::move(fd);
  source->size_ = static_cast<uint64_t>(st.st_size);
  source->name_ = name.empty() ? path : std::move(name);
  return source;
}

Status FileBlockSource::ReadAt(uint64_t offset, void* buf, size_t n) {
  if (offset > size_ || n > size_ - offset) {
    return Status(Code::kOutOfRange, StrCat(name_, ": read of ", n, " bytes at offset ", offset,
                                            " past the end (", size_, " bytes)"));
  }
  EVS_ASSIGN_OR_RETURN(size_t got, PreadFull(fd_.get(), buf, n, static_cast<off_t>(offset), name_));
  if (got != n) {
    // The file shrank under us: never hand out a partial block.
    return DataLossError(name_, ": short read of ", n, " bytes at offset ", offset, " (got ", got,
                         ")");
  }
  return OkStatus();
}

}  // namespace evs::verity
