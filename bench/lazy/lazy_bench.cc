// bench/lazy: what can be measured of lazy loading before the snapshotter
// integration exists (issue 6, point 4; DESIGN.md §8). Needs root (mounts,
// drop_caches) and a registry.
//
//   lazy_bench --registry HOST [--shaped HOST] [--work DIR] [--big-mb N]
//              [--filler-mb N] [--runs N] [--sweep-fetch-size] [--full-pull]
//              [--throughput-only]
//
// HOST is a plain-http registry ("127.0.0.1:5000"); --shaped names the same
// storage behind the shaped link of bench/lazy/shaped-link.sh (100 Mbit/s,
// 20 ms RTT). The benchmark builds one layer from files on this machine —
// Python 3.11 (binary, the shared libraries it loads, /usr/lib/python3.11),
// FILLER MB of /usr/lib/x86_64-linux-gnu and a BIG MB file of random bytes —
// pushes it as an uncompressed tar, converts it with ConvertImage, then:
//
// 1. throughput: the big file read (1 MiB reads, page cache dropped before
//    each run) from a lazy layer once fully fetched, next to the same layer
//    file mounted locally over the verified FUSE file (DESIGN.md §5
//    `userspace`, what this machine uses for local layers) and mounted
//    plainly (file-backed EROFS, verification `off`). Target: lazy ≥ 0.9 ×
//    the local verified mount. Best of RUNS.
// 2. cold small file: a fresh cache, attach (the tree GET), read
//    python3.11/os.py: time and bytes fetched, per registry.
// 3. cold "python startup": a fresh cache, attach, read every file
//    `python3.11 -c 'import json, re, …'` opens (found with strace, in
//    the order it opens them), per registry; with --sweep-fetch-size for
//    fetch sizes 64 KiB … 2 MiB, which is how LazyFetchOptions::fetch_size
//    was chosen. With --full-pull also the time to download the whole blob
//    over the same link, for the ratio lazy / full.
// --throughput-only stops after 1 (bench/lazy/lazy_e2e_bench.sh uses it).
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "evs/common/byte_stream.h"
#include "evs/common/file.h"
#include "evs/common/mount.h"
#include "evs/common/subprocess.h"
#include "evs/lazy/annotations.h"
#include "evs/lazy/image_converter.h"
#include "evs/lazy/lazy_layer.h"
#include "evs/oci/media_types.h"
#include "evs/verity/verified_block_file.h"

namespace evs::lazy {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Die(const Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "lazy_bench: %s: %s\n", what, st.ToString().c_str());
  std::exit(1);
}
template <typename T>
T Must(Result<T> r, const char* what) {
  Die(r.status(), what);
  return std::move(*r);
}

std::string Shell(const std::string& command) {
  auto r = RunSubprocess({"/bin/sh", "-c", command});
  if (!r.ok() || r->exit_code != 0) {
    std::fprintf(stderr, "lazy_bench: `%s` failed: %s\n", command.c_str(),
                 r.ok() ? r->stderr_data.c_str() : r.status().ToString().c_str());
    std::exit(1);
  }
  return r->stdout_data;
}

void DropCaches() {
  ::sync();
  auto fd = OpenFile("/proc/sys/vm/drop_caches", O_WRONLY);
  Die(fd.status(), "drop caches");
  Die(WriteAll(fd->get(), "3", 1, "/proc/sys/vm/drop_caches"), "drop caches");
}

// Reads a whole file with 1 MiB reads; returns its size.
uint64_t ReadAll(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    std::fprintf(stderr, "lazy_bench: open %s: %s\n", path.c_str(), std::strerror(errno));
    std::exit(1);
  }
  static std::vector<char> buf(1u << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      std::fprintf(stderr, "lazy_bench: read %s: %s\n", path.c_str(), std::strerror(errno));
      std::exit(1);
    }
    if (n == 0) return total;
    total += static_cast<uint64_t>(n);
  }
}

struct Flags {
  std::string registry, shaped, work = "/var/tmp/evs-lazy-bench";
  int big_mb = 256, filler_mb = 100, runs = 3;
  bool sweep = false, full_pull = false, throughput_only = false;
};

