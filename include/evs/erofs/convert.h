// ConvertLayer: one layer blob (a tar, gzip- or zstd-compressed or plain) to
// one EROFS image in a single streaming pass — decompression on a thread of
// its own, tar entries parsed as they arrive, file data copied once into the
// image (DESIGN.md §1 "convert-on-pull", §4). The CLI's `evs layer convert`
// and the snapshotter's convert-on-pull path both call this.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/erofs/writer.h"
#include "evs/tar/decompress.h"

namespace evs::erofs {

struct ConvertOptions {
  // Mode, UUID seed, block observer (the verity tree), input name for errors.
  WriterOptions writer;
  // Verified at the end of the stream; a mismatch fails the conversion with
  // DataLoss (tar/decompress.h LayerStreamOptions).
  std::optional<Digest> expected_blob_digest;
  std::optional<Digest> expected_diff_id;
  // Cap on the uncompressed tar (a gzip bomb ends in ResourceExhausted).
  // 0: no cap.
  uint64_t max_tar_bytes = 0;
  // Compute the blob digest and the diffID even when nothing is expected
  // (ConvertResult then carries them). Two SHA-256 passes, over the blob and
  // over the tar: about 0.8 × the cost of inflating (bench/convert), so they
  // are skipped unless asked for or needed for a check.
  bool compute_digests = false;
  // Compute the diffID alone (ConvertResult::diff_id), without the blob
  // digest unless that is expected or compute_digests is set: for a caller
  // whose source already checks the blob digest (a registry download), one
  // SHA-256 pass over the tar (~0.5 × inflating) instead of two.
  bool compute_diff_id = false;
};

struct ConvertResult {
  ImageInfo image;
  tar::Compression compression = tar::Compression::kNone;
  // sha256 of the bytes read from `blob` and of the uncompressed tar; each
  // empty unless computed (ConvertOptions::compute_digests, compute_diff_id
  // or an expected digest).
  Digest blob_digest;
  Digest diff_id;
  uint64_t blob_bytes = 0;
  uint64_t tar_bytes = 0;
  uint64_t entries = 0;  // tar entries added (after OCI whiteout handling)
};

// Reads `blob` to its end and writes the image to `out_fd` (see
// ErofsWriter::Create: empty, readable and writable, not owned). Blocks
// until done; decompression runs on a thread of its own (and the diffID, when
// computed, on a third: tar/decompress.h LayerStream).
//
// Errors name the input (options.writer.input_name), the tar entry and its
// offset: a corrupt stream or tar and anything the writer refuses are
// InvalidArgument, the cap ResourceExhausted, a digest mismatch DataLoss, I/O
// failures Internal. On error `out_fd` holds garbage: write through an
// AtomicFile.
Result<ConvertResult> ConvertLayer(ByteSource* blob, int out_fd, const ConvertOptions& options);

}  // namespace evs::erofs
