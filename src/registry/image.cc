#include "evs/registry/image.h"

#include "evs/oci/media_types.h"

namespace evs::registry {

Result<PlatformImage> FetchPlatformImage(RegistryClient& client, const oci::Reference& ref,
                                         const oci::Platform& platform, const CallOptions& call) {
  PlatformImage out;
  EVS_ASSIGN_OR_RETURN(out.top, client.FetchManifest(ref, call));
  out.reference = ref.WithDigest(out.top.descriptor.digest);
  FetchedManifest current = out.top;
  // Indexes may nest (an index of indexes); follow a few levels.
  for (int depth = 0; depth < 4 && oci::IsImageIndexMediaType(current.descriptor.media_type);
       ++depth) {
    auto index = oci::ImageIndex::Parse(current.bytes, current.descriptor.media_type);
    if (!index.ok()) return index.status().Annotate(ref.ToString());
    auto chosen = index->SelectPlatform(platform);
    if (!chosen.ok()) return chosen.status().Annotate(ref.ToString());
    if (!out.index) out.index = *index;
    EVS_ASSIGN_OR_RETURN(current, client.FetchManifest(ref, *chosen, call));
  }
  if (!oci::IsImageManifestMediaType(current.descriptor.media_type)) {
    return InvalidArgumentError(ref.ToString(), ": ", current.descriptor.digest.ToString(),
                                " has media type \"", current.descriptor.media_type,
                                "\", not an image manifest");
  }
  out.manifest = std::move(current);
  auto parsed = oci::ImageManifest::Parse(out.manifest.bytes, out.manifest.descriptor.media_type);
  if (!parsed.ok()) return parsed.status().Annotate(ref.ToString());
  out.parsed = std::move(*parsed);
  EVS_ASSIGN_OR_RETURN(out.config_bytes, client.FetchSmallBlob(ref, out.parsed.config, call));
  auto config = oci::ImageConfig::Parse(out.config_bytes);
  if (!config.ok()) {
    return config.status().Annotate(
        StrCat(ref.ToString(), ": config ", out.parsed.config.digest.Short()));
  }
  out.config = std::move(*config);
  // ERofs-converted images keep the tar diff_ids; a mismatch in count means
  // the config does not describe these layers.
  if (out.config.diff_ids.size() != out.parsed.layers.size()) {
    return InvalidArgumentError(ref.ToString(), ": config lists ", out.config.diff_ids.size(),
                                " diff_ids for ", out.parsed.layers.size(), " layers");
  }
  return out;
}

}  // namespace evs::registry
