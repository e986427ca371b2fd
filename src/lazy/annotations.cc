#include "evs/lazy/annotations.h"

#include <charconv>

#include "evs/oci/media_types.h"
#include "evs/verity/format.h"

namespace evs::lazy {
namespace {

std::string Prefixed(std::string_view key) { return StrCat(kEvsLabelPrefix, key); }

// The value under `key`, preferring the prefixed copy; both must agree.
Result<const std::string*> Lookup(const std::map<std::string, std::string>& annotations,
                                  std::string_view key, std::string_view what) {
  auto plain = annotations.find(std::string(key));
  auto prefixed = annotations.find(Prefixed(key));
  if (plain != annotations.end() && prefixed != annotations.end() &&
      plain->second != prefixed->second) {
    return InvalidArgumentError(what, ": annotations ", key, " (\"", plain->second, "\") and ",
                                prefixed->first, " (\"", prefixed->second, "\") disagree");
  }
  if (prefixed != annotations.end()) return &prefixed->second;
  if (plain != annotations.end()) return &plain->second;
  return NotFoundError(what, ": no annotation ", key, " (nor ", Prefixed(key), ")");
}

Result<uint64_t> ParseDecimal(const std::string& text, std::string_view key,
                              std::string_view what) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    return InvalidArgumentError(what, ": annotation ", key, ": \"", text,
                                "\" is not a decimal number");
  }
  return v;
}

}  // namespace

void SetLayerVerityAnnotations(const LayerVerity& verity,
                               std::map<std::string, std::string>* annotations) {
  const std::pair<std::string_view, std::string> values[] = {
      {kRootDigestAnnotation, verity.root_digest.ToString()},
      {kHashOffsetAnnotation, std::to_string(verity.hash_offset)},
      {kBlockSizeAnnotation, std::to_string(verity.block_size)},
  };
  for (const auto& [key, value] : values) {
    (*annotations)[std::string(key)] = value;
    (*annotations)[Prefixed(key)] = value;
  }
}

Result<LayerVerity> ParseLayerVerity(const std::map<std::string, std::string>& annotations,
                                     std::string_view what) {
  auto root = Lookup(annotations, kRootDigestAnnotation, what);
  auto offset = Lookup(annotations, kHashOffsetAnnotation, what);
  auto block = Lookup(annotations, kBlockSizeAnnotation, what);
  // None at all: not ours. Some but not all: a broken layer.
  if (root.status().code() == Code::kNotFound && offset.status().code() == Code::kNotFound &&
      block.status().code() == Code::kNotFound) {
    return NotFoundError(what, ": no dm-verity annotations (", kRootDigestAnnotation, ")");
  }
  for (const auto* r : {&root, &offset}) {
    if (!r->ok()) {
      return r->status().code() == Code::kNotFound
                 ? Status(Code::kInvalidArgument, r->status().message())
                 : r->status();
    }
  }
  LayerVerity v;
  const std::string& root_text = **root;
  if (root_text.find(':') == std::string::npos) {
    auto parsed = Digest::Parse(StrCat("sha256:", root_text));
    if (!parsed.ok()) {
      return InvalidArgumentError(what, ": annotation ", kRootDigestAnnotation, ": \"", root_text,
                                  "\" is not a digest");
    }
    v.root_digest = *parsed;
  } else {
    auto parsed = Digest::Parse(root_text);
    if (!parsed.ok()) return parsed.status().Annotate(StrCat(what, ": ", kRootDigestAnnotation));
    v.root_digest = *parsed;
  }
  EVS_ASSIGN_OR_RETURN(v.hash_offset, ParseDecimal(**offset, kHashOffsetAnnotation, what));
  if (block.ok()) {
    EVS_ASSIGN_OR_RETURN(uint64_t bs, ParseDecimal(**block, kBlockSizeAnnotation, what));
    if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0) {
      return InvalidArgumentError(what, ": annotation ", kBlockSizeAnnotation, ": ", bs,
                                  " is not a power of two in 512..4096");
    }
    v.block_size = static_cast<uint32_t>(bs);
  } else if (block.status().code() != Code::kNotFound) {
    return block.status();
  }  // absent: the spec's default, 4096
  // Blob sizes stay below 2^53 (oci/manifest.cc); a larger offset is no
  // layer, and arithmetic on it could overflow.
  if (v.hash_offset > (uint64_t{1} << 52)) {
    return InvalidArgumentError(what, ": annotation ", kHashOffsetAnnotation, ": ", v.hash_offset,
                                " is beyond any layer");
  }
  if (v.hash_offset == 0 || v.hash_offset % v.block_size != 0) {
    return InvalidArgumentError(what, ": annotation ", kHashOffsetAnnotation, ": ", v.hash_offset,
                                " is not a positive multiple of the block size ", v.block_size);
  }
  return v;
}

Result<uint64_t> LayerFileSize(const LayerVerity& verity) {
  verity::VerityParams params;
  params.algorithm = verity.root_digest.algorithm();
  params.data_block_size = verity.block_size;
  params.hash_block_size = 4096;
  params.data_blocks = verity.hash_offset / verity.block_size;
  EVS_ASSIGN_OR_RETURN(verity::TreeLayout layout,
                       verity::TreeLayout::Compute(params, verity.hash_offset));
  if (layout.end_offset <= verity.hash_offset) {
    return InvalidArgumentError("verity tree at ", verity.hash_offset, " does not fit a layer");
  }
  return layout.end_offset;
}

Result<RemoteLayer> RemoteLayerFromLabels(const std::map<std::string, std::string>& labels) {
  auto label = [&](std::string_view a, std::string_view b) -> const std::string* {
    for (auto key : {a, b}) {
      auto it = labels.find(std::string(key));
      if (it != labels.end() && !it->second.empty()) return &it->second;
    }
    return nullptr;
  };
  const std::string* layer_digest = label(kCriLayerDigestLabel, kStargzDigestLabel);
  const std::string what =
      StrCat("layer ", layer_digest != nullptr ? *layer_digest : std::string("(unnamed)"));
  RemoteLayer r;
  EVS_ASSIGN_OR_RETURN(r.verity, ParseLayerVerity(labels, what));
  const std::string* image = label(kCriImageRefLabel, kStargzReferenceLabel);
  if (image == nullptr || layer_digest == nullptr) {
    return InvalidArgumentError(what, ": dm-verity labels without ",
                                image == nullptr ? kCriImageRefLabel : kCriLayerDigestLabel);
  }
  auto ref = oci::Reference::Parse(*image);
  if (!ref.ok()) return ref.status().Annotate(StrCat(what, ": label ", kCriImageRefLabel));
  r.repository = *ref;
  auto digest = Digest::Parse(*layer_digest);
  if (!digest.ok()) return digest.status().Annotate(StrCat("label ", kCriLayerDigestLabel));
  r.descriptor.digest = *digest;
  r.descriptor.media_type = std::string(oci::kErofsLayer);
  EVS_ASSIGN_OR_RETURN(uint64_t size, LayerFileSize(r.verity));
  r.descriptor.size = static_cast<int64_t>(size);
  return r;
}

}  // namespace evs::lazy
