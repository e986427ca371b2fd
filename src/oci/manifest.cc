// Parsers for image-spec manifest.md, image-index.md, config.md and Docker's
// manifest v2 schema 2. nlohmann::json is used with exceptions off for
// parsing and every value's type is checked before it is read, so no input
// can throw or crash (these parsers are fuzzed).
#include "evs/oci/manifest.h"

#include <limits>
#include <nlohmann/json.hpp>

#include "evs/oci/media_types.h"

namespace evs::oci {
namespace {

using Json = nlohmann::json;

// Sizes beyond 2^53 cannot round-trip through JSON numbers in other tools;
// no real blob is that large.
constexpr int64_t kMaxSize = int64_t{1} << 53;
// A bound on list lengths so a small hostile document cannot make us build
// a huge vector of descriptors (4 MiB of "{}," is ~1.4M entries).
constexpr size_t kMaxEntries = 100000;

std::string Clip(std::string_view s, size_t n = 120) {
  if (s.size() <= n) return std::string(s);
  return std::string(s.substr(0, n)) + "…";
}

std::string_view Essence(std::string_view media_type) {
  size_t semi = media_type.find(';');
  if (semi != std::string_view::npos) media_type = media_type.substr(0, semi);
  while (!media_type.empty() && media_type.back() == ' ') media_type.remove_suffix(1);
  return media_type;
}

bool IsGenericJsonType(std::string_view t) {
  t = Essence(t);
  return t.empty() || t == "application/json" || t == "text/plain" ||
         t == "application/octet-stream";
}

Result<Json> ParseJson(std::string_view text, std::string_view what) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(what, ": not valid JSON");
  if (!j.is_object()) return InvalidArgumentError(what, ": not a JSON object");
  return j;
}

// Optional string member: absent → "", wrong type → error.
Result<std::string> OptString(const Json& obj, const char* key, std::string_view what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgumentError(what, ".", key, ": not a string");
  return it->get<std::string>();
}

Result<std::map<std::string, std::string>> ParseStringMap(const Json& obj, const char* key,
                                                          std::string_view what) {
  std::map<std::string, std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_object()) return InvalidArgumentError(what, ".", key, ": not an object");
  if (it->size() > kMaxEntries) return InvalidArgumentError(what, ".", key, ": too many entries");
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv.value().is_string()) {
      return InvalidArgumentError(what, ".", key, "[\"", Clip(kv.key()), "\"]: not a string");
    }
    out.emplace(kv.key(), kv.value().get<std::string>());
  }
  return out;
}

Result<std::vector<std::string>> ParseStringList(const Json& obj, const char* key,
                                                 std::string_view what) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) return InvalidArgumentError(what, ".", key, ": not an array");
  if (it->size() > kMaxEntries) return InvalidArgumentError(what, ".", key, ": too many entries");
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) {
      return InvalidArgumentError(what, ".", key, "[", i, "]: not a string");
    }
    out.push_back((*it)[i].get<std::string>());
  }
  return out;
}

Result<Platform> ParsePlatform(const Json& j, std::string_view what) {
  if (!j.is_object()) return InvalidArgumentError(what, ": not an object");
  Platform p;
  EVS_ASSIGN_OR_RETURN(p.os, OptString(j, "os", what));
  EVS_ASSIGN_OR_RETURN(p.architecture, OptString(j, "architecture", what));
  EVS_ASSIGN_OR_RETURN(p.variant, OptString(j, "variant", what));
  EVS_ASSIGN_OR_RETURN(p.os_version, OptString(j, "os.version", what));
  EVS_ASSIGN_OR_RETURN(p.os_features, ParseStringList(j, "os.features", what));
  return p;
}

