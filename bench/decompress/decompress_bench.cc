// bench/decompress: how fast a layer blob becomes tar entries, as ratios
// against ISA-L's `igzip -d -c > /dev/null` on the same file (the floor
// DESIGN.md §8 measures the converter against).
//
//   decompress_bench [--runs N] [--no-wait] [FILE.tar.gz]
//
// Without FILE it builds $TMPDIR/evs-bench-usr-lib.tar.gz (a tar of
// /usr/lib/x86_64-linux-gnu, gzip -6; ~330 MB here) once and reuses it.
//
// Rows:
//   gzip -dc, igzip -d -c             the external floors
//   Decompressor zlib / isal          our inflate, one thread, output dropped
//   LayerStream+TarReader             threaded inflate + blob digest + diffID,
//                                     every entry parsed, data lent (no copy)
//   convert-like, diffID on X thread  LayerReader; the consumer copies file
//                                     data into 4 KiB blocks, pwrites them to
//                                     a temporary file and SHA-256s each block
//                                     (a stand-in for the EROFS writer and the
//                                     verity tree), with the diffID hashed on
//                                     the reader thread, the decompressor
//                                     thread, a thread of its own, or not at
//                                     all (compute_diff_id = false)
// Each row is the best wall time of N runs (default 2), with the CPU time
// (user+sys) of that run. Before each run the bench waits (up to 3 minutes)
// for both cores to be idle, since the machine may be shared; --no-wait
// skips that.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/subprocess.h"
#include "evs/tar/decompress.h"
#include "evs/tar/layer_reader.h"
#include "evs/tar/tar_reader.h"

namespace evs::tar {
namespace {

// CPU seconds of the pipeline's threads in one run (0 when not a pipeline).
struct Split {
  double producer = 0;  // read-ahead thread: inflate + blob digest
  double consumer = 0;  // the thread reading entries
};

struct Timing {
  double wall = 0;
  double cpu = 0;  // user + sys of this process and its waited-for children
  Split split;
};

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

// The blob. Read() runs on the read-ahead thread, so the CPU time of the
// calling thread after the last read is (nearly all of) that thread's work.
class TimedFdSource : public ByteSource {
 public:
  TimedFdSource(int fd, std::string name) : inner_(fd, std::move(name)) {}
  Result<size_t> Read(void* buf, size_t n) override {
    auto r = inner_.Read(buf, n);
    reader_thread_cpu_ = ThreadCpuSeconds();
    return r;
  }
  // Valid once the stream has ended (the thread is done with us).
  double reader_thread_cpu() const { return reader_thread_cpu_; }

