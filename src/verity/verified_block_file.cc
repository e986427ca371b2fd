#include "evs/verity/verified_block_file.h"

#define FUSE_USE_VERSION 34
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "evs/common/atomic_bitmap.h"
#include "evs/common/file.h"
#include "evs/common/log.h"

namespace evs::verity {

struct VerifiedBlockFile::State {
  std::unique_ptr<LayerBlockSource> source;
  std::unique_ptr<VerityTree> tree;
  VerifiedBlockFileOptions options;
  std::string path;
  uint64_t size = 0;
  uint32_t block_size = 0;
  std::unique_ptr<AtomicBitmap> verified;

  fuse_session* session = nullptr;
  bool mounted = false;
  UniqueFd stop;  // eventfd: written once to stop the workers
  std::vector<std::thread> workers;

  // Reads handed over by the workers because they wait for the network
  // (VerifiedBlockFileOptions::miss_threads). Replied to from these
  // threads; all joined before the session goes.
  struct Miss {
    fuse_req_t req;
    size_t size;
    off_t off;
  };
  std::mutex miss_mu;
  std::condition_variable miss_cv;
  std::deque<Miss> misses;
  std::vector<std::thread> miss_workers;
  bool miss_stop = false;

  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> failures{0};

  const std::string& name() const { return tree->layer_name(); }

  // Serves one read: whole blocks from the source, unverified ones checked,
  // then the requested bytes. Returns 0 or an errno.
  int Read(uint64_t offset, size_t size_wanted, std::vector<uint8_t>& buf, const uint8_t** out,
           size_t* out_size) {
    *out_size = 0;
    if (offset >= size) return 0;
    const uint64_t end = std::min<uint64_t>(size, offset + size_wanted);
    const uint64_t first = offset / block_size;
    const uint64_t last = (end + block_size - 1) / block_size;
    const size_t nbytes = static_cast<size_t>((last - first) * block_size);
    if (buf.size() < nbytes) buf.resize(nbytes);
    Status st = source->ReadAt(first * block_size, buf.data(), nbytes);
    if (!st.ok()) return FailRead(offset, end - offset, st);
    // Verify each run of blocks not yet in the bitmap.
    for (uint64_t b = first; b < last;) {
      if (verified->Test(b)) {
        ++b;
        continue;
      }
      uint64_t run_end = b + 1;
      while (run_end < last && !verified->Test(run_end)) ++run_end;
      st = tree->VerifyDataBlocks(b, buf.data() + (b - first) * block_size,
                                  static_cast<size_t>(run_end - b));
      if (!st.ok()) return FailRead(offset, end - offset, st);
      for (uint64_t i = b; i < run_end; ++i) verified->Set(i);
      b = run_end;
    }
    reads.fetch_add(1, std::memory_order_relaxed);
    bytes_read.fetch_add(end - offset, std::memory_order_relaxed);
    *out = buf.data() + (offset - first * block_size);
    *out_size = static_cast<size_t>(end - offset);
    return 0;
  }

  int FailRead(uint64_t offset, uint64_t length, const Status& st) {
    failures.fetch_add(1, std::memory_order_relaxed);
    // DESIGN.md §5: a failed block is never served; the log names the layer
    // and block (the status message carries the block number).
    EVS_LOG(kError) << "verified read failed, returning EIO" << Kv("layer", name())
                    << Kv("offset", offset) << Kv("length", length) << Kv("error", st.message());
    return EIO;
  }

