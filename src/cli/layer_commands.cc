// evs layer …: convert a layer (tar, tar.gz, tar.zst, or a directory) to an
// EROFS image, and look into images (inspect, ls, cat). See docs/erofs.md.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "commands.h"
#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/fd.h"
#include "evs/common/file.h"
#include "evs/erofs/convert.h"
#include "evs/erofs/dir_source.h"
#include "evs/erofs/reader.h"
#include "evs/erofs/writer.h"
#include "progress.h"

namespace evs::cli {

// `--verity`: build image and tree in one pass (verity_commands.cc).
Status RunLayerConvertVerity(const std::vector<std::string>& paths, const std::string& from_dir,
                             const std::string& mode, const std::string& uuid_seed,
                             uint64_t max_tar_bytes);

namespace {

// Counts the bytes read from a source and reports them to a progress line.
// Read() runs on the decompression thread; ProgressLine is thread-safe.
class CountingSource : public ByteSource {
 public:
  CountingSource(ByteSource* inner, ProgressLine* progress) : inner_(inner), progress_(progress) {}
  Result<size_t> Read(void* buf, size_t n) override {
    Result<size_t> got = inner_->Read(buf, n);
    if (got.ok()) {
      done_ += *got;
      progress_->Update(done_);
    }
    return got;
  }

 private:
  ByteSource* inner_;
  ProgressLine* progress_;
  uint64_t done_ = 0;
};

struct ConvertFlags {
  std::string mode = "full";
  std::string from_dir;
  std::string uuid_seed;
  uint64_t max_tar_bytes = uint64_t{64} << 30;  // the snapshotter's cap
  bool verity = false;
  std::string blob_digest;  // when given, the input must match them
  std::string diff_id;
  std::vector<std::string> paths;  // IN OUT, or OUT with --from-dir
};

// Prints a summary line on a terminal; scripts see nothing (quiet).
void ReportDone(const std::string& what, const erofs::ImageInfo& image, uint64_t input_bytes,
                double seconds) {
  if (::isatty(STDERR_FILENO) != 1) return;
  std::fprintf(stderr, "%s: %s image, %llu inodes, %.2f s (%s of input)\n", what.c_str(),
               FormatBytes(image.image_size).c_str(), static_cast<unsigned long long>(image.inodes),
               seconds, FormatRate(input_bytes, seconds).c_str());
}

Status RunConvert(const ConvertFlags& flags) {
  if (flags.verity) {
    return RunLayerConvertVerity(flags.paths, flags.from_dir, flags.mode, flags.uuid_seed,
                                 flags.max_tar_bytes);
  }
  erofs::WriterOptions writer;
  if (flags.mode == "full") {
    writer.mode = erofs::Mode::kFull;
  } else if (flags.mode == "index") {
    writer.mode = erofs::Mode::kTarIndex;
  } else {
    return InvalidArgumentError("--mode must be full or index, not \"", flags.mode, "\"");
  }
  writer.uuid_seed = flags.uuid_seed;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  if (!flags.from_dir.empty()) {
    if (flags.paths.size() != 1) return InvalidArgumentError("with --from-dir, give only OUT");
    if (writer.mode == erofs::Mode::kTarIndex)
      return InvalidArgumentError("--mode index needs a tar input: the image embeds the tar");
    const std::string& out = flags.paths[0];
    writer.input_name = flags.from_dir;
    EVS_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(out, 0644));
    EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsWriter> w,
                         erofs::ErofsWriter::Create(file.fd(), writer));
    EVS_RETURN_IF_ERROR(erofs::AddDirectory(flags.from_dir, w.get()));
    EVS_ASSIGN_OR_RETURN(erofs::ImageInfo image, w->Finish());
    EVS_RETURN_IF_ERROR(file.Commit());
    ReportDone("converted " + flags.from_dir, image, image.data_bytes, elapsed());
    return OkStatus();
  }

  if (flags.paths.size() != 2) return InvalidArgumentError("give IN (or - for stdin) and OUT");
  const std::string& in = flags.paths[0];
  const std::string& out = flags.paths[1];
  UniqueFd in_fd;
  int fd = STDIN_FILENO;
  if (in != "-") {
    EVS_ASSIGN_OR_RETURN(in_fd, OpenFile(in, O_RDONLY));
    fd = in_fd.get();
  }
  struct stat st;
  const uint64_t total = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : 0;
  const std::string name = in == "-" ? "stdin" : in;