 private:
  FdSource inner_;
  double reader_thread_cpu_ = 0;
};

double CpuSeconds() {
  rusage self{}, children{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  auto tv = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return tv(self.ru_utime) + tv(self.ru_stime) + tv(children.ru_utime) + tv(children.ru_stime);
}

[[noreturn]] void Die(const Status& s) {
  std::fprintf(stderr, "decompress_bench: %s\n", s.ToString().c_str());
  std::exit(1);
}

// Fraction of both cores idle over `seconds` (from /proc/stat).
double IdleFraction(double seconds) {
  auto sample = [] {
    std::FILE* f = std::fopen("/proc/stat", "r");
    unsigned long long v[8] = {};
    if (f) {
      if (std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                      &v[4], &v[5], &v[6], &v[7]) != 8) {
        v[3] = 0;
      }
      std::fclose(f);
    }
    unsigned long long total = 0;
    for (auto x : v) total += x;
    return std::pair<unsigned long long, unsigned long long>(v[3] + v[4], total);
  };
  auto a = sample();
  ::usleep(static_cast<useconds_t>(seconds * 1e6));
  auto b = sample();
  double total = static_cast<double>(b.second - a.second);
  return total > 0 ? (b.first - a.first) / total : 1.0;
}

// The machine is shared: wait (up to a few minutes) until nothing else runs,
// so that both pipeline threads get a core. Returns the idle fraction seen.
double WaitForIdle() {
  double idle = 0;
  for (int i = 0; i < 180; ++i) {
    idle = IdleFraction(1.0);
    if (idle >= 0.9) break;
  }
  return idle;
}

bool wait_for_idle = true;

Timing Measure(int runs, const std::function<Split()>& fn) {
  Timing best{1e30, 0, {}};
  for (int i = 0; i < runs; ++i) {
    double idle = wait_for_idle ? WaitForIdle() : 1.0;
    if (idle < 0.9) std::printf("  (machine only %.0f%% idle before this run)\n", idle * 100);
    double cpu0 = CpuSeconds();
    auto t0 = std::chrono::steady_clock::now();
    Split split = fn();
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu = CpuSeconds() - cpu0;
    if (wall < best.wall) best = {wall, cpu, split};
  }
  return best;
}

void Shell(const std::string& command) {
  auto r = RunSubprocess({"/bin/sh", "-c", command}, "", 3600 * 1000);
  if (!r.ok()) Die(r.status());
  if (r->exit_code != 0) {
    Die(InternalError("command failed: ", command, ": ", r->stderr_data.substr(0, 500)));
  }
}

UniqueFd Open(const std::string& path) {
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd.ok()) Die(fd.status());
  return std::move(*fd);
}

// Inflates the whole file on this thread, dropping the output.
uint64_t PlainInflate(const std::string& path, GzipEngine engine) {
  UniqueFd fd = Open(path);
  FdSource source(fd.get(), path);
  auto d = Decompressor::Create(&source, {.input_name = path, .gzip_engine = engine});
  if (!d.ok()) Die(d.status());
  std::vector<uint8_t> buf(1u << 20);
  uint64_t total = 0;
  for (;;) {
    auto n = (*d)->Read(buf.data(), buf.size());
    if (!n.ok()) Die(n.status());
    if (*n == 0) break;
    total += *n;
  }
  return total;
}

// Every tar entry, data lent and dropped.
uint64_t TarEntries(const std::string& path, Split* split) {
  double cpu0 = ThreadCpuSeconds();
  UniqueFd fd = Open(path);
  TimedFdSource source(fd.get(), path);
  auto stream = LayerStream::Open(&source, {.input_name = path});
  if (!stream.ok()) Die(stream.status());
  TarReader reader(stream->get(), {.input_name = path});
  uint64_t entries = 0;
  for (;;) {
    auto h = reader.Next();
    if (!h.ok()) Die(h.status());
    if (*h == nullptr) break;
    ++entries;
    for (;;) {
      auto c = reader.ReadDataChunk(1u << 20);
      if (!c.ok()) Die(c.status());
      if (c->empty()) break;
    }
  }
  *split = {source.reader_thread_cpu(), ThreadCpuSeconds() - cpu0};
  return entries;
}

// What the converter's consumer thread does, approximately: copy each file's
// data into 4 KiB-aligned blocks, pwrite them, hash every block.
Split ConvertLike(const std::string& path, DiffIdThread diff_id_thread, const std::string& out,
                  bool diff_id = true) {
  double cpu0 = ThreadCpuSeconds();
  UniqueFd fd = Open(path);
  TimedFdSource source(fd.get(), path);
  auto stream = LayerStream::Open(
      &source, {.input_name = path, .compute_diff_id = diff_id, .diff_id_thread = diff_id_thread});
  if (!stream.ok()) Die(stream.status());
  auto out_fd = OpenFile(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (!out_fd.ok()) Die(out_fd.status());
  LayerReader reader(stream->get(), {.input_name = path});
  constexpr size_t kBuf = 256u << 10;
  std::vector<uint8_t> buf(kBuf);
  Hasher block_hasher(HashAlgorithm::kSha256);
  uint8_t digest[32];
  uint64_t pos = 0;
  for (;;) {
    auto e = reader.Next();
    if (!e.ok()) Die(e.status());
    if (*e == nullptr) break;
    if ((*e)->type != EntryType::kRegular) continue;
    uint64_t left = (*e)->size;
    while (left > 0) {
      auto n = reader.data()->Read(buf.data(), kBuf);
      if (!n.ok()) Die(n.status());
      if (*n == 0) Die(InternalError("short data"));
      left -= *n;
      size_t padded = (*n + 4095) & ~size_t{4095};
      std::memset(buf.data() + *n, 0, padded - *n);
      Status s = PwriteAll(out_fd->get(), buf.data(), padded, static_cast<off_t>(pos), out);
      if (!s.ok()) Die(s);
      for (size_t off = 0; off < padded; off += 4096) {
        block_hasher.Update(buf.data() + off, 4096);
        block_hasher.Finish(digest);
      }
      pos += padded;
    }
  }
  if ((*stream)->diff_id().empty() == diff_id) Die(InternalError("diffID wrong"));
  ::unlink(out.c_str());
  return {source.reader_thread_cpu(), ThreadCpuSeconds() - cpu0};
}

int Main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int runs = 2;
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (a == "--no-wait") {
      wait_for_idle = false;
    } else if (a == "-h" || a == "--help") {
      std::printf("usage: decompress_bench [--runs N] [--no-wait] [FILE.tar.gz]\n");
      return 0;
    } else {
      path = a;
    }
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpdir = tmp && *tmp ? tmp : "/tmp";
  if (path.empty()) {
    path = tmpdir + "/evs-bench-usr-lib.tar.gz";
    if (::access(path.c_str(), R_OK) != 0) {
      std::printf("building %s from /usr/lib/x86_64-linux-gnu (gzip -6)…\n", path.c_str());
      Shell("tar -C / -cf - usr/lib/x86_64-linux-gnu 2>/dev/null | gzip -6 > '" + path +
            ".tmp' && mv '" + path + ".tmp' '" + path + "'");
    }
  }
  Shell("cat '" + path + "' > /dev/null");  // page cache warm for every row

  uint64_t tar_bytes = PlainInflate(path, GzipEngine::kIsal);
  std::printf("input %s: %.1f MB tar\n", path.c_str(), tar_bytes / 1e6);
  std::printf("%-40s %8s %8s %9s %9s\n", "", "wall s", "cpu s", "MB/s tar", "× igzip");

  // `floor` is igzip's wall time, `floor_cpu` its CPU time: on a busy
  // machine the wall times stretch, the CPU times much less.
  double floor = 0, floor_cpu = 0;
  std::vector<std::string> notes;
  auto row = [&](const std::string& name, const std::function<Split()>& fn) {
    Timing t = Measure(runs, fn);
    if (floor == 0 && name.starts_with("igzip")) {
      floor = t.wall;
      floor_cpu = t.cpu;
    }
    std::printf("%-40s %8.2f %8.2f %9.0f %9.2f\n", name.c_str(), t.wall, t.cpu,
                tar_bytes / 1e6 / t.wall, floor > 0 ? t.wall / floor : 0.0);
    if (t.split.consumer > 0 && floor_cpu > 0) {
      // On an idle 2-core machine the run cannot take less than its busiest
      // thread, nor less than half its CPU time: that bound, in igzip CPU
      // times, says whether the pipeline is balanced, independent of load.
      double other = std::max(0.0, t.cpu - t.split.producer - t.split.consumer);
      double bound = std::max({t.split.producer, t.split.consumer, other, t.cpu / 2});
      char line[256];
      std::snprintf(line, sizeof line,
                    "%-40s threads: read-ahead %.2f s, reader %.2f s, other %.2f s; "
                    "2-core bound %.2f × igzip cpu",
                    name.c_str(), t.split.producer, t.split.consumer, other, bound / floor_cpu);
      notes.push_back(line);
    }
    return t.wall;
  };
  auto shell = [&](const std::string& command) {
    return [&, command] {
      Shell(command);
      return Split{};
    };
  };
  double gzip = row("gzip -dc > /dev/null", shell("gzip -dc '" + path + "' > /dev/null"));
  double igzip = row("igzip -d -c > /dev/null", shell("igzip -d -c '" + path + "' > /dev/null"));
  double zlib = row("Decompressor zlib (1 thread)", [&] {
    PlainInflate(path, GzipEngine::kZlib);
    return Split{};
  });
  double isal = row("Decompressor isal (1 thread)", [&] {
    PlainInflate(path, GzipEngine::kIsal);
    return Split{};
  });
  uint64_t entries = 0;
  row("LayerStream+TarReader (digests)", [&] {
    Split split;
    entries = TarEntries(path, &split);
    return split;
  });
  // The converter's consumer thread, approximately (see ConvertLike).
  std::string scratch = tmpdir + "/evs-bench-convert-like.out";
  row("convert-like, diffID on reader thread",
      [&] { return ConvertLike(path, DiffIdThread::kReader, scratch); });
  row("convert-like, diffID on inflate thread",
      [&] { return ConvertLike(path, DiffIdThread::kDecompressor, scratch); });
  row("convert-like, diffID on its own thread",
      [&] { return ConvertLike(path, DiffIdThread::kOwnThread, scratch); });
  row("convert-like, no diffID (blob digest only)",
      [&] { return ConvertLike(path, DiffIdThread::kOwnThread, scratch, false); });
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
  std::printf("%llu tar entries; zlib/isal = %.2f; gzip/igzip = %.2f\n",
              static_cast<unsigned long long>(entries), zlib / isal, gzip / igzip);
  return 0;
}

}  // namespace
}  // namespace evs::tar

int main(int argc, char** argv) { return evs::tar::Main(argc, argv); }