// Files python3.11 opens at start-up for a few common imports, as paths
// relative to /, regular files only, in first-open order.
std::vector<std::string> PythonStartupFiles(const std::string& work) {
  const std::string trace = JoinPath(work, "python.trace");
  Shell("strace -f -e trace=openat -o '" + trace +
        "' /usr/bin/python3.11 -c 'import json, re, collections, argparse, subprocess, "
        "email.parser, http.client, asyncio, logging, urllib.request; print(\"hello\")' "
        ">/dev/null");
  std::vector<std::string> files;
  std::set<std::string> seen;
  std::string text = Must(ReadFileToString(trace, 64u << 20), "read trace");
  size_t pos = 0;
  while ((pos = text.find("openat(", pos)) != std::string::npos) {
    size_t q1 = text.find('"', pos), q2 = text.find('"', q1 + 1), eol = text.find('\n', pos);
    pos = eol;
    if (q1 == std::string::npos || q2 > eol) continue;
    if (text.compare(eol - 6, 6, "ENOENT") == 0 || text.find("= -1", q2) < eol) continue;
    std::string path = fs::weakly_canonical(text.substr(q1 + 1, q2 - q1 - 1)).string();
    if (path.rfind("/usr/", 0) != 0 || !fs::is_regular_file(path)) continue;
    if (seen.insert(path).second) files.push_back(path.substr(1));
  }
  files.insert(files.begin(), "usr/bin/python3.11");
  return files;
}

struct BenchLayer {
  RemoteLayer layer;
  std::vector<std::string> startup_files;
  std::string big_file = "data/big.bin";
};

BenchLayer BuildLayer(registry::RegistryClient& client, const Flags& flags) {
  BenchLayer out;
  Die(MakeDirs(JoinPath(flags.work, "data")), "mkdir");
  out.startup_files = PythonStartupFiles(flags.work);
  // The tar: startup files, /usr/lib/python3.11, filler, the big file.
  std::set<std::string> members(out.startup_files.begin(), out.startup_files.end());
  members.insert("usr/lib/python3.11");
  uint64_t filler = 0;
  std::vector<fs::path> libs;
  for (const auto& e : fs::recursive_directory_iterator("/usr/lib/x86_64-linux-gnu")) {
    if (e.is_regular_file() && !e.is_symlink()) libs.push_back(e.path());
  }
  std::sort(libs.begin(), libs.end());
  for (const auto& p : libs) {
    if (filler >= uint64_t(flags.filler_mb) << 20) break;
    filler += fs::file_size(p);
    members.insert(p.string().substr(1));
  }
  const std::string list = JoinPath(flags.work, "members.txt");
  std::string text;
  for (const auto& m : members) text += m + "\n";
  Die(WriteFileAtomic(list, text), "write member list");
  const std::string tar = JoinPath(flags.work, "layer.tar");
  Shell("head -c " + std::to_string(uint64_t(flags.big_mb) << 20) + " /dev/urandom > '" +
        flags.work + "/data/big.bin'");
  Shell("tar -C / --sort=name --numeric-owner -cf '" + tar + "' -T '" + list + "' && tar -C '" +
        flags.work + "' --numeric-owner -rf '" + tar + "' data/big.bin");

  // Push it as an uncompressed layer, with a config and a manifest.
  const auto digest_of = [](const std::string& path) {
    return Digest::Parse("sha256:" +
                         Shell("sha256sum '" + path + "' | cut -d' ' -f1").substr(0, 64));
  };
  auto content = Must(registry::FileBlobContent::Open(tar), "open tar");
  oci::Descriptor layer;
  layer.media_type = std::string(oci::kOciLayerTar);
  layer.digest = Must(digest_of(tar), "digest");
  layer.size = static_cast<int64_t>(content->size());
  const oci::Reference src =
      Must(oci::Reference::Parse(flags.registry + "/bench/python:src"), "ref");
  Die(client.PushBlob(src, layer, content.get()).status(), "push layer");
  nlohmann::json config = {
      {"architecture", "amd64"},
      {"os", "linux"},
      {"config", {{"Cmd", {"/usr/bin/python3.11"}}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {layer.digest.ToString()}}}}};
  const std::string config_bytes = config.dump();
  oci::ImageManifest m;
  m.media_type = std::string(oci::kOciManifest);
  m.config = {std::string(oci::kOciConfig), Digest::Sha256Of(config_bytes),
              static_cast<int64_t>(config_bytes.size())};
  m.layers = {layer};
  registry::MemoryBlobContent config_content(config_bytes);
  Die(client.PushBlob(src, m.config, &config_content).status(), "push config");
  Die(client.PushManifest(src, oci::kOciManifest, m.ToJson()).status(), "push manifest");
  ::unlink(tar.c_str());

  const auto start = Clock::now();
  ImageConvertOptions options;
  options.scratch_dir = flags.work;
  const oci::Reference dst =
      Must(oci::Reference::Parse(flags.registry + "/bench/python:evs"), "ref");
  ImageConvertResult r = Must(ConvertImage(client, src, dst, options), "convert");
  std::printf("layer: %s tar, %zu startup files; converted in %.1f s to %s EROFS+tree\n",
              std::to_string(content->size() >> 20).append(" MiB").c_str(),
              out.startup_files.size(), Seconds(start),
              std::to_string(r.manifests[0].layers[0].converted.size >> 20).append(" MiB").c_str());
  out.layer.repository = dst;
  out.layer.descriptor = r.manifests[0].layers[0].converted;
  out.layer.verity = Must(ParseLayerVerity(out.layer.descriptor.annotations, "bench"), "verity");
  return out;
}

