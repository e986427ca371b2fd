#include "evs/oci/media_types.h"

namespace evs::oci {
namespace {

// "type/subtype; charset=utf-8" → "type/subtype", trimmed.
std::string_view Essence(std::string_view media_type) {
  size_t semi = media_type.find(';');
  if (semi != std::string_view::npos) media_type = media_type.substr(0, semi);
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  while (!media_type.empty() && (media_type.front() == ' ' || media_type.front() == '\t')) {
    media_type.remove_prefix(1);
  }
  return media_type;
}

}  // namespace

bool IsImageManifestMediaType(std::string_view media_type) {
  media_type = Essence(media_type);
  return media_type == kOciManifest || media_type == kDockerManifest;
}

bool IsImageIndexMediaType(std::string_view media_type) {
  media_type = Essence(media_type);
  return media_type == kOciIndex || media_type == kDockerManifestList;
}

bool IsConfigMediaType(std::string_view media_type) {
  media_type = Essence(media_type);
  return media_type == kOciConfig || media_type == kDockerConfig;
}

Result<LayerFormat> ClassifyLayer(std::string_view media_type) {
  std::string_view t = Essence(media_type);
  if (t == kOciLayerTar || t == kOciLayerNondistributableTar) return LayerFormat::kTar;
  if (t == kOciLayerTarGzip || t == kOciLayerNondistributableTarGzip || t == kDockerLayerTarGzip ||
      t == kDockerLayerForeignTarGzip) {
    return LayerFormat::kTarGzip;
  }
  if (t == kOciLayerTarZstd || t == kOciLayerNondistributableTarZstd) return LayerFormat::kTarZstd;
  if (t == kErofsLayer) return LayerFormat::kErofs;
  return UnimplementedError("unsupported layer media type \"", media_type.substr(0, 200), "\"");
}

}  // namespace evs::oci
