#include "evs/lazy/image_converter.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "evs/common/byte_stream.h"
#include "evs/common/digest.h"
#include "evs/common/file.h"
#include "evs/common/log.h"
#include "evs/lazy/annotations.h"
#include "evs/oci/media_types.h"
#include "evs/verity/layer_builder.h"

namespace evs::lazy {
namespace {

using Json = nlohmann::json;

// A scratch directory for the run, removed with everything in it.
class ScratchDir {
 public:
  static Result<ScratchDir> Create(std::string parent) {
    if (parent.empty()) {
      const char* tmp = ::getenv("TMPDIR");
      parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    }
    std::string templ = JoinPath(parent, "evs-convert-XXXXXX");
    if (::mkdtemp(templ.data()) == nullptr) {
      return ErrnoError(errno, StrCat("create a scratch directory in ", parent));
    }
    ScratchDir d;
    d.path_ = templ;
    return d;
  }
  ScratchDir() = default;
  ScratchDir(ScratchDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~ScratchDir() {
    if (!path_.empty()) (void)RemoveTree(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Deterministic per source layer (issue 6: the same source converts to the
// same digests): veritysetup would pick a random salt.
std::string DeriveSalt(const Digest& source_layer) {
  return Digest::Sha256Of(StrCat("evs-convert-salt:", source_layer.ToString())).raw();
}

Result<Digest> DigestOfFile(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  Hasher hasher(HashAlgorithm::kSha256);
  std::vector<uint8_t> buf(1u << 20);
  for (;;) {
    EVS_ASSIGN_OR_RETURN(size_t n, ReadFull(fd.get(), buf.data(), buf.size(), path));
    if (n == 0) break;
    hasher.Update(buf.data(), n);
  }
  return Digest(HashAlgorithm::kSha256, hasher.FinishBytes());
}

struct PlatformJob {
  oci::Platform platform;
  oci::Descriptor source;  // the source manifest (with its index platform when there is one)
  oci::ImageManifest manifest;
  std::string config_bytes;
  oci::ImageConfig config;
};

// One distinct source layer to convert.
struct LayerTask {
  oci::Descriptor source;
  Digest diff_id;
  ConvertedLayer result;
  bool done = false;
};

// The layers an earlier conversion left under DST's tag, by source layer
// digest. Best effort: anything unreadable just means "convert again".
std::map<Digest, oci::Descriptor> ExistingConversions(registry::RegistryClient& client,
                                                      const oci::Reference& dst) {
  std::map<Digest, oci::Descriptor> out;
  auto top = client.FetchManifest(dst);
  if (!top.ok()) return out;
  std::vector<std::string> manifests;
  auto kind = oci::DetectManifestKind(top->bytes, top->descriptor.media_type);
  if (!kind.ok()) return out;
  if (*kind == oci::ManifestKind::kImageIndex) {
    auto index = oci::ImageIndex::Parse(top->bytes, top->descriptor.media_type);
    if (!index.ok()) return out;
    for (const auto& entry : index->manifests) {
      if (!oci::IsImageManifestMediaType(entry.media_type)) continue;
      auto m = client.FetchManifest(dst, entry);
      if (m.ok()) manifests.push_back(std::move(m->bytes));
    }
  } else {
    manifests.push_back(std::move(top->bytes));
  }
  for (const auto& bytes : manifests) {
    auto m = oci::ImageManifest::Parse(bytes);
    if (!m.ok()) continue;
    for (const auto& layer : m->layers) {
      auto src = layer.annotations.find(std::string(kSourceLayerAnnotation));
      if (!IsErofsLayerMediaType(layer.media_type) || src == layer.annotations.end()) continue;
      if (!ParseLayerVerity(layer.annotations, "existing layer").ok()) continue;
      auto d = Digest::Parse(src->second);
      if (d.ok()) out.emplace(*d, layer);
    }
  }
  return out;
}

Result<ConvertedLayer> ConvertLayer(registry::RegistryClient& client, const oci::Reference& src,
                                    const oci::Descriptor& source, const Digest& diff_id,
                                    const oci::Reference& dst, const std::string& scratch,
                                    const ImageConvertOptions& options) {
  const std::string name = StrCat("layer ", source.digest.ToString());
  // Under either name (oci::ClassifyLayer knows only the first).
  if (IsErofsLayerMediaType(source.media_type)) {
    return FailedPreconditionError(name, ": already an EROFS layer (", source.media_type,
                                   "); the image is converted already");
  }
  if (!oci::ClassifyLayer(source.media_type).ok()) {
    return FailedPreconditionError(name, ": media type ", source.media_type,
                                   " is not a layer evs can convert");
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string out = JoinPath(scratch, source.digest.hex() + ".erofs");

  // The blob streams from the registry through a bounded pipe into the
  // converter: no copy of it is stored (issue 6).
  BytePipe pipe;
  std::thread producer([&] {
    Status st = client.FetchBlob(src, source, &pipe);
    pipe.Close(st);
  });
  verity::LayerBuildOptions build;
  build.mode = erofs::Mode::kFull;
  build.uuid_seed = source.digest.ToString();
  build.name = name;
  build.expected_blob_digest = source.digest;
  build.expected_diff_id = diff_id;
  build.max_tar_bytes = options.max_tar_bytes;
  build.salt = DeriveSalt(source.digest);
  build.random_salt = false;
  build.hash_threads = options.hash_threads;
  auto info = verity::BuildLayer(verity::LayerInput::Tar(&pipe), out, build);
  if (!info.ok()) pipe.Cancel(info.status());
  producer.join();
  if (!info.ok()) return info.status().Annotate(StrCat("convert ", src.Name()));
  if (!info->verity) return InternalError(name, ": converted without a verity tree");

  struct Unlink {
    std::string path;
    ~Unlink() { ::unlink(path.c_str()); }
  } remove_after{out};
  EVS_ASSIGN_OR_RETURN(Digest digest, DigestOfFile(out));
  ConvertedLayer result;
  result.source = source;
  result.converted_now = true;
  oci::Descriptor& d = result.converted;
  d.media_type = std::string(LayerMediaTypeName(options.layer_media_type));
  d.digest = digest;
  d.size = static_cast<int64_t>(info->file_size);
  LayerVerity v;
  v.root_digest = info->verity->root_digest;
  v.hash_offset = info->verity->hash_offset;
  v.block_size = info->verity->params.data_block_size;
  SetLayerVerityAnnotations(v, &d.annotations);
  d.annotations[std::string(kSourceLayerAnnotation)] = source.digest.ToString();

  EVS_ASSIGN_OR_RETURN(auto content, registry::FileBlobContent::Open(out));
  EVS_ASSIGN_OR_RETURN(registry::PushOutcome outcome, client.PushBlob(dst, d, content.get()));
  result.pushed = outcome != registry::PushOutcome::kAlreadyExists;
  EVS_LOG(kInfo) << "layer converted" << Kv("layer", source.digest.Short())
                 << Kv("erofs", digest.Short()) << Kv("blob_bytes", info->blob_bytes)
                 << Kv("tar_bytes", info->tar_bytes) << Kv("bytes", info->file_size)
                 << Kv("root", v.root_digest.hex()) << Kv("pushed", result.pushed)
                 << Kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
  return result;
}

// The source config with rootfs.diff_ids replaced; everything else kept
// (history, env, entrypoint, …). Keys come out sorted: deterministic.
Result<std::string> RewriteConfig(const std::string& bytes, const std::vector<Digest>& diff_ids,
                                  std::string_view what) {
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError(what, ": config is not JSON");
  Json ids = Json::array();
  for (const auto& d : diff_ids) ids.push_back(d.ToString());
  Json& rootfs = j["rootfs"];
  if (!rootfs.is_object()) rootfs = Json::object();
  rootfs["type"] = "layers";
  rootfs["diff_ids"] = std::move(ids);
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

oci::Reference ByDigest(const oci::Reference& repo, const Digest& digest) {
  oci::Reference r = repo;
  r.tag.clear();
  r.digest = digest;
  return r;
}

bool IsAttestation(const oci::Descriptor& d) {
  auto it = d.annotations.find("vnd.docker.reference.type");
  if (it != d.annotations.end() && it->second == "attestation-manifest") return true;
  return d.platform && d.platform->os == "unknown";
}

}  // namespace

Result<LayerMediaType> ParseLayerMediaType(std::string_view text) {
  if (text == "erofs") return LayerMediaType::kErofs;
  if (text == "oci") return LayerMediaType::kOciErofs;
  return InvalidArgumentError("layer media type \"", text.substr(0, 64), "\": want erofs (",
                              oci::kErofsLayer, ") or oci (", kOciErofsLayer, ")");
}

std::string_view LayerMediaTypeName(LayerMediaType type) {
  return type == LayerMediaType::kOciErofs ? kOciErofsLayer : oci::kErofsLayer;
}

bool IsErofsLayerMediaType(std::string_view media_type) {
  media_type = media_type.substr(0, media_type.find(';'));
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  return media_type == oci::kErofsLayer || media_type == kOciErofsLayer;
}

Result<ImageConvertResult> ConvertImage(registry::RegistryClient& client, const oci::Reference& src,
                                        const oci::Reference& dst,
                                        const ImageConvertOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!dst.digest.empty()) {
    return InvalidArgumentError("destination ", dst.ToString(),
                                ": give a tag, not a digest (the digest is the result)");
  }
  ImageConvertResult result;
  EVS_ASSIGN_OR_RETURN(registry::FetchedManifest top, client.FetchManifest(src));
  result.source = src.WithDigest(top.descriptor.digest);
  const std::string source_name = result.source.ToString();
  EVS_ASSIGN_OR_RETURN(oci::ManifestKind kind,
                       oci::DetectManifestKind(top.bytes, top.descriptor.media_type));

  // 1. Which source manifests.
  std::vector<PlatformJob> jobs;
  const bool from_index = kind == oci::ManifestKind::kImageIndex;
  if (from_index) {
    EVS_ASSIGN_OR_RETURN(oci::ImageIndex index,
                         oci::ImageIndex::Parse(top.bytes, top.descriptor.media_type));
    std::set<Digest> seen;
    auto add = [&](const oci::Descriptor& d) {
      if (!seen.insert(d.digest).second) return;
      PlatformJob job;
      job.source = d;
      if (d.platform) job.platform = *d.platform;
      jobs.push_back(std::move(job));
    };
    if (options.all_platforms) {
      for (const auto& d : index.manifests) {
        if (oci::IsImageManifestMediaType(d.media_type) && d.platform && !IsAttestation(d)) add(d);
      }
      if (jobs.empty()) return NotFoundError(source_name, ": the index lists no image manifest");
    } else {
      std::vector<oci::Platform> wanted = options.platforms;
      if (wanted.empty()) wanted.push_back(oci::HostPlatform());
      for (const auto& p : wanted) {
        auto d = index.SelectPlatform(p);
        if (!d.ok()) return d.status().Annotate(source_name);
        if (!oci::IsImageManifestMediaType(d->media_type)) {
          return UnimplementedError(source_name, ": platform ", p.ToString(),
                                    " names a nested index");
        }
        add(*d);
      }
    }
  } else {
    PlatformJob job;
    job.source = top.descriptor;
    jobs.push_back(std::move(job));
  }

  // 2. Their manifests and configs.
  for (auto& job : jobs) {
    if (from_index) {
      EVS_ASSIGN_OR_RETURN(registry::FetchedManifest m, client.FetchManifest(src, job.source));
      EVS_ASSIGN_OR_RETURN(job.manifest,
                           oci::ImageManifest::Parse(m.bytes, m.descriptor.media_type));
    } else {
      EVS_ASSIGN_OR_RETURN(job.manifest,
                           oci::ImageManifest::Parse(top.bytes, top.descriptor.media_type));
    }
    const std::string what = StrCat(source_name, " (", job.source.digest.Short(), ")");
    EVS_ASSIGN_OR_RETURN(job.config_bytes, client.FetchSmallBlob(src, job.manifest.config));
    EVS_ASSIGN_OR_RETURN(job.config, oci::ImageConfig::Parse(job.config_bytes));
    if (job.config.diff_ids.size() != job.manifest.layers.size()) {
      return InvalidArgumentError(what, ": config lists ", job.config.diff_ids.size(),
                                  " diff_ids for ", job.manifest.layers.size(), " layers");
    }
    if (!job.source.platform) job.platform = job.config.platform;
  }

  // 3. Distinct layers: reused from DST's previous conversion, or converted.
  std::map<Digest, oci::Descriptor> existing = ExistingConversions(client, dst);
  std::vector<LayerTask> tasks;
  std::map<Digest, size_t> task_of;
  for (const auto& job : jobs) {
    for (size_t i = 0; i < job.manifest.layers.size(); ++i) {
      const auto& layer = job.manifest.layers[i];
      if (task_of.count(layer.digest)) continue;
      task_of[layer.digest] = tasks.size();
      LayerTask t;
      t.source = layer;
      t.diff_id = job.config.diff_ids[i];
      tasks.push_back(std::move(t));
    }
  }
  for (auto& t : tasks) {
    auto it = existing.find(t.source.digest);
    if (it == existing.end()) continue;
    auto exists = client.BlobExists(dst, it->second);
    if (exists.ok() && *exists) {
      t.result.source = t.source;
      t.result.converted = it->second;
      // The blob is the same under either name; the descriptor says what
      // this run was asked for.
      t.result.converted.media_type = std::string(LayerMediaTypeName(options.layer_media_type));
      t.done = true;
      EVS_LOG(kInfo) << "layer already converted in the destination"
                     << Kv("layer", t.source.digest.Short())
                     << Kv("erofs", it->second.digest.Short());
    }
  }

  EVS_ASSIGN_OR_RETURN(ScratchDir scratch, ScratchDir::Create(options.scratch_dir));
  {
    std::atomic<size_t> next{0};
    std::mutex mu;
    Status first_error;
    auto worker = [&] {
      for (;;) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (!first_error.ok()) return;
        }
        const size_t i = next.fetch_add(1);
        if (i >= tasks.size()) return;
        LayerTask& t = tasks[i];
        if (t.done) continue;
        auto r = ConvertLayer(client, src, t.source, t.diff_id, dst, scratch.path(), options);
        std::lock_guard<std::mutex> lock(mu);
        if (!r.ok()) {
          if (first_error.ok()) first_error = r.status();
          return;
        }
        t.result = std::move(*r);
        t.done = true;
      }
    };
    const int n = std::clamp<int>(options.parallel_layers, 1, std::max<int>(1, tasks.size()));
    std::vector<std::thread> workers;
    for (int i = 1; i < n; ++i) workers.emplace_back(worker);
    worker();
    for (auto& w : workers) w.join();
    if (!first_error.ok()) return first_error;
  }
  std::set<Digest> counted;
  for (const auto& t : tasks) {
    if (t.result.converted_now) ++result.layers_converted;
    if (t.result.pushed && counted.insert(t.result.converted.digest).second) {
      ++result.layers_pushed;
      result.bytes_pushed += static_cast<uint64_t>(t.result.converted.size);
    }
  }

  // 4. Configs and manifests; the tag is pushed last so that it only ever
  // names a complete image.
  const bool make_index = jobs.size() > 1 || (from_index && options.all_platforms);
  for (auto& job : jobs) {
    ConvertedManifest cm;
    cm.platform = job.platform;
    cm.source = job.source;
    std::vector<Digest> diff_ids;
    oci::ImageManifest m;
    m.media_type = std::string(oci::kOciManifest);
    for (const auto& layer : job.manifest.layers) {
      const ConvertedLayer& cl = tasks[task_of.at(layer.digest)].result;
      cm.layers.push_back(cl);
      m.layers.push_back(cl.converted);
      diff_ids.push_back(cl.converted.digest);
    }
    const std::string what = StrCat(source_name, " (", job.platform.ToString(), ")");
    EVS_ASSIGN_OR_RETURN(std::string config, RewriteConfig(job.config_bytes, diff_ids, what));
    m.config.media_type = std::string(oci::kOciConfig);
    m.config.digest = Digest::Sha256Of(config);
    m.config.size = static_cast<int64_t>(config.size());
    registry::MemoryBlobContent config_content(config);
    EVS_RETURN_IF_ERROR(client.PushBlob(dst, m.config, &config_content).status());
    m.annotations[std::string(kSourceManifestAnnotation)] = job.source.digest.ToString();
    m.annotations[std::string(kSourceImageAnnotation)] = source_name;
    const std::string json = m.ToJson();
    EVS_ASSIGN_OR_RETURN(
        cm.manifest, client.PushManifest(make_index ? ByDigest(dst, Digest::Sha256Of(json)) : dst,
                                         oci::kOciManifest, json));
    cm.config = m.config;
    result.manifests.push_back(std::move(cm));
  }
  if (make_index) {
    oci::ImageIndex index;
    index.media_type = std::string(oci::kOciIndex);
    for (const auto& cm : result.manifests) {
      oci::Descriptor d = cm.manifest;
      d.media_type = std::string(oci::kOciManifest);
      d.platform = cm.platform;
      index.manifests.push_back(std::move(d));
    }
    index.annotations[std::string(kSourceImageAnnotation)] = source_name;
    EVS_ASSIGN_OR_RETURN(result.top, client.PushManifest(dst, oci::kOciIndex, index.ToJson()));
  } else {
    result.top = result.manifests.front().manifest;
  }
  result.destination = dst.WithDigest(result.top.digest);
  EVS_LOG(kInfo) << "image converted" << Kv("source", source_name)
                 << Kv("destination", result.destination.ToString())
                 << Kv("platforms", result.manifests.size()) << Kv("layers", tasks.size())
                 << Kv("converted", result.layers_converted) << Kv("pushed", result.layers_pushed)
                 << Kv("ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now() - start)
                                 .count());
  return result;
}

}  // namespace evs::lazy
