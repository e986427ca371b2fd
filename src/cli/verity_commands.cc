// evs verity …: append a dm-verity tree to an image (format), check an image
// against a root digest (verify), print its superblock and tree layout
// (dump), and serve it through the user-space verified mount (mount).
// Also the body of `evs layer convert --verity`. See docs/verity.md.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "commands.h"
#include "evs/common/byte_stream.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/verity/format.h"
#include "evs/verity/layer_builder.h"
#include "evs/verity/tree_builder.h"
#include "evs/verity/verified_block_file.h"
#include "evs/verity/verifier.h"
#include "progress.h"

namespace evs::cli {

// Defined here, called by `evs layer convert --verity` (layer_commands.cc).
Status RunLayerConvertVerity(const std::vector<std::string>& paths, const std::string& from_dir,
                             const std::string& mode, const std::string& uuid_seed,
                             uint64_t max_tar_bytes);

namespace {

Status Print(const std::string& text) {
  return WriteAll(STDOUT_FILENO, text.data(), text.size(), "stdout");
}

// The lines `verity format` and `layer convert --verity` print; the last
// one is the bare root digest, for scripts (`… | tail -1`).
Status PrintDescriptor(const verity::VerityDescriptor& d) {
  return Print(StrCat(
      "hash offset: ", d.hash_offset, "\n", "data blocks: ", d.params.data_blocks, " x ",
      d.params.data_block_size, " bytes\n", "hash:        ", HashAlgorithmName(d.params.algorithm),
      ", format ", d.params.hash_type, ", ", d.params.hash_block_size, "-byte hash blocks\n",
      "salt:        ", verity::SaltHex(d.params.salt), "\n", d.root_digest.hex(), "\n"));
}

// Accepts "sha256:<hex>", "sha512:<hex>" or bare hex (veritysetup's form,
// algorithm by length).
Result<Digest> ParseRootDigest(const std::string& text) {
  if (text.find(':') != std::string::npos) return Digest::Parse(text);
  if (text.size() == 64) return Digest::Parse("sha256:" + text);
  if (text.size() == 128) return Digest::Parse("sha512:" + text);
  return InvalidArgumentError("root digest \"", text, "\" is neither sha256 nor sha512 hex");
}

struct FormatFlags {
  std::string image;
  std::string salt;  // hex, "-" for none; empty: random
  uint32_t data_block_size = 4096;
  uint32_t hash_block_size = 4096;
  std::string hash = "sha256";
  uint32_t format = 1;
  std::string uuid_seed;
  int threads = 0;
};

Status RunFormat(const FormatFlags& f) {
  verity::FormatOptions options;
  EVS_ASSIGN_OR_RETURN(options.params.algorithm, ParseHashAlgorithm(f.hash));
  options.params.data_block_size = f.data_block_size;
  options.params.hash_block_size = f.hash_block_size;
  options.params.hash_type = f.format;
  if (!f.salt.empty()) {
    EVS_ASSIGN_OR_RETURN(options.params.salt, verity::ParseSaltHex(f.salt));
    options.random_salt = false;
  }
  options.params.uuid = verity::DeriveUuid(f.uuid_seed.empty() ? f.image : f.uuid_seed);
  options.build.threads = f.threads;
  EVS_ASSIGN_OR_RETURN(verity::VerityDescriptor d, verity::FormatImageFile(f.image, options));
  return PrintDescriptor(d);
}

struct VerifyFlags {
  std::string image;
  std::string root_digest;
  std::optional<uint64_t> hash_offset;
  std::string salt;
  int threads = 0;
};

Status RunVerify(const VerifyFlags& f) {
  EVS_ASSIGN_OR_RETURN(Digest root, ParseRootDigest(f.root_digest));
  verity::VerifyOptions options;
  options.hash_offset = f.hash_offset;
  if (!f.salt.empty()) {
    EVS_ASSIGN_OR_RETURN(std::string salt, verity::ParseSaltHex(f.salt));
    options.expected_salt = salt;
  }
  options.threads = f.threads;
  EVS_RETURN_IF_ERROR(verity::VerifyImageFile(f.image, root, options));
  return Print(StrCat("verified ", f.image, "\n"));
}

struct DumpFlags {
  std::string image;
  std::optional<uint64_t> hash_offset;
};

Status RunDump(const DumpFlags& f) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(f.image, O_RDONLY));
  uint64_t hash_offset;
  if (f.hash_offset) {
    hash_offset = *f.hash_offset;
  } else {
    EVS_ASSIGN_OR_RETURN(hash_offset, verity::LocateTree(fd.get(), f.image));
  }
  char sb[verity::kSuperblockSize];
  EVS_ASSIGN_OR_RETURN(
      size_t got, PreadFull(fd.get(), sb, sizeof sb, static_cast<off_t>(hash_offset), f.image));
  EVS_ASSIGN_OR_RETURN(verity::VerityParams p,
                       verity::DecodeSuperblock(std::string_view(sb, got),
                                                StrCat(f.image, ": superblock at ", hash_offset)));
  EVS_ASSIGN_OR_RETURN(verity::TreeLayout t, verity::TreeLayout::Compute(p, hash_offset));
  std::string out = StrCat(
      "image:           ", f.image, "\n", "uuid:            ", verity::UuidToString(p.uuid), "\n",
      "hash type:       ", p.hash_type, "\n", "hash algorithm:  ", HashAlgorithmName(p.algorithm),
      "\n", "data blocks:     ", p.data_blocks, "\n", "data block size: ", p.data_block_size, "\n",
      "hash block size: ", p.hash_block_size, "\n", "salt:            ", verity::SaltHex(p.salt),
      "\n", "hash offset:     ", hash_offset, "\n", "hash start:      block ", t.hash_start_block,
      " (offset ", t.hash_start_block * p.hash_block_size, ")\n",
      "hash blocks:     ", t.hash_blocks, "\n", "tree end:        ", t.end_offset, "\n",
      "levels:          ", t.levels(), "\n");
  for (int i = static_cast<int>(t.levels()) - 1; i >= 0; --i) {
    out += StrCat("  level ", i, ":       ", t.level_blocks[i], " blocks from block ",
                  t.level_start[i], "\n");
  }
  return Print(out);
}