  erofs::ConvertOptions options;
  options.writer = writer;
  options.writer.input_name = name;
  options.max_tar_bytes = flags.max_tar_bytes;
  if (!flags.blob_digest.empty()) {
    EVS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(flags.blob_digest));
    options.expected_blob_digest = d;
  }
  if (!flags.diff_id.empty()) {
    EVS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(flags.diff_id));
    options.expected_diff_id = d;
  }
  // The output only appears under its name once it is complete.
  EVS_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(out, 0644));
  ProgressLine progress("converting " + name, total);
  FdSource source(fd, name);
  CountingSource counted(&source, &progress);
  EVS_ASSIGN_OR_RETURN(erofs::ConvertResult result,
                       erofs::ConvertLayer(&counted, file.fd(), options));
  EVS_RETURN_IF_ERROR(file.Commit());
  ReportDone("converted " + name, result.image, result.blob_bytes, elapsed());
  return OkStatus();
}

std::string FormatTime(int64_t t) {
  char buf[64];
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  if (::gmtime_r(&tt, &tm) == nullptr) return std::to_string(t);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

Status Print(const std::string& text) {
  return WriteAll(STDOUT_FILENO, text.data(), text.size(), "stdout");
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

Status RunInspect(const std::string& image) {
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsReader> reader, erofs::ErofsReader::Open(image));
  const erofs::ImageSummary& s = reader->summary();
  std::map<std::string, uint64_t> kinds;
  uint64_t file_bytes = 0;
  EVS_RETURN_IF_ERROR(reader->Walk([&](const std::string&, const erofs::Inode& inode) {
    std::string kind = erofs::ModeString(inode.mode).substr(0, 1);
    static const std::map<std::string, std::string> names = {
        {"-", "files"},         {"d", "directories"}, {"l", "symlinks"}, {"c", "char devices"},
        {"b", "block devices"}, {"p", "fifos"},       {"s", "sockets"}};
    ++kinds[names.at(kind)];
    if (inode.is_reg()) file_bytes += inode.size;
    return OkStatus();
  }));
  std::string uuid = Hex(s.uuid.data(), 16);
  uuid = uuid.substr(0, 8) + "-" + uuid.substr(8, 4) + "-" + uuid.substr(12, 4) + "-" +
         uuid.substr(16, 4) + "-" + uuid.substr(20);
  std::string out;
  out += StrCat("image:          ", image, "\n");
  out += StrCat("layout:         ", s.devices.empty() ? "full" : "tar-index", "\n");
  out += StrCat("block size:     ", s.block_size, "\n");
  out += StrCat("blocks:         ", s.blocks, " (", s.blocks * s.block_size, " bytes)\n");
  out += StrCat("inodes:         ", s.inodes, "\n");
  out += StrCat("root nid:       ", s.root_nid, "\n");
  out += StrCat("inode area:     block ", s.meta_blkaddr, "\n");
  out +=
      StrCat("shared xattrs:  ",
             s.xattr_blkaddr == 0 ? std::string("none") : StrCat("block ", s.xattr_blkaddr), "\n");
  out += StrCat("epoch:          ", s.build_time, " (", FormatTime(s.build_time), " UTC)\n");
  out += StrCat("features:       compat 0x", std::hex, s.feature_compat, " incompat 0x",
                s.feature_incompat, std::dec, "\n");
  out += StrCat("checksum:       ", s.checksum_present ? "crc32c ok" : "none", "\n");
  out += StrCat("uuid:           ", uuid, "\n");
  for (size_t i = 0; i < s.devices.size(); ++i) {
    out += StrCat("device ", i + 1, ":       ", s.devices[i].blocks, " blocks at block ",
                  s.devices[i].uniaddr, " (bytes ", s.devices[i].uniaddr * s.block_size, "..",
                  (s.devices[i].uniaddr + s.devices[i].blocks) * s.block_size, ")\n");
  }
  std::string counts;
  for (const auto& [kind, n] : kinds) counts += StrCat(counts.empty() ? "" : ", ", n, " ", kind);
  out += StrCat("entries:        ", counts, "\n");
  out += StrCat("file data:      ", file_bytes, " bytes\n");
  return Print(out);
}

std::string LsLine(const erofs::ErofsReader& reader, const erofs::Inode& inode,
                   const std::string& name) {
  std::string size = S_ISCHR(inode.mode) || S_ISBLK(inode.mode)
                         ? StrCat(inode.rdev_major, ", ", inode.rdev_minor)
                         : std::to_string(inode.size);
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %4u %6u %6u %12s %s ", erofs::ModeString(inode.mode).c_str(),
                inode.nlink, inode.uid, inode.gid, size.c_str(), FormatTime(inode.mtime).c_str());
  std::string line = buf + name;
  if (inode.is_symlink()) {
    Result<std::string> target = reader.ReadSymlink(inode);
    line += " -> " + (target.ok() ? *target : std::string("?"));
  }
  return line + "\n";
}