Result<Descriptor> ParseDescriptor(const Json& j, std::string_view what) {
  if (!j.is_object()) return InvalidArgumentError(what, ": not an object");
  Descriptor d;
  EVS_ASSIGN_OR_RETURN(d.media_type, OptString(j, "mediaType", what));
  if (d.media_type.empty()) return InvalidArgumentError(what, ".mediaType: missing");
  auto digest = j.find("digest");
  if (digest == j.end()) return InvalidArgumentError(what, ".digest: missing");
  if (!digest->is_string()) return InvalidArgumentError(what, ".digest: not a string");
  auto parsed = Digest::Parse(digest->get_ref<const std::string&>());
  if (!parsed.ok()) return InvalidArgumentError(what, ".digest: ", parsed.status().message());
  d.digest = *parsed;
  auto size = j.find("size");
  if (size == j.end()) return InvalidArgumentError(what, ".size: missing");
  if (size->is_number_unsigned()) {
    uint64_t v = size->get<uint64_t>();
    if (v > static_cast<uint64_t>(kMaxSize)) return InvalidArgumentError(what, ".size: too large");
    d.size = static_cast<int64_t>(v);
  } else if (size->is_number_integer()) {
    int64_t v = size->get<int64_t>();
    if (v < 0) return InvalidArgumentError(what, ".size: negative");
    d.size = v;
  } else {
    return InvalidArgumentError(what, ".size: not an integer");
  }
  EVS_ASSIGN_OR_RETURN(d.urls, ParseStringList(j, "urls", what));
  EVS_ASSIGN_OR_RETURN(d.annotations, ParseStringMap(j, "annotations", what));
  EVS_ASSIGN_OR_RETURN(d.artifact_type, OptString(j, "artifactType", what));
  auto platform = j.find("platform");
  if (platform != j.end() && !platform->is_null()) {
    EVS_ASSIGN_OR_RETURN(d.platform, ParsePlatform(*platform, StrCat(what, ".platform")));
  }
  return d;
}

Status CheckSchemaVersion(const Json& j, std::string_view what) {
  auto it = j.find("schemaVersion");
  if (it == j.end()) return InvalidArgumentError(what, ": schemaVersion missing");
  if (!it->is_number_integer()) return InvalidArgumentError(what, ": schemaVersion not a number");
  if (it->get<int64_t>() == 1) {
    return UnimplementedError(what, ": Docker schema 1 manifests are not supported");
  }
  if (it->get<int64_t>() != 2) {
    return InvalidArgumentError(what, ": schemaVersion ", it->get<int64_t>(), ", expected 2");
  }
  return OkStatus();
}

// The media type a document is taken to have: its own mediaType if present,
// else the served type; refused when the two are both specific and differ.
Result<std::string> EffectiveMediaType(const Json& j, std::string_view served_as,
                                       std::string_view what) {
  EVS_ASSIGN_OR_RETURN(std::string own, OptString(j, "mediaType", what));
  std::string_view served = Essence(served_as);
  if (!own.empty() && !IsGenericJsonType(served) && served != own) {
    return InvalidArgumentError(what, ": served as \"", Clip(served),
                                "\" but declares mediaType \"", Clip(own), "\"");
  }
  if (!own.empty()) return own;
  if (!IsGenericJsonType(served)) return std::string(served);
  return std::string();
}

// Ordered so the output is stable and reads like other tools' (mediaType first).
using OrderedJson = nlohmann::ordered_json;

OrderedJson DescriptorToJson(const Descriptor& d) {
  OrderedJson j = OrderedJson::object();
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.ToString();
  j["size"] = d.size;
  if (!d.urls.empty()) j["urls"] = d.urls;
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (!d.artifact_type.empty()) j["artifactType"] = d.artifact_type;
  if (d.platform) {
    OrderedJson p = OrderedJson::object();
    p["architecture"] = d.platform->architecture;
    p["os"] = d.platform->os;
    if (!d.platform->os_version.empty()) p["os.version"] = d.platform->os_version;
    if (!d.platform->os_features.empty()) p["os.features"] = d.platform->os_features;
    if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
    j["platform"] = p;
  }
  return j;
}

std::string Dump(const OrderedJson& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, OrderedJson::error_handler_t::replace);
}

}  // namespace

Result<ManifestKind> DetectManifestKind(std::string_view json, std::string_view served_as) {
  std::string_view served = Essence(served_as);
  if (served == kDockerManifestSchema1 || served == kDockerManifestSchema1Signed) {
    return UnimplementedError("manifest served as \"", served,
                              "\": Docker schema 1 manifests are not supported");
  }
  EVS_ASSIGN_OR_RETURN(Json j, ParseJson(json, "manifest"));
  EVS_RETURN_IF_ERROR(CheckSchemaVersion(j, "manifest"));
  EVS_ASSIGN_OR_RETURN(std::string type, EffectiveMediaType(j, served_as, "manifest"));
  if (type.empty()) {
    bool has_manifests = j.contains("manifests");
    bool has_layers = j.contains("layers") || j.contains("config");
    if (has_manifests && !has_layers) return ManifestKind::kImageIndex;
    if (has_layers && !has_manifests) return ManifestKind::kImageManifest;
    return InvalidArgumentError(
        "manifest: no mediaType and neither only \"manifests\" nor only "
        "\"layers\"");
  }
  if (IsImageManifestMediaType(type)) return ManifestKind::kImageManifest;
  if (IsImageIndexMediaType(type)) return ManifestKind::kImageIndex;
  if (type == kDockerManifestSchema1 || type == kDockerManifestSchema1Signed) {
    return UnimplementedError("manifest: Docker schema 1 manifests are not supported");
  }
  return InvalidArgumentError("manifest: unsupported media type \"", Clip(type), "\"");
}