struct MountFlags {
  std::string image;
  std::string target;
  std::string root_digest;
  std::optional<uint64_t> hash_offset;
  std::string fuse_file;
  int threads = 4;
  bool page_cache = false;
};

Status RunMount(const MountFlags& f) {
  EVS_ASSIGN_OR_RETURN(Digest root, ParseRootDigest(f.root_digest));
  uint64_t hash_offset;
  if (f.hash_offset) {
    hash_offset = *f.hash_offset;
  } else {
    EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(f.image, O_RDONLY));
    EVS_ASSIGN_OR_RETURN(hash_offset, verity::LocateTree(fd.get(), f.image));
  }
  std::string fuse_file = f.fuse_file.empty() ? f.target + ".verified" : f.fuse_file;
  verity::VerifiedBlockFileOptions options;
  options.threads = f.threads;
  options.direct_io = !f.page_cache;
  // Block the stop signals before any thread starts, so that only
  // sigwait() below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  EVS_ASSIGN_OR_RETURN(auto mount, verity::VerifiedErofsMount::MountLayerFile(
                                       f.image, hash_offset, root, fuse_file, f.target, options));
  EVS_RETURN_IF_ERROR(Print(StrCat("mounted ", f.image, " at ", f.target, " (verified through ",
                                   fuse_file, "); stop with SIGINT or SIGTERM\n")));
  int sig = 0;
  sigwait(&stop, &sig);
  auto st = mount->file().stats();
  std::fprintf(stderr, "evs: %llu reads, %llu bytes, %llu blocks verified, %llu failures\n",
               static_cast<unsigned long long>(st.reads),
               static_cast<unsigned long long>(st.bytes_read),
               static_cast<unsigned long long>(st.blocks_verified),
               static_cast<unsigned long long>(st.failures));
  return mount->Unmount();
}

}  // namespace

Status RunLayerConvertVerity(const std::vector<std::string>& paths, const std::string& from_dir,
                             const std::string& mode, const std::string& uuid_seed,
                             uint64_t max_tar_bytes) {
  verity::LayerBuildOptions options;
  if (mode == "full") {
    options.mode = erofs::Mode::kFull;
  } else if (mode == "index") {
    options.mode = erofs::Mode::kTarIndex;
  } else {
    return InvalidArgumentError("--mode must be full or index, not \"", mode, "\"");
  }
  options.uuid_seed = uuid_seed;
  options.max_tar_bytes = max_tar_bytes;
  if (!from_dir.empty()) {
    if (paths.size() != 1) return InvalidArgumentError("with --from-dir, give only OUT");
    EVS_ASSIGN_OR_RETURN(
        verity::LayerInfo info,
        verity::BuildLayer(verity::LayerInput::Directory(from_dir), paths[0], options));
    return PrintDescriptor(*info.verity);
  }
  if (paths.size() != 2) return InvalidArgumentError("give IN (or - for stdin) and OUT");
  const std::string& in = paths[0];
  UniqueFd in_fd;
  int fd = STDIN_FILENO;
  if (in != "-") {
    EVS_ASSIGN_OR_RETURN(in_fd, OpenFile(in, O_RDONLY));
    fd = in_fd.get();
  }
  options.name = in == "-" ? "stdin" : in;
  struct stat st;
  const uint64_t total = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : 0;
  ProgressLine progress("converting " + options.name, total);
  FdSource source(fd, options.name);
  // Progress: count bytes as the decompression thread pulls them.
  struct Counting : ByteSource {
    ByteSource* inner;
    ProgressLine* progress;
    uint64_t done = 0;
    Result<size_t> Read(void* buf, size_t n) override {
      Result<size_t> got = inner->Read(buf, n);
      if (got.ok()) progress->Update(done += *got);
      return got;
    }
  } counted;
  counted.inner = &source;
  counted.progress = &progress;
  EVS_ASSIGN_OR_RETURN(verity::LayerInfo info,
                       verity::BuildLayer(verity::LayerInput::Tar(&counted), paths[1], options));
  return PrintDescriptor(*info.verity);
}

