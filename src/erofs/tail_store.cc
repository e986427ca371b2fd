#include "tail_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "evs/common/file.h"

namespace evs::erofs {
namespace {

constexpr size_t kWriteBuffer = 256u << 10;

Result<UniqueFd> OpenScratch(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return UniqueFd(fd);
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    return ErrnoError(errno, StrCat("create scratch file in ", dir));
  // Filesystems without O_TMPFILE: create, then unlink at once.
  std::string tmpl = JoinPath(dir, ".evs-erofs-tails.XXXXXX");
  fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, StrCat("create scratch file in ", dir));
  ::unlink(tmpl.c_str());
  return UniqueFd(fd);
}

}  // namespace

TailStore::TailStore(std::string scratch_dir, int output_fd, size_t memory_limit)
    : scratch_dir_(std::move(scratch_dir)), output_fd_(output_fd), memory_limit_(memory_limit) {}

Status TailStore::Spill() {
  std::vector<std::string> candidates;
  if (!scratch_dir_.empty()) {
    candidates.push_back(scratch_dir_);
  } else {
    char target[4096];
    std::string link = StrCat("/proc/self/fd/", output_fd_);
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && target[0] == '/') candidates.push_back(Dirname(std::string(target, n)));
    const char* tmp = ::getenv("TMPDIR");
    if (tmp != nullptr && *tmp != '\0') candidates.push_back(tmp);
    candidates.push_back("/tmp");
  }
  Status last;
  for (const std::string& dir : candidates) {
    Result<UniqueFd> fd = OpenScratch(dir);
    if (fd.ok()) {
      file_ = std::move(*fd);
      break;
    }
    last = fd.status();
    if (!scratch_dir_.empty()) break;
  }
  if (!file_.valid()) return last.Annotate("spill small-file tails");
  EVS_RETURN_IF_ERROR(
      PwriteAll(file_.get(), memory_.data(), memory_.size(), 0, "tail scratch file"));
  pending_base_ = memory_.size();
  std::vector<uint8_t>().swap(memory_);
  pending_.reserve(kWriteBuffer);
  return OkStatus();
}

Result<uint64_t> TailStore::Append(const void* data, size_t n) {
  const uint64_t ref = size_;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (!file_.valid()) {
    if (memory_.size() + n <= memory_limit_) {
      memory_.insert(memory_.end(), p, p + n);
      size_ += n;
      return ref;
    }
    EVS_RETURN_IF_ERROR(Spill());
  }
  pending_.insert(pending_.end(), p, p + n);
  size_ += n;
  if (pending_.size() >= kWriteBuffer) {
    EVS_RETURN_IF_ERROR(PwriteAll(file_.get(), pending_.data(), pending_.size(),
                                  static_cast<off_t>(pending_base_), "tail scratch file"));
    pending_base_ += pending_.size();
    pending_.clear();
  }
  return ref;
}

Status TailStore::Read(uint64_t ref, void* out, size_t n) {
  if (ref + n > size_) return InternalError("tail reference ", ref, "+", n, " beyond ", size_);
  if (!file_.valid()) {
    std::memcpy(out, memory_.data() + ref, n);
    return OkStatus();
  }
  uint8_t* o = static_cast<uint8_t*>(out);
  // Part of the range may still be in the write buffer.
  if (ref + n > pending_base_) {
    const uint64_t from = std::max(ref, pending_base_);
    std::memcpy(o + (from - ref), pending_.data() + (from - pending_base_), ref + n - from);
    n = static_cast<size_t>(from - ref);
  }
  if (n == 0) return OkStatus();
  EVS_ASSIGN_OR_RETURN(size_t got,
                       PreadFull(file_.get(), o, n, static_cast<off_t>(ref), "tail scratch file"));
  if (got != n) return InternalError("tail scratch file: short read at ", ref);
  return OkStatus();
}

}  // namespace evs::erofs