Result<ImageManifest> ImageManifest::Parse(std::string_view json, std::string_view served_as) {
  constexpr std::string_view what = "manifest";
  EVS_ASSIGN_OR_RETURN(Json j, ParseJson(json, what));
  EVS_RETURN_IF_ERROR(CheckSchemaVersion(j, what));
  ImageManifest m;
  EVS_ASSIGN_OR_RETURN(m.media_type, EffectiveMediaType(j, served_as, what));
  if (m.media_type.empty()) {
    if (j.contains("manifests")) return InvalidArgumentError(what, ": is an index, not a manifest");
    m.media_type = std::string(kOciManifest);
  }
  if (!IsImageManifestMediaType(m.media_type)) {
    return InvalidArgumentError(what, ": media type \"", Clip(m.media_type),
                                "\" is not an image manifest");
  }
  auto config = j.find("config");
  if (config == j.end()) return InvalidArgumentError(what, ": config missing");
  EVS_ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, "manifest: config"));
  auto layers = j.find("layers");
  if (layers == j.end()) return InvalidArgumentError(what, ": layers missing");
  if (!layers->is_array()) return InvalidArgumentError(what, ": layers: not an array");
  if (layers->size() > kMaxEntries) return InvalidArgumentError(what, ": too many layers");
  m.layers.reserve(layers->size());
  for (size_t i = 0; i < layers->size(); ++i) {
    EVS_ASSIGN_OR_RETURN(Descriptor d,
                         ParseDescriptor((*layers)[i], StrCat(what, ": layers[", i, "]")));
    m.layers.push_back(std::move(d));
  }
  EVS_ASSIGN_OR_RETURN(m.annotations, ParseStringMap(j, "annotations", what));
  EVS_ASSIGN_OR_RETURN(m.artifact_type, OptString(j, "artifactType", what));
  auto subject = j.find("subject");
  if (subject != j.end() && !subject->is_null()) {
    EVS_ASSIGN_OR_RETURN(m.subject, ParseDescriptor(*subject, "manifest: subject"));
  }
  return m;
}

std::string ImageManifest::ToJson() const {
  OrderedJson j = OrderedJson::object();
  j["schemaVersion"] = 2;
  j["mediaType"] = media_type.empty() ? std::string(kOciManifest) : media_type;
  if (!artifact_type.empty()) j["artifactType"] = artifact_type;
  j["config"] = DescriptorToJson(config);
  OrderedJson layer_list = OrderedJson::array();
  for (const auto& l : layers) layer_list.push_back(DescriptorToJson(l));
  j["layers"] = layer_list;
  if (subject) j["subject"] = DescriptorToJson(*subject);
  if (!annotations.empty()) j["annotations"] = annotations;
  return Dump(j);
}

Result<ImageIndex> ImageIndex::Parse(std::string_view json, std::string_view served_as) {
  constexpr std::string_view what = "index";
  EVS_ASSIGN_OR_RETURN(Json j, ParseJson(json, what));
  EVS_RETURN_IF_ERROR(CheckSchemaVersion(j, what));
  ImageIndex idx;
  EVS_ASSIGN_OR_RETURN(idx.media_type, EffectiveMediaType(j, served_as, what));
  if (idx.media_type.empty()) {
    if (j.contains("layers")) return InvalidArgumentError(what, ": is a manifest, not an index");
    idx.media_type = std::string(kOciIndex);
  }
  if (!IsImageIndexMediaType(idx.media_type)) {
    return InvalidArgumentError(what, ": media type \"", Clip(idx.media_type),
                                "\" is not an image index");
  }
  auto manifests = j.find("manifests");
  if (manifests == j.end()) return InvalidArgumentError(what, ": manifests missing");
  if (!manifests->is_array()) return InvalidArgumentError(what, ": manifests: not an array");
  if (manifests->size() > kMaxEntries) return InvalidArgumentError(what, ": too many manifests");
  idx.manifests.reserve(manifests->size());
  for (size_t i = 0; i < manifests->size(); ++i) {
    EVS_ASSIGN_OR_RETURN(Descriptor d,
                         ParseDescriptor((*manifests)[i], StrCat(what, ": manifests[", i, "]")));
    idx.manifests.push_back(std::move(d));
  }
  EVS_ASSIGN_OR_RETURN(idx.annotations, ParseStringMap(j, "annotations", what));
  EVS_ASSIGN_OR_RETURN(idx.artifact_type, OptString(j, "artifactType", what));
  auto subject = j.find("subject");
  if (subject != j.end() && !subject->is_null()) {
    EVS_ASSIGN_OR_RETURN(idx.subject, ParseDescriptor(*subject, "index: subject"));
  }
  return idx;
}