Status RunLs(const std::string& image, const std::string& path) {
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsReader> reader, erofs::ErofsReader::Open(image));
  EVS_ASSIGN_OR_RETURN(erofs::Inode inode, reader->Lookup(path));
  if (!inode.is_dir()) return Print(LsLine(*reader, inode, path));
  EVS_ASSIGN_OR_RETURN(std::vector<erofs::DirectoryEntry> entries, reader->ReadDirectory(inode));
  std::string out;
  for (const erofs::DirectoryEntry& e : entries) {
    if (e.name == "." || e.name == "..") continue;
    EVS_ASSIGN_OR_RETURN(erofs::Inode child, reader->ReadInode(e.nid));
    out += LsLine(*reader, child, e.name);
    if (out.size() > (1u << 20)) {
      EVS_RETURN_IF_ERROR(Print(out));
      out.clear();
    }
  }
  return Print(out);
}

Status RunCat(const std::string& image, const std::string& path) {
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsReader> reader, erofs::ErofsReader::Open(image));
  EVS_ASSIGN_OR_RETURN(erofs::Inode inode, reader->Lookup(path));
  if (!inode.is_reg())
    return InvalidArgumentError(image, ": \"", path, "\" is not a regular file (",
                                erofs::ModeString(inode.mode), ")");
  std::vector<uint8_t> buf(1u << 20);
  for (uint64_t offset = 0; offset < inode.size;) {
    EVS_ASSIGN_OR_RETURN(size_t n, reader->ReadData(inode, offset, buf.data(), buf.size()));
    if (n == 0) break;
    EVS_RETURN_IF_ERROR(WriteAll(STDOUT_FILENO, buf.data(), n, "stdout"));
    offset += n;
  }
  return OkStatus();
}

}  // namespace

void AddLayerCommands(CLI::App& app, Status* status) {
  CLI::App* layer =
      app.add_subcommand("layer", "Convert layers to EROFS images and look into images");
  layer->require_subcommand(1);

  auto flags = std::make_shared<ConvertFlags>();
  CLI::App* convert = layer->add_subcommand(
      "convert",
      "Convert a layer tar (plain, gzip or zstd, detected by magic; - reads stdin) or, with "
      "--from-dir, a directory tree to an EROFS image. OUT appears only when complete.");
  convert
      ->add_option("--mode", flags->mode,
                   "full: 4 KiB blocks holding the file data; index: 512-byte metadata "
                   "over the original tar, which the image embeds")
      ->capture_default_str();
  convert->add_option("--from-dir", flags->from_dir,
                      "Convert this directory (e.g. an overlay upper dir, whiteouts kept) "
                      "instead of a tar; then give only OUT");
  convert->add_option("--uuid-seed", flags->uuid_seed,
                      "Derive the image UUID from this text (e.g. the blob digest); default: "
                      "all-zero UUID");
  convert
      ->add_option("--max-tar-bytes", flags->max_tar_bytes,
                   "Fail if the uncompressed tar exceeds this many bytes: a gzip bomb stops "
                   "here (0: no limit)")
      ->capture_default_str();
  convert->add_option("--blob-digest", flags->blob_digest,
                      "Fail unless IN has this digest (sha256:…); no output file then");
  convert->add_option("--diff-id", flags->diff_id,
                      "Fail unless the uncompressed tar has this digest (the layer's diffID)");
  convert->add_flag("--verity", flags->verity,
                    "Append a dm-verity tree built in the same pass; prints hash offset, salt "
                    "and, as the last line, the root digest");
  convert->add_option("paths", flags->paths, "IN|- OUT (or OUT with --from-dir)")
      ->required()
      ->expected(1, 2);
  convert->callback([flags, status] { *status = RunConvert(*flags); });

  auto image = std::make_shared<std::string>();
  auto path = std::make_shared<std::string>();
  CLI::App* inspect = layer->add_subcommand(
      "inspect", "Print what an EROFS image's superblock says, and entry counts");
  inspect->add_option("IMG", *image, "EROFS image")->required();
  inspect->callback([image, status] { *status = RunInspect(*image); });

  CLI::App* ls =
      layer->add_subcommand("ls", "List a directory of an EROFS image (ls -l style), or one entry");
  ls->add_option("IMG", *image, "EROFS image")->required();
  ls->add_option("PATH", *path, "Path in the image (default: the root)");
  ls->callback([image, path, status] { *status = RunLs(*image, *path); });

  CLI::App* cat = layer->add_subcommand("cat", "Write a regular file of an EROFS image to stdout");
  cat->add_option("IMG", *image, "EROFS image")->required();
  cat->add_option("PATH", *path, "Path of the file in the image")->required();
  cat->callback([image, path, status] { *status = RunCat(*image, *path); });
}

}  // namespace evs::cli