  void WorkerLoop() {
    fuse_buf buf;
    std::memset(&buf, 0, sizeof buf);
    pollfd fds[2] = {{fuse_session_fd(session), POLLIN, 0}, {stop.get(), POLLIN, 0}};
    for (;;) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents != 0) break;
      if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) break;  // connection ended
      int res = fuse_session_receive_buf(session, &buf);
      if (res == -EAGAIN || res == -EINTR) continue;  // another worker took it
      if (res <= 0) break;                            // 0: ENODEV, the file was unmounted
      fuse_session_process_buf(session, &buf);
    }
    std::free(buf.mem);
  }

  // Queues a read for the miss threads (started on the first one). False
  // when stopping: the caller serves it itself.
  bool HandOver(fuse_req_t req, size_t size_wanted, off_t off) {
    {
      std::lock_guard<std::mutex> lock(miss_mu);
      if (miss_stop) return false;
      if (miss_workers.empty()) {
        for (int i = 0; i < options.miss_threads; ++i) {
          miss_workers.emplace_back([this] { MissLoop(); });
        }
      }
      misses.push_back({req, size_wanted, off});
    }
    miss_cv.notify_one();
    return true;
  }

  void MissLoop() {
    std::vector<uint8_t> buf;
    for (;;) {
      Miss m;
      {
        std::unique_lock<std::mutex> lock(miss_mu);
        miss_cv.wait(lock, [&] { return miss_stop || !misses.empty(); });
        if (misses.empty()) return;  // stopping, nothing left
        m = misses.front();
        misses.pop_front();
      }
      Reply(m.req, m.size, m.off, buf);
    }
  }

  void Reply(fuse_req_t req, size_t size_wanted, off_t off, std::vector<uint8_t>& buf) {
    const uint8_t* data = nullptr;
    size_t n = 0;
    int err = Read(static_cast<uint64_t>(off), size_wanted, buf, &data, &n);
    if (err != 0) {
      fuse_reply_err(req, err);
    } else {
      fuse_reply_buf(req, reinterpret_cast<const char*>(data), n);
    }
  }

  void StopWorkers() {
    if (stop.valid()) {
      uint64_t one = 1;
      (void)!::write(stop.get(), &one, sizeof one);
    }
    for (auto& t : workers) t.join();
    workers.clear();
    // Queued misses are still answered (each within the source's bound),
    // then the miss threads end.
    {
      std::lock_guard<std::mutex> lock(miss_mu);
      miss_stop = true;
    }
    miss_cv.notify_all();
    for (auto& t : miss_workers) t.join();
    miss_workers.clear();
  }
};

namespace {

VerifiedBlockFile::State* StateOf(fuse_req_t req) {
  return static_cast<VerifiedBlockFile::State*>(fuse_req_userdata(req));
}

void OnInit(void* userdata, fuse_conn_info* conn) {
  auto* s = static_cast<VerifiedBlockFile::State*>(userdata);
  // libfuse derives the kernel's max_pages from max_write, and that bounds
  // the size of read requests too.
  conn->max_write = s->options.max_read;
  conn->max_read = s->options.max_read;  // must equal the max_read mount option
  conn->max_readahead = s->options.max_read;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->want |= FUSE_CAP_ASYNC_READ;
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_AUTO_INVAL_DATA);  // content never changes
}

void FillAttr(const VerifiedBlockFile::State* s, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = FUSE_ROOT_ID;
  st->st_mode = S_IFREG | 0444;
  st->st_nlink = 1;
  st->st_size = static_cast<off_t>(s->size);
  st->st_blksize = static_cast<blksize_t>(s->block_size);
  st->st_blocks = static_cast<blkcnt_t>((s->size + 511) / 512);
}

// The content never changes while mounted: let the kernel cache attributes.
constexpr double kAttrTimeout = 86400.0;

void OnGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  FillAttr(StateOf(req), &st);
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void OnLookup(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, ENOTDIR); }

void OnOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != FUSE_ROOT_ID) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->direct_io = StateOf(req)->options.direct_io ? 1 : 0;
  fi->keep_cache = 1;
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

void OnRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  VerifiedBlockFile::State* s = StateOf(req);
  // A read that would wait for the network goes to the miss threads; this
  // worker goes back to serve what is local.
  if (s->options.miss_threads > 0 && !s->source->IsLocal(static_cast<uint64_t>(off), size) &&
      s->HandOver(req, size, off)) {
    return;
  }
  // One buffer per worker thread, reused: no allocation per read.
  thread_local std::vector<uint8_t> buf;
  s->Reply(req, size, off, buf);
}

void OnRelease(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof ops);
  ops.init = OnInit;
  ops.lookup = OnLookup;
  ops.getattr = OnGetattr;
  ops.open = OnOpen;
  ops.read = OnRead;
  ops.release = OnRelease;
  return ops;
}();

// Mount options travel in the fsname; keep them to characters mount(8)
// and /proc/self/mountinfo do not mangle.
std::string SafeName(const std::string& name) {
  std::string out;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ':' || c == '.' || c == '-' || c == '_' || c == '/';
    out += ok ? c : '_';
  }
  return out.substr(0, 200);
}

}  // namespace