std::string ImageIndex::ToJson() const {
  OrderedJson j = OrderedJson::object();
  j["schemaVersion"] = 2;
  j["mediaType"] = media_type.empty() ? std::string(kOciIndex) : media_type;
  if (!artifact_type.empty()) j["artifactType"] = artifact_type;
  OrderedJson list = OrderedJson::array();
  for (const auto& m : manifests) list.push_back(DescriptorToJson(m));
  j["manifests"] = list;
  if (subject) j["subject"] = DescriptorToJson(*subject);
  if (!annotations.empty()) j["annotations"] = annotations;
  return Dump(j);
}

Result<Descriptor> ImageIndex::SelectPlatform(const Platform& want) const {
  const Descriptor* best = nullptr;
  int best_rank = std::numeric_limits<int>::max();
  std::string offered;
  for (const auto& d : manifests) {
    if (!IsImageManifestMediaType(d.media_type) && !IsImageIndexMediaType(d.media_type)) continue;
    if (!d.platform) continue;
    if (!offered.empty()) offered += ", ";
    offered += d.platform->ToString();
    auto rank = PlatformMatchRank(want, *d.platform);
    if (rank && *rank < best_rank) {
      best = &d;
      best_rank = *rank;
    }
  }
  if (best == nullptr) {
    return NotFoundError(
        "no image for platform ", Normalize(want).ToString(), " in the index (",
        offered.empty() ? "it lists no platforms" : "it offers " + Clip(offered, 400), ")");
  }
  return *best;
}

Result<ImageConfig> ImageConfig::Parse(std::string_view json) {
  constexpr std::string_view what = "image config";
  EVS_ASSIGN_OR_RETURN(Json j, ParseJson(json, what));
  ImageConfig c;
  EVS_ASSIGN_OR_RETURN(c.platform.os, OptString(j, "os", what));
  EVS_ASSIGN_OR_RETURN(c.platform.architecture, OptString(j, "architecture", what));
  EVS_ASSIGN_OR_RETURN(c.platform.variant, OptString(j, "variant", what));
  auto rootfs = j.find("rootfs");
  if (rootfs == j.end()) return InvalidArgumentError(what, ": rootfs missing");
  if (!rootfs->is_object()) return InvalidArgumentError(what, ": rootfs: not an object");
  EVS_ASSIGN_OR_RETURN(c.rootfs_type, OptString(*rootfs, "type", "image config: rootfs"));
  if (c.rootfs_type != "layers") {
    return InvalidArgumentError(what, ": rootfs.type \"", Clip(c.rootfs_type),
                                "\", expected \"layers\"");
  }
  auto diff_ids = rootfs->find("diff_ids");
  if (diff_ids == rootfs->end()) return InvalidArgumentError(what, ": rootfs.diff_ids missing");
  if (!diff_ids->is_array()) return InvalidArgumentError(what, ": rootfs.diff_ids: not an array");
  if (diff_ids->size() > kMaxEntries) return InvalidArgumentError(what, ": too many diff_ids");
  for (size_t i = 0; i < diff_ids->size(); ++i) {
    const Json& v = (*diff_ids)[i];
    if (!v.is_string()) {
      return InvalidArgumentError(what, ": rootfs.diff_ids[", i, "]: not a string");
    }
    auto d = Digest::Parse(v.get_ref<const std::string&>());
    if (!d.ok()) {
      return InvalidArgumentError(what, ": rootfs.diff_ids[", i, "]: ", d.status().message());
    }
    c.diff_ids.push_back(*d);
  }
  return c;
}

}  // namespace evs::oci