RemoteLayer Via(RemoteLayer l, const std::string& host) {
  l.repository.registry = host;
  return l;
}

std::unique_ptr<LazyLayer> Attach(registry::RegistryClient& client, const RemoteLayer& layer,
                                  const std::string& cache, const std::string& target,
                                  uint32_t fetch_size = 0) {
  LazyLayerOptions options;
  if (fetch_size != 0) options.fetch.fetch_size = fetch_size;
  if (const char* t = std::getenv("LAZY_FUSE_THREADS")) options.fuse_threads = std::atoi(t);
  return Must(LazyLayer::Attach(&client, layer, cache, target, options), "attach");
}

// Each run mounts afresh, so that every mode pays its first-read costs
// (the verified FUSE file checks each block once per mount); the modes take
// turns within a run, so other load on the machine hits them alike.
void Throughput(registry::RegistryClient& client, const BenchLayer& b, const Flags& flags) {
  const std::string cache = JoinPath(flags.work, "cache-throughput");
  const std::string mnt = JoinPath(flags.work, "mnt");
  Die(MakeDirs(mnt), "mkdir");
  const std::string big = JoinPath(mnt, b.big_file);
  const std::string file = LazyLayer::LayerFile(cache);
  double lazy = 0, verified = 0, plain = 0, fetch_all = 1e9;
  uint64_t size = 0;
  for (int r = 0; r < flags.runs; ++r) {
    {
      Die(RemoveTree(cache), "clean");
      auto layer = Attach(client, b.layer, cache, mnt);
      const auto start = Clock::now();
      Die(layer->FetchAll(), "fetch all");
      fetch_all = std::min(fetch_all, Seconds(start));
      DropCaches();
      const auto t = Clock::now();
      size = ReadAll(big);
      lazy = std::max(lazy, size / Seconds(t));
      Die(layer->Detach(), "detach");
    }
    {
      auto m = Must(verity::VerifiedErofsMount::MountLayerFile(
                        file, b.layer.verity.hash_offset, b.layer.verity.root_digest,
                        JoinPath(flags.work, "fuse-local"), mnt),
                    "verified local mount");
      DropCaches();
      const auto t = Clock::now();
      ReadAll(big);
      verified = std::max(verified, size / Seconds(t));
    }
    {
      auto m = Must(MountPoint::Mount(file, mnt, "erofs", MS_RDONLY, ""), "plain mount");
      DropCaches();
      const auto t = Clock::now();
      ReadAll(big);
      plain = std::max(plain, size / Seconds(t));
    }
  }
  std::printf("\n1. read a %llu MiB file, fresh mount and cold page cache, best of %d:\n",
              static_cast<unsigned long long>(size >> 20), flags.runs);
  std::printf("   lazy layer, fully fetched       %8.1f MB/s   (fetch all: %.2f s, %.1f MB/s)\n",
              lazy / 1e6, fetch_all, b.layer.descriptor.size / fetch_all / 1e6);
  std::printf("   local, verified (FUSE)          %8.1f MB/s   lazy/local = %.2f (target >= 0.9)\n",
              verified / 1e6, lazy / verified);
  std::printf("   local, plain EROFS (verity off) %8.1f MB/s   lazy/plain = %.2f\n", plain / 1e6,
              lazy / plain);
}

struct ColdResult {
  double attach_s = 0, read_s = 0;
  uint64_t bytes = 0, tree_bytes = 0, requests = 0;
};