VerifiedBlockFile::VerifiedBlockFile() : state_(std::make_unique<State>()) {}

VerifiedBlockFile::~VerifiedBlockFile() {
  State& s = *state_;
  if (s.mounted) {
    Status st = Unmount();
    if (!st.ok()) {
      // Still in use: detach it and end the FUSE connection (closing our
      // /dev/fuse descriptor in fuse_session_destroy aborts it), so the
      // remaining users get errors instead of hanging on a dead server.
      EVS_LOG(kWarning) << "verified file busy at shutdown, detaching" << Kv("path", s.path)
                        << Kv("error", st.message());
      (void)evs::Unmount(s.path, /*detach=*/true);
      s.mounted = false;
    }
  }
  s.StopWorkers();
  if (s.session != nullptr) {
    // Closes /dev/fuse (which ends the connection if it is still alive) and
    // frees libfuse's copy of the mount point; it finds the mount gone.
    fuse_session_unmount(s.session);
    fuse_session_destroy(s.session);
  }
}

Result<std::unique_ptr<VerifiedBlockFile>> VerifiedBlockFile::Mount(
    std::unique_ptr<LayerBlockSource> source, uint64_t hash_offset, const Digest& root_digest,
    const std::string& mount_path, VerifiedBlockFileOptions options) {
  std::unique_ptr<VerifiedBlockFile> file(new VerifiedBlockFile());
  State& s = *file->state_;
  s.source = std::move(source);
  EVS_ASSIGN_OR_RETURN(s.tree,
                       VerityTree::Open(s.source.get(), hash_offset, root_digest, options.tree));
  s.options = options;
  s.options.max_read = std::clamp<uint32_t>(options.max_read, 4096, 1u << 20);
  s.options.threads = std::clamp(options.threads, 1, 64);
  s.options.miss_threads = std::clamp(options.miss_threads, 0, 256);
  s.path = mount_path;
  s.size = hash_offset;
  s.block_size = s.tree->params().data_block_size;
  s.verified = std::make_unique<AtomicBitmap>(s.tree->params().data_blocks);

  struct stat st;
  if (::stat(mount_path.c_str(), &st) != 0) {
    return ErrnoError(errno, StrCat("verified file mount point ", mount_path));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgumentError("verified file mount point ", mount_path, " is not a regular file");
  }
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return ErrnoError(errno, StrCat("open /dev/fuse for ", mount_path));
  }

  std::string opts =
      StrCat("-oallow_other,default_permissions,ro,subtype=evs-verity,fsname=", SafeName(s.name()),
             ",max_read=", s.options.max_read);
  const char* argv[] = {"evs-verity", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(2, const_cast<char**>(argv));
  s.session = fuse_session_new(&args, &kOps, sizeof kOps, &s);
  fuse_opt_free_args(&args);  // option parsing may have copied them
  if (s.session == nullptr) {
    return InternalError("fuse_session_new for ", mount_path, " failed (options ", opts, ")");
  }
  if (fuse_session_mount(s.session, mount_path.c_str()) != 0) {
    return InternalError("mount FUSE verified file at ", mount_path,
                         " failed (libfuse printed the reason on stderr)");
  }
  s.mounted = true;
  // Non-blocking, so that workers woken for one request do not block in
  // read(2) while another takes it; they go back to poll(2) instead, where
  // the stop event can reach them.
  int fd = fuse_session_fd(s.session);
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "set /dev/fuse non-blocking");
  }
  int efd = ::eventfd(0, EFD_CLOEXEC);
  if (efd < 0) return ErrnoError(errno, "eventfd");
  s.stop.Reset(efd);
  for (int i = 0; i < s.options.threads; ++i) s.workers.emplace_back([&s] { s.WorkerLoop(); });
  EVS_LOG(kInfo) << "verified file mounted" << Kv("layer", s.name()) << Kv("path", mount_path)
                 << Kv("bytes", s.size) << Kv("block_size", s.block_size);
  return file;
}

