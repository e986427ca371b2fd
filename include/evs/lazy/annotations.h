// What a converted image says about each of its layers (DESIGN.md §4): the
// dm-verity parameters a lazy mount needs, as descriptor annotations, and
// where the image came from.
//
// A layer of media type application/vnd.erofs.layer.v1 carries
//
//   org.erofs.dmverity.root_digest   "sha256:<hex>" (the draft erofs-image-spec names,
//   org.erofs.dmverity.hash_offset   decimal bytes   reference/containerd-erofs.md §3)
//   org.erofs.dmverity.block_size    decimal bytes (data block size)
//
// and the same three again under the prefix "containerd.io/snapshot/evs.",
// because containerd passes to Prepare only the layer annotations whose key
// starts with "containerd.io/snapshot/" (reference/remote-snapshotters.md
// §1). The root digest is trusted because the manifest that names it was
// fetched by digest; everything else in the layer is checked against it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/oci/manifest.h"
#include "evs/oci/reference.h"

namespace evs::lazy {

inline constexpr std::string_view kRootDigestAnnotation = "org.erofs.dmverity.root_digest";
inline constexpr std::string_view kHashOffsetAnnotation = "org.erofs.dmverity.hash_offset";
inline constexpr std::string_view kBlockSizeAnnotation = "org.erofs.dmverity.block_size";
// Prefix of the copies containerd hands to the snapshotter as labels.
inline constexpr std::string_view kEvsLabelPrefix = "containerd.io/snapshot/evs.";

// Provenance written by `evs image convert` (ImageConverter):
// on each layer, the digest of the source layer it was converted from (lets
// a second conversion reuse it without converting again);
inline constexpr std::string_view kSourceLayerAnnotation =
    "containerd.io/snapshot/evs.source.layer";
// on each manifest, the source manifest of that platform;
inline constexpr std::string_view kSourceManifestAnnotation =
    "containerd.io/snapshot/evs.source.manifest";
// on each manifest and on the index, the source image as given, pinned to
// the digest it resolved to ("registry/repo:tag@sha256:…").
inline constexpr std::string_view kSourceImageAnnotation =
    "containerd.io/snapshot/evs.source.image";

// The dm-verity parameters of one EROFS layer blob (its tree is appended at
// hash_offset; verity::VerityDescriptor has the full set, read from the
// superblock once the tree is fetched).
struct LayerVerity {
  Digest root_digest;
  uint64_t hash_offset = 0;
  uint32_t block_size = 4096;
  bool operator==(const LayerVerity&) const = default;
};

// Adds both key sets (org.erofs.dmverity.* and containerd.io/snapshot/evs.
// org.erofs.dmverity.*) to `annotations`, replacing earlier values.
void SetLayerVerityAnnotations(const LayerVerity& verity,
                               std::map<std::string, std::string>* annotations);

// Reads the parameters from descriptor annotations or from Prepare labels:
// the prefixed keys when present, else the plain ones; when both are
// present they must agree. The root digest may be "sha256:<hex>" or bare
// hex (sha256). InvalidArgument naming `what` and the key when a key is
// missing or malformed: block size not a power of two in 512..4096, hash
// offset zero or not a multiple of the block size. NotFound when no key of
// either set is present (the layer is not a lazy-loadable EROFS layer).
Result<LayerVerity> ParseLayerVerity(const std::map<std::string, std::string>& annotations,
                                     std::string_view what);

// The size of a layer file whose tree is laid out as veritysetup does by
// default and `evs image convert` writes it: hash type 1, 4096-byte hash
// blocks, the root digest's algorithm, a superblock at hash_offset
// (verity::TreeLayout). What a lazy layer uses when only annotations or
// labels are at hand; a blob of another size fails verification anyway.
Result<uint64_t> LayerFileSize(const LayerVerity& verity);

// A layer in a registry that can be loaded lazily.
struct RemoteLayer {
  oci::Reference repository;   // registry and repository (tag and digest unused)
  oci::Descriptor descriptor;  // the layer blob: digest and size (the file's size)
  LayerVerity verity;          // from the layer's annotations (ParseLayerVerity)
};

// Labels containerd passes to Prepare that name the image and the layer:
// the CRI's (AppendInfoHandlerWrapper; also `ctr-remote images rpull
// --use-containerd-labels`, nerdctl) and stargz's (`ctr-remote images
// rpull`), reference/remote-snapshotters.md §1.
inline constexpr std::string_view kCriImageRefLabel = "containerd.io/snapshot/cri.image-ref";
inline constexpr std::string_view kCriLayerDigestLabel = "containerd.io/snapshot/cri.layer-digest";
inline constexpr std::string_view kStargzReferenceLabel =
    "containerd.io/snapshot/remote/stargz.reference";
inline constexpr std::string_view kStargzDigestLabel =
    "containerd.io/snapshot/remote/stargz.digest";

// The lazy layer a Prepare's labels describe: image reference and layer
// digest from the CRI labels (else stargz's), dm-verity parameters from the
// containerd.io/snapshot/evs.* labels, the size from LayerFileSize. NotFound
// when the labels carry no dm-verity parameters (not an evs layer: use
// another path); InvalidArgument naming the label when one is malformed or
// the image or layer is not named. Pure; no I/O.
Result<RemoteLayer> RemoteLayerFromLabels(const std::map<std::string, std::string>& labels);

}  // namespace evs::lazy
