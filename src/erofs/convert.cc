// ConvertLayer (convert.h): blob → decompressor (its own thread) →
// LayerReader → ErofsWriter.
#include "evs/erofs/convert.h"

#include "evs/common/chunk_source.h"
#include "evs/tar/layer_reader.h"

namespace evs::erofs {
namespace {

// Tar-index mode: the tar reader hands every byte of the tar to the writer,
// which puts it into the image as it is.
class TarToImage : public ByteSink {
 public:
  explicit TarToImage(ErofsWriter* writer) : writer_(writer) {}
  Status Write(const void* data, size_t n) override { return writer_->AddTarBytes(data, n); }

 private:
  ErofsWriter* writer_;
};

Status Convert(ChunkSource* tar_stream, int out_fd, const ConvertOptions& options,
               ConvertResult* result) {
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<ErofsWriter> writer,
                       ErofsWriter::Create(out_fd, options.writer));
  TarToImage tee(writer.get());
  tar::LayerReaderOptions reader_options;
  reader_options.input_name = options.writer.input_name;
  if (options.writer.mode == Mode::kTarIndex) reader_options.tee = &tee;
  tar::LayerReader reader(tar_stream, reader_options);
  for (;;) {
    EVS_ASSIGN_OR_RETURN(const LayerEntry* entry, reader.Next());
    if (entry == nullptr) break;
    EVS_RETURN_IF_ERROR(writer->Add(*entry, reader.data()));
    ++result->entries;
  }
  EVS_ASSIGN_OR_RETURN(result->image, writer->Finish());
  return OkStatus();
}

}  // namespace

Result<ConvertResult> ConvertLayer(ByteSource* blob, int out_fd, const ConvertOptions& options) {
  ConvertResult result;
  const bool blob_digest = options.compute_digests || options.expected_blob_digest.has_value();
  const bool diff_id = options.compute_digests || options.compute_diff_id ||
                       options.expected_diff_id.has_value();
  if (blob_digest || diff_id) {
    // LayerStream hashes and checks the digests asked for (and spreads the
    // hashing over the pipeline's threads).
    tar::LayerStreamOptions stream_options;
    stream_options.input_name = options.writer.input_name;
    stream_options.max_tar_bytes = options.max_tar_bytes;
    stream_options.expected_blob_digest = options.expected_blob_digest;
    stream_options.expected_diff_id = options.expected_diff_id;
    stream_options.compute_blob_digest = blob_digest;
    stream_options.compute_diff_id = diff_id;
    EVS_ASSIGN_OR_RETURN(std::unique_ptr<tar::LayerStream> stream,
                         tar::LayerStream::Open(blob, stream_options));
    EVS_RETURN_IF_ERROR(Convert(stream.get(), out_fd, options, &result));
    result.compression = stream->compression();
    result.blob_digest = stream->blob_digest();
    result.diff_id = stream->diff_id();
    result.blob_bytes = stream->blob_bytes();
    result.tar_bytes = stream->tar_bytes();
    return result;
  }
  // Nothing to hash: the decompressor alone, on a read-ahead thread.
  tar::DecompressOptions decompress_options;
  decompress_options.input_name = options.writer.input_name;
  decompress_options.max_output_bytes = options.max_tar_bytes;
  EVS_ASSIGN_OR_RETURN(std::unique_ptr<tar::Decompressor> decompressor,
                       tar::Decompressor::Create(blob, decompress_options));
  {
    ReadAheadSource tar_stream(decompressor.get());
    EVS_RETURN_IF_ERROR(Convert(&tar_stream, out_fd, options, &result));
  }  // the read-ahead thread has stopped: the decompressor's counters are final
  result.compression = decompressor->compression();
  result.blob_bytes = decompressor->input_bytes();
  result.tar_bytes = decompressor->output_bytes();
  return result;
}

}  // namespace evs::erofs
