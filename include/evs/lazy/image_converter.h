// ConvertImage: what `evs image convert SRC DST` does (issue 6, DESIGN.md
// §4). Pulls SRC, turns each layer into a full-mode EROFS image with its
// dm-verity tree appended (verity::BuildLayer, fed straight from the
// registry stream: the source blob is never stored), and pushes to DST the
// layers (media type application/vnd.erofs.layer.v1, or the OCI-prefixed
// name containerd 1.6/1.7 accept as a layer, with the dm-verity
// annotations of annotations.h), a config whose rootfs.diff_ids are the
// digests of the new layer files (an EROFS layer is not compressed, so its
// diffID is its blob digest), and an OCI manifest per platform — under an
// OCI index when several platforms are converted.
//
// Deterministic: the verity salt and every UUID derive from the source
// layer digest, documents are written with a stable key order and carry no
// time stamps, so converting the same source twice gives the same digests.
// A layer DST already has is not pushed again (HEAD first); a layer that an
// earlier conversion into DST's tag already produced (recognised by its
// kSourceLayerAnnotation) is not even converted again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/status.h"
#include "evs/oci/manifest.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"

namespace evs::lazy {

// The OCI-prefixed name of an EROFS layer. containerd 1.6 and 1.7 treat as
// layers only media types starting with application/vnd.oci.image.layer.
// (or Docker's) — images.IsLayerType — so only under this name does a
// converted layer reach a snapshotter's Prepare with its labels there;
// containerd 2.1-2.2's EROFS differ also takes a type ending in ".erofs"
// as native (reference/containerd-erofs.md §4).
inline constexpr std::string_view kOciErofsLayer = "application/vnd.oci.image.layer.v1.erofs";

// The media type converted layers are pushed with (docs/lazy.md, "Which
// media type").
enum class LayerMediaType {
  kErofs,     // application/vnd.erofs.layer.v1: containerd 2.3+'s name (issue 6)
  kOciErofs,  // kOciErofsLayer: what containerd 1.6/1.7 pull as a layer
};
// "erofs" or "oci"; anything else is InvalidArgument.
Result<LayerMediaType> ParseLayerMediaType(std::string_view text);
std::string_view LayerMediaTypeName(LayerMediaType type);  // the media type itself
// True for both names of an EROFS layer (parameters after ';' ignored).
bool IsErofsLayerMediaType(std::string_view media_type);

struct ImageConvertOptions {
  // Platforms to convert; empty means the host's (oci::HostPlatform()).
  // Ignored with all_platforms. A SRC that is a single manifest is
  // converted as it is, whatever its platform.
  std::vector<oci::Platform> platforms;
  // Every image manifest of SRC's index (entries without a platform, and
  // attestation manifests with platform unknown/unknown, are skipped).
  bool all_platforms = false;
  // Layers converted at once. Each uses one decompression thread, one
  // converting thread and `hash_threads` hashing threads, and a temporary
  // layer file in scratch_dir until it is pushed.
  int parallel_layers = 2;
  int hash_threads = 1;
  // Where layer files are built before they are pushed; empty: $TMPDIR or
  // /tmp. Each file is removed once pushed (or on failure).
  std::string scratch_dir;
  // Cap on a layer's uncompressed tar (0: none).
  uint64_t max_tar_bytes = 0;
  // The media type of the pushed layers. Only the descriptors differ: the
  // layer blobs, and so the config, are the same either way.
  LayerMediaType layer_media_type = LayerMediaType::kErofs;
};

struct ConvertedLayer {
  oci::Descriptor source;      // the SRC layer
  oci::Descriptor converted;   // the EROFS layer as DST's manifest lists it
  bool converted_now = false;  // false: reused from DST's existing manifest
  bool pushed = false;         // false: DST already had the blob
};

struct ConvertedManifest {
  oci::Platform platform;
  oci::Descriptor source;    // SRC's manifest for this platform
  oci::Descriptor manifest;  // the pushed manifest
  oci::Descriptor config;    // the pushed config
  std::vector<ConvertedLayer> layers;
};

struct ImageConvertResult {
  oci::Reference source;       // SRC pinned to the digest it resolved to
  oci::Reference destination;  // DST pinned to the pushed manifest or index
  oci::Descriptor top;         // what DST's tag now names (manifest or index)
  std::vector<ConvertedManifest> manifests;
  uint64_t layers_converted = 0;  // distinct layers built in this run
  uint64_t layers_pushed = 0;
  uint64_t bytes_pushed = 0;
};

// Converts SRC into DST (a tag; without one, "latest"). Errors name the
// image, platform and layer: NotFound (no such image, or no manifest for a
// requested platform), FailedPrecondition (SRC's layers are already EROFS
// layers, or a media type that is not a layer), any error of the registry
// (pull or push) or of the conversion (a bad tar: InvalidArgument; a blob
// that does not match its digest: DataLoss). Nothing is pushed under DST's
// tag unless every layer, config and manifest was pushed first; blobs
// pushed before a failure stay in DST unreferenced (the registry's garbage
// collection removes them). Blocks for the whole conversion; disk use is
// at most `parallel_layers` layer files; memory is bounded per layer (the
// EROFS writer's metadata and the verity builder).
Result<ImageConvertResult> ConvertImage(registry::RegistryClient& client, const oci::Reference& src,
                                        const oci::Reference& dst,
                                        const ImageConvertOptions& options = {});

}  // namespace evs::lazy