void AddVerityCommands(CLI::App& app, Status* status) {
  CLI::App* verity =
      app.add_subcommand("verity", "dm-verity trees: append, verify, inspect, mount verified");
  verity->require_subcommand(1);

  auto ff = std::make_shared<FormatFlags>();
  CLI::App* format = verity->add_subcommand(
      "format",
      "Append a dm-verity superblock and hash tree to IMG in place (veritysetup-compatible: "
      "`veritysetup verify --hash-offset=<hash offset> IMG IMG <root>` accepts it). Prints "
      "hash offset, salt and, as the last line, the root digest");
  format->add_option("IMG", ff->image, "Image file (padded with zeros to a whole data block)")
      ->required();
  format->add_option("--salt", ff->salt, "Salt as hex, or - for none (default: 32 random bytes)");
  format->add_option("--data-block-size", ff->data_block_size, "512 to 4096 (512 for tar-index)")
      ->capture_default_str();
  format->add_option("--hash-block-size", ff->hash_block_size, "512 to 4096")
      ->capture_default_str();
  format->add_option("--hash", ff->hash, "sha256 or sha512")->capture_default_str();
  format->add_option("--format", ff->format, "1 (normal) or 0 (Chrome OS)")->capture_default_str();
  format->add_option("--uuid-seed", ff->uuid_seed,
                     "Derive the superblock UUID from this text (default: the path)");
  format->add_option("--threads", ff->threads, "Hashing threads (0: one per CPU)");
  format->callback([ff, status] { *status = RunFormat(*ff); });

  auto vf = std::make_shared<VerifyFlags>();
  CLI::App* verify = verity->add_subcommand(
      "verify",
      "Check every data and hash block of IMG against a root digest; a failure names the block");
  verify->add_option("IMG", vf->image, "Image with its tree appended")->required();
  verify->add_option("--root-digest", vf->root_digest, "sha256:<hex> or bare hex")->required();
  verify->add_option("--hash-offset", vf->hash_offset, "Superblock offset (default: found)");
  verify->add_option("--salt", vf->salt, "Recorded salt (hex or -): must match the superblock's");
  verify->add_option("--threads", vf->threads, "Hashing threads (0: one per CPU)");
  verify->callback([vf, status] { *status = RunVerify(*vf); });

  auto df = std::make_shared<DumpFlags>();
  CLI::App* dump = verity->add_subcommand("dump", "Print the verity superblock and tree layout");
  dump->add_option("IMG", df->image, "Image with its tree appended")->required();
  dump->add_option("--hash-offset", df->hash_offset, "Superblock offset (default: found)");
  dump->callback([df, status] { *status = RunDump(*df); });

  auto mf = std::make_shared<MountFlags>();
  CLI::App* mount = verity->add_subcommand(
      "mount",
      "Mount the EROFS image IMG at TARGET through the user-space verified file (FUSE), in the "
      "foreground until SIGINT/SIGTERM");
  mount->add_option("IMG", mf->image, "EROFS image with its tree appended")->required();
  mount->add_option("TARGET", mf->target, "Mount point (a directory)")->required();
  mount->add_option("--root-digest", mf->root_digest, "sha256:<hex> or bare hex")->required();
  mount->add_option("--hash-offset", mf->hash_offset, "Superblock offset (default: found)");
  mount->add_option("--fuse-file", mf->fuse_file, "Where the FUSE file goes (TARGET.verified)");
  mount->add_option("--threads", mf->threads, "FUSE worker threads")->capture_default_str();
  mount->add_flag("--page-cache", mf->page_cache,
                  "Let the FUSE file keep its own page cache (measuring only: data is then "
                  "cached twice)");
  mount->callback([mf, status] { *status = RunMount(*mf); });
}

}  // namespace evs::cli
