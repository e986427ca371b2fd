// Image documents: descriptors, image manifests (OCI and Docker schema 2),
// indexes (OCI index and Docker manifest list) and image configs, parsed from
// and written to JSON. Parsers treat their input as hostile: any byte string
// gives either a value whose every field has been type- and range-checked or
// an InvalidArgument error naming the field ("manifest: layers[2].digest:
// …"); they never throw, never crash and allocate at most a small multiple of
// the input size. Callers cap the input size (registry/ does, at 4 MiB by
// default).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/oci/platform.h"

namespace evs::oci {

// Annotation keys used across the project.
inline constexpr std::string_view kAnnotationRefName = "org.opencontainers.image.ref.name";

// A content descriptor (image-spec descriptor.md).
struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::vector<std::string> urls;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;  // only in index entries
  std::string artifact_type;

  bool operator==(const Descriptor& other) const = default;
};

// An image manifest: OCI (kOciManifest) or Docker schema 2 (kDockerManifest).
struct ImageManifest {
  // The document's media type: its own "mediaType" field, else the type it
  // was served as; always one of the two manifest types after Parse().
  std::string media_type;
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  // Parses `json`. `served_as` is the Content-Type the document came with
  // (may be empty or a generic type such as application/json); a document
  // whose own mediaType contradicts a specific `served_as` is refused, as is
  // schemaVersion other than 2, a missing config, or a layer whose digest or
  // size is invalid. Cost: linear in the input.
  static Result<ImageManifest> Parse(std::string_view json, std::string_view served_as = "");
  // Compact JSON with a stable key order (schemaVersion, mediaType, config,
  // layers, annotations); digest it to name the manifest.
  std::string ToJson() const;
};

// An index: OCI (kOciIndex) or Docker manifest list (kDockerManifestList).
struct ImageIndex {
  std::string media_type;
  std::string artifact_type;
  std::vector<Descriptor> manifests;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  // As ImageManifest::Parse, for indexes.
  static Result<ImageIndex> Parse(std::string_view json, std::string_view served_as = "");
  std::string ToJson() const;

  // The entry that best suits `want` (PlatformMatchRank; on equal rank the
  // first listed). Entries that are not image manifests or indexes, or that
  // carry no platform, are skipped. NotFound listing the platforms on offer
  // when none matches.
  Result<Descriptor> SelectPlatform(const Platform& want) const;
};

// What a manifest document is.
enum class ManifestKind { kImageManifest, kImageIndex };

// Decides from the served Content-Type and the document's own "mediaType"
// (or, lacking both, the presence of "manifests" versus "layers") whether
// `json` is a manifest or an index. Docker schema 1 is Unimplemented;
// unknown or contradictory types are InvalidArgument naming them.
Result<ManifestKind> DetectManifestKind(std::string_view json, std::string_view served_as = "");

// The parts of an image config (image-spec config.md) that evs uses. The
// rest of the document is not interpreted; keep the bytes to preserve it.
struct ImageConfig {
  Platform platform;             // architecture, os, variant (not normalised)
  std::string rootfs_type;       // "layers"
  std::vector<Digest> diff_ids;  // one per layer, uncompressed tar digests

  // Requires rootfs.type == "layers" and valid diff_ids; architecture and
  // os must be strings when present.
  static Result<ImageConfig> Parse(std::string_view json);
};

}  // namespace evs::oci
