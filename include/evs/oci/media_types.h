// Media types of OCI and Docker image documents and layers, and what a layer's
// media type says about how to read it.
#pragma once

#include <string_view>

#include "evs/common/status.h"

namespace evs::oci {

// OCI image-spec v1.1 (image-spec/media-types.md).
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerTarGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerTarZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayerNondistributableTar =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kOciLayerNondistributableTarGzip =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kOciLayerNondistributableTarZstd =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
inline constexpr std::string_view kOciEmptyJson = "application/vnd.oci.empty.v1+json";

// Docker image manifest v2 schema 2.
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerTarGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerForeignTarGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
// Schema 1 is recognised only to be refused with a clear error.
inline constexpr std::string_view kDockerManifestSchema1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerManifestSchema1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// An EROFS image with its dm-verity tree appended (DESIGN.md §4); the media
// type containerd 2.3+ recognises.
inline constexpr std::string_view kErofsLayer = "application/vnd.erofs.layer.v1";

// The Accept header value for manifest requests: every manifest and index
// type this module parses, OCI first.
inline constexpr std::string_view kManifestAcceptHeader =
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

bool IsImageManifestMediaType(std::string_view media_type);  // OCI or Docker manifest
bool IsImageIndexMediaType(std::string_view media_type);     // OCI index or Docker list
bool IsConfigMediaType(std::string_view media_type);         // OCI or Docker config

// How a layer blob is to be read.
enum class LayerFormat {
  kTar,      // uncompressed tar
  kTarGzip,  // gzip-compressed tar
  kTarZstd,  // zstd-compressed tar
  kErofs,    // EROFS + dm-verity tree (kErofsLayer)
};

// Maps a layer media type (OCI, OCI non-distributable, Docker, EROFS) to its
// format. Parameters after ';' are ignored. Anything else is Unimplemented
// naming the media type, so callers can fall back (DESIGN.md §1).
Result<LayerFormat> ClassifyLayer(std::string_view media_type);

}  // namespace evs::oci