ColdResult Cold(registry::RegistryClient& client, const RemoteLayer& layer, const Flags& flags,
                const std::vector<std::string>& files, uint32_t fetch_size) {
  const std::string cache = JoinPath(flags.work, "cache-cold");
  const std::string mnt = JoinPath(flags.work, "mnt");
  Die(RemoveTree(cache), "clean");
  Die(MakeDirs(mnt), "mkdir");
  DropCaches();
  ColdResult r;
  auto t = Clock::now();
  auto l = Attach(client, layer, cache, mnt, fetch_size);
  r.attach_s = Seconds(t);
  t = Clock::now();
  for (const auto& f : files) ReadAll(JoinPath(mnt, f));
  r.read_s = Seconds(t);
  const auto s = l->stats().source;
  r.bytes = s.bytes_fetched;
  r.tree_bytes = s.tree_bytes_fetched;
  r.requests = s.requests;
  Die(l->Remove(), "remove");
  return r;
}

void PrintCold(const char* what, const char* where, const ColdResult& r, uint32_t fetch_size) {
  std::printf(
      "   %-16s %-7s fetch %5u KiB: attach %6.3f s + read %6.3f s = %6.3f s, %7.2f MB "
      "fetched (tree %.2f MB), %llu requests\n",
      what, where, fetch_size >> 10, r.attach_s, r.read_s, r.attach_s + r.read_s, r.bytes / 1e6,
      r.tree_bytes / 1e6, static_cast<unsigned long long>(r.requests));
}

}  // namespace
}  // namespace evs::lazy

int main(int argc, char** argv) {
  using namespace evs;
  using namespace evs::lazy;
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--registry")
      flags.registry = next();
    else if (a == "--shaped")
      flags.shaped = next();
    else if (a == "--work")
      flags.work = next();
    else if (a == "--big-mb")
      flags.big_mb = std::atoi(next().c_str());
    else if (a == "--filler-mb")
      flags.filler_mb = std::atoi(next().c_str());
    else if (a == "--runs")
      flags.runs = std::atoi(next().c_str());
    else if (a == "--sweep-fetch-size")
      flags.sweep = true;
    else if (a == "--full-pull")
      flags.full_pull = true;
    else if (a == "--throughput-only")
      flags.throughput_only = true;
    else {
      std::fprintf(stderr, "usage: see the comment at the top of bench/lazy/lazy_bench.cc\n");
      return 2;
    }
  }
  if (flags.registry.empty() || ::geteuid() != 0) {
    std::fprintf(stderr, "lazy_bench needs --registry HOST and root\n");
    return 2;
  }
  Die(MakeDirs(flags.work), "mkdir work");
  auto client = Must(registry::RegistryClient::Create({}), "client");
  BenchLayer b = BuildLayer(*client, flags);
  Throughput(*client, b, flags);
  if (flags.throughput_only) return 0;

  std::vector<std::pair<std::string, std::string>> registries = {{"direct", flags.registry}};
  if (!flags.shaped.empty()) registries.push_back({"shaped", flags.shaped});
  const uint32_t default_fetch = LazyFetchOptions{}.fetch_size;
  std::printf("\n2. cold small file (usr/lib/python3.11/os.py), fresh cache:\n");
  for (const auto& [where, host] : registries) {
    PrintCold("os.py", where.c_str(),
              Cold(*client, Via(b.layer, host), flags, {"usr/lib/python3.11/os.py"}, default_fetch),
              default_fetch);
  }
  std::printf("\n3. cold python start-up files (%zu files), fresh cache:\n",
              b.startup_files.size());
  std::vector<uint32_t> sizes = {default_fetch};
  if (flags.sweep) sizes = {64u << 10, 128u << 10, 256u << 10, 512u << 10, 1u << 20, 2u << 20};
  for (const auto& [where, host] : registries) {
    for (uint32_t fs : sizes) {
      PrintCold("startup", where.c_str(),
                Cold(*client, Via(b.layer, host), flags, b.startup_files, fs), fs);
    }
    if (flags.full_pull) {
      class NullSink : public ByteSink {
       public:
        Status Write(const void*, size_t) override { return OkStatus(); }
      } sink;
      const auto t = Clock::now();
      Die(client->FetchBlob(Via(b.layer, host).repository, b.layer.descriptor, &sink), "full pull");
      std::printf("   %-16s %-7s whole blob (%.1f MB): %.2f s\n", "full pull", where.c_str(),
                  b.layer.descriptor.size / 1e6, Seconds(t));
    }
  }
  return 0;
}