Status VerifiedBlockFile::Unmount() {
  State& s = *state_;
  if (s.mounted) {
    if (::umount2(s.path.c_str(), 0) != 0 && errno != EINVAL && errno != ENOENT) {
      int err = errno;
      if (err == EBUSY) {
        return FailedPreconditionError("verified file ", s.path,
                                       " is still in use (an EROFS mount on it?)");
      }
      return ErrnoError(err, StrCat("umount verified file ", s.path));
    }
    s.mounted = false;
  }
  s.StopWorkers();
  return OkStatus();
}

const std::string& VerifiedBlockFile::path() const { return state_->path; }
uint64_t VerifiedBlockFile::size() const { return state_->size; }
const VerityTree& VerifiedBlockFile::tree() const { return *state_->tree; }

VerifiedBlockFile::Stats VerifiedBlockFile::stats() const {
  Stats st;
  st.reads = state_->reads.load();
  st.bytes_read = state_->bytes_read.load();
  st.blocks_verified = state_->verified->Count();
  st.failures = state_->failures.load();
  return st;
}

Result<std::unique_ptr<VerifiedErofsMount>> VerifiedErofsMount::Mount(
    std::unique_ptr<LayerBlockSource> source, uint64_t hash_offset, const Digest& root_digest,
    const std::string& fuse_file, const std::string& target, VerifiedBlockFileOptions options,
    const std::string& erofs_options) {
  std::unique_ptr<VerifiedErofsMount> m(new VerifiedErofsMount());
  m->target_ = target;
  struct stat st;
  if (::stat(fuse_file.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoError(errno, StrCat("stat ", fuse_file));
    EVS_ASSIGN_OR_RETURN(UniqueFd created, OpenFile(fuse_file, O_WRONLY | O_CREAT | O_EXCL, 0444));
    m->created_fuse_file_ = fuse_file;
  }
  auto file = VerifiedBlockFile::Mount(std::move(source), hash_offset, root_digest, fuse_file,
                                       std::move(options));
  if (!file.ok()) {
    if (!m->created_fuse_file_.empty()) ::unlink(m->created_fuse_file_.c_str());
    return file.status();
  }
  m->file_ = std::move(*file);
  // File-backed EROFS (kernel ≥ 6.12, reference §2): the FUSE file is the
  // source; no loop device.
  auto mounted = MountPoint::Mount(fuse_file, target, "erofs", MS_RDONLY, erofs_options);
  if (!mounted.ok()) {
    Status st = mounted.status().Annotate(StrCat("layer ", m->file_->tree().layer_name()));
    m->file_.reset();
    if (!m->created_fuse_file_.empty()) ::unlink(m->created_fuse_file_.c_str());
    return st;
  }
  m->erofs_ = std::move(*mounted);
  return m;
}

Result<std::unique_ptr<VerifiedErofsMount>> VerifiedErofsMount::MountLayerFile(
    const std::string& layer_file, uint64_t hash_offset, const Digest& root_digest,
    const std::string& fuse_file, const std::string& target, VerifiedBlockFileOptions options) {
  EVS_ASSIGN_OR_RETURN(auto source, FileBlockSource::Open(layer_file, options.tree.layer_name));
  return Mount(std::move(source), hash_offset, root_digest, fuse_file, target, std::move(options));
}

Status VerifiedErofsMount::Unmount() {
  Status st = erofs_.Unmount();
  if (!st.ok()) {
    return Status(Code::kFailedPrecondition, st.message()).Annotate("verified EROFS mount");
  }
  if (file_) {
    EVS_RETURN_IF_ERROR(file_->Unmount());
    file_.reset();
  }
  if (!created_fuse_file_.empty()) {
    ::unlink(created_fuse_file_.c_str());
    created_fuse_file_.clear();
  }
  return OkStatus();
}

VerifiedErofsMount::~VerifiedErofsMount() {
  Status st = Unmount();
  if (!st.ok()) {
    EVS_LOG(kWarning) << "verified EROFS mount busy at shutdown, detaching" << Kv("target", target_)
                      << Kv("error", st.message());
    (void)evs::Unmount(erofs_.Release(), /*detach=*/true);
    file_.reset();  // detaches the FUSE file and ends its connection
    if (!created_fuse_file_.empty()) ::unlink(created_fuse_file_.c_str());
  }
}

}  // namespace evs::verity
