#include "evs/verity/layer_builder.h"

#include <unistd.h>

#include <chrono>

#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/erofs/convert.h"
#include "evs/erofs/dir_source.h"
#include "evs/verity/tree_builder.h"

namespace evs::verity {

Result<LayerInfo> BuildLayer(const LayerInput& input, const std::string& out_path,
                             const LayerBuildOptions& options) {
  const bool from_tar = input.tar != nullptr;
  if (from_tar == !input.directory.empty()) {
    return InvalidArgumentError("build layer ", out_path,
                                ": give exactly one of a tar stream and a directory");
  }
  if (!from_tar && options.mode == erofs::Mode::kTarIndex) {
    return InvalidArgumentError("build layer ", out_path, " from ", input.directory,
                                ": tar-index mode needs a tar (the image embeds it)");
  }
  const std::string name =
      !options.name.empty() ? options.name : (from_tar ? out_path : input.directory);
  const auto start = std::chrono::steady_clock::now();

  if (!options.replace && ::access(out_path.c_str(), F_OK) == 0) {
    return AlreadyExistsError("layer file ", out_path, " exists");
  }
  // Everything is written under a temporary name beside out_path, which
  // AtomicFile removes unless Commit() succeeds.
  EVS_ASSIGN_OR_RETURN(AtomicFile file, AtomicFile::Create(out_path, 0644));

  erofs::WriterOptions writer;
  writer.mode = options.mode;
  writer.uuid_seed = options.uuid_seed;
  writer.input_name = name;
  writer.scratch_dir = Dirname(out_path);

  std::unique_ptr<VerityTreeBuilder> tree;
  if (options.verity) {
    VerityParams params;
    params.hash_type = options.hash_type;
    params.algorithm = options.algorithm;
    // The tree's data blocks are the writer's blocks: 512 bytes for
    // tar-index images, so that a dm-verity device over them keeps EROFS's
    // 512-byte block size (reference §0.4, §4.3).
    params.data_block_size = options.mode == erofs::Mode::kTarIndex ? 512 : 4096;
    params.hash_block_size = 4096;
    params.salt = options.salt;
    if (params.salt.empty() && options.random_salt) {
      EVS_ASSIGN_OR_RETURN(params.salt, RandomSalt());
    }
    params.uuid = DeriveUuid(options.uuid_seed);
    TreeBuildOptions build;
    build.threads = options.hash_threads;
    build.async_bytes = options.hash_queue_bytes;
    build.spill_dir = Dirname(out_path);
    build.what = name;
    EVS_ASSIGN_OR_RETURN(tree, VerityTreeBuilder::Create(params, build));
    writer.observer = tree.get();
  }

  LayerInfo info;
  if (from_tar) {
    erofs::ConvertOptions convert;
    convert.writer = writer;
    convert.expected_blob_digest = options.expected_blob_digest;
    convert.expected_diff_id = options.expected_diff_id;
    convert.max_tar_bytes = options.max_tar_bytes;
    convert.compute_digests = options.compute_digests;
    convert.compute_diff_id = options.compute_diff_id;
    EVS_ASSIGN_OR_RETURN(erofs::ConvertResult result,
                         erofs::ConvertLayer(input.tar, file.fd(), convert));
    info.image = result.image;
    // Present when the tar module computed them (asked for, or checked).
    if (!result.blob_digest.empty()) info.blob_digest = result.blob_digest;
    if (!result.diff_id.empty()) info.diff_id = result.diff_id;
    info.compression = result.compression;
    info.blob_bytes = result.blob_bytes;
    info.tar_bytes = result.tar_bytes;
    info.entries = result.entries;
  } else {
    EVS_ASSIGN_OR_RETURN(std::unique_ptr<erofs::ErofsWriter> w,
                         erofs::ErofsWriter::Create(file.fd(), writer));
    erofs::DirSourceOptions dir;
    dir.input_name = name;
    EVS_RETURN_IF_ERROR(erofs::AddDirectory(input.directory, w.get(), dir));
    EVS_ASSIGN_OR_RETURN(info.image, w->Finish());
  }
  info.file_size = info.image.image_size;

  if (tree) {
    const uint32_t dbs = options.mode == erofs::Mode::kTarIndex ? 512 : 4096;
    if (info.image.image_size % dbs != 0 || info.image.block_size != dbs) {
      return InternalError(name, ": EROFS image of ", info.image.image_size, " bytes in ",
                           info.image.block_size, "-byte blocks does not fit ", dbs,
                           "-byte verity data blocks");
    }
    EVS_ASSIGN_OR_RETURN(VerityDescriptor descriptor,
                         tree->Finish(file.fd(), info.image.image_size / dbs));
    EVS_ASSIGN_OR_RETURN(TreeLayout layout,
                         TreeLayout::Compute(descriptor.params, descriptor.hash_offset));
    info.file_size = layout.end_offset;
    info.verity = std::move(descriptor);
  }
  EVS_RETURN_IF_ERROR(file.Commit(options.replace));

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EVS_LOG(kInfo) << "layer built" << Kv("layer", name) << Kv("path", out_path)
                 << Kv("mode", options.mode == erofs::Mode::kFull ? "full" : "index")
                 << Kv("bytes", info.file_size)
                 << Kv("root", info.verity ? info.verity->root_digest.hex() : std::string("-"))
                 << Kv("ms", static_cast<int64_t>(seconds * 1000));
  return info;
}

}  // namespace evs::verity
