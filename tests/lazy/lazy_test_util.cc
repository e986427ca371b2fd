#include "lazy_test_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "evs/common/byte_stream.h"
#include "evs/common/file.h"
#include "evs/lazy/annotations.h"
#include "evs/lazy/image_converter.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"

namespace evs::lazy::testing {

using evs::testing::Sh;

std::string PatternBytes(size_t size, uint64_t seed) {
  std::string out(size, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (size_t k = 0; k < 8 && i + k < size; ++k) out[i + k] = static_cast<char>(x >> (8 * k));
  }
  return out;
}

void WriteTree(const std::string& dir, const FileMap& files) {
  ASSERT_TRUE(MakeDirs(dir).ok());
  for (const auto& [path, content] : files) {
    const std::string full = JoinPath(dir, path);
    ASSERT_TRUE(MakeDirs(Dirname(full)).ok());
    if (content.rfind("->", 0) == 0) {
      ASSERT_EQ(::symlink(content.substr(2).c_str(), full.c_str()), 0) << full;
    } else {
      evs::testing::WriteFile(full, content);
    }
  }
}

std::string CompareTree(const std::string& root, const FileMap& files) {
  for (const auto& [path, content] : files) {
    const std::string full = JoinPath(root, path);
    if (content.rfind("->", 0) == 0) {
      char target[4096];
      ssize_t n = ::readlink(full.c_str(), target, sizeof target);
      if (n < 0 || std::string(target, static_cast<size_t>(n)) != content.substr(2)) {
        return StrCat(path, ": symlink differs");
      }
      continue;
    }
    auto got = ReadFileToString(full, 1u << 30);
    if (!got.ok()) return StrCat(path, ": ", got.status().ToString());
    if (*got != content) return StrCat(path, ": content differs (", got->size(), " bytes read)");
  }
  return "";
}

namespace {

Result<Digest> DigestOfFile(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(std::string data, ReadFileToString(path, 1u << 30));
  return Digest::Sha256Of(data);
}

struct BuiltLayer {
  oci::Descriptor desc;
  Digest diff_id;
};

Result<BuiltLayer> BuildAndPushLayer(registry::RegistryClient& client, const oci::Reference& ref,
                                     const std::string& dir, const std::string& scratch) {
  static int counter = 0;
  const std::string tar = JoinPath(scratch, StrCat("layer", ++counter, ".tar"));
  auto r = Sh("tar --sort=name --mtime=@1577836800 --owner=0 --group=0 --numeric-owner -C '" + dir +
              "' -cf '" + tar + "' . && gzip -n -k -f '" + tar + "'");
  if (r.exit_code != 0) return InternalError("tar/gzip failed: ", r.stderr_data);
  BuiltLayer layer;
  EVS_ASSIGN_OR_RETURN(layer.diff_id, DigestOfFile(tar));
  layer.desc.media_type = std::string(oci::kOciLayerTarGzip);
  EVS_ASSIGN_OR_RETURN(layer.desc.digest, DigestOfFile(tar + ".gz"));
  struct stat st;
  ::stat((tar + ".gz").c_str(), &st);
  layer.desc.size = st.st_size;
  EVS_ASSIGN_OR_RETURN(auto content, registry::FileBlobContent::Open(tar + ".gz"));
  EVS_RETURN_IF_ERROR(client.PushBlob(ref, layer.desc, content.get()).status());
  return layer;
}

Result<oci::Descriptor> PushManifestFor(registry::RegistryClient& client, const oci::Reference& ref,
                                        const std::vector<BuiltLayer>& layers,
                                        const std::string& platform_text, bool by_digest) {
  EVS_ASSIGN_OR_RETURN(oci::Platform platform, oci::Platform::Parse(platform_text));
  nlohmann::json config = {{"architecture", platform.architecture},
                           {"os", platform.os},
                           {"config", {{"Env", {"PATH=/usr/bin:/bin"}}, {"Cmd", {"/bin/sh"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", nlohmann::json::array()}}},
                           {"history", nlohmann::json::array()}};
  if (!platform.variant.empty()) config["variant"] = platform.variant;
  oci::ImageManifest m;
  m.media_type = std::string(oci::kOciManifest);
  for (const auto& l : layers) {
    config["rootfs"]["diff_ids"].push_back(l.diff_id.ToString());
    config["history"].push_back({{"created_by", "evs test layer"}});
    m.layers.push_back(l.desc);
  }
  const std::string config_bytes = config.dump();
  m.config.media_type = std::string(oci::kOciConfig);
  m.config.digest = Digest::Sha256Of(config_bytes);
  m.config.size = static_cast<int64_t>(config_bytes.size());
  registry::MemoryBlobContent content(config_bytes);
  EVS_RETURN_IF_ERROR(client.PushBlob(ref, m.config, &content).status());
  const std::string json = m.ToJson();
  oci::Reference target = ref;
  if (by_digest) {
    target.tag.clear();
    target.digest = Digest::Sha256Of(json);
  }
  return client.PushManifest(target, oci::kOciManifest, json);
}

}  // namespace

Result<PushedImage> PushImage(registry::RegistryClient& client, const oci::Reference& ref,
                              const std::vector<std::string>& layer_dirs,
                              const std::string& scratch, const std::string& platform) {
  std::vector<BuiltLayer> layers;
  PushedImage image;
  image.ref = ref;
  for (const auto& dir : layer_dirs) {
    EVS_ASSIGN_OR_RETURN(BuiltLayer l, BuildAndPushLayer(client, ref, dir, scratch));
    image.layers.push_back(l.desc);
    layers.push_back(std::move(l));
  }
  EVS_ASSIGN_OR_RETURN(image.top, PushManifestFor(client, ref, layers, platform, false));
  return image;
}

Result<PushedImage> PushIndex(registry::RegistryClient& client, const oci::Reference& ref,
                              const std::map<std::string, std::string>& platform_dirs,
                              const std::string& scratch) {
  PushedImage image;
  image.ref = ref;
  oci::ImageIndex index;
  index.media_type = std::string(oci::kOciIndex);
  for (const auto& [platform, dir] : platform_dirs) {
    EVS_ASSIGN_OR_RETURN(BuiltLayer l, BuildAndPushLayer(client, ref, dir, scratch));
    if (image.layers.empty()) image.layers.push_back(l.desc);
    EVS_ASSIGN_OR_RETURN(oci::Descriptor d, PushManifestFor(client, ref, {l}, platform, true));
    EVS_ASSIGN_OR_RETURN(oci::Platform p, oci::Platform::Parse(platform));
    d.media_type = std::string(oci::kOciManifest);
    d.platform = p;
    index.manifests.push_back(d);
  }
  EVS_ASSIGN_OR_RETURN(image.top, client.PushManifest(ref, oci::kOciIndex, index.ToJson()));
  return image;
}

FileMap LazyFiles() {
  FileMap f;
  for (int i = 0; i < 200; ++i) {
    f[StrCat("small/f", i / 10, "/", i, ".txt")] = PatternBytes(200 + (i * 277) % 6000, 1000 + i);
  }
  f["mid/target.bin"] = PatternBytes(64 << 10, 77);
  f["big/blob.bin"] = PatternBytes(4 << 20, 78);
  f["deep/a/b/c/d.txt"] = "deep\n";
  f["link"] = "->small/f0/0.txt";
  return f;
}

Result<LazyTestLayer> MakeLazyTestLayer(registry::RegistryClient& client, const std::string& host,
                                        const std::string& repo, const std::string& scratch) {
  LazyTestLayer out;
  out.files = LazyFiles();
  const std::string tree = JoinPath(scratch, repo + "-tree");
  WriteTree(tree, out.files);
  EVS_ASSIGN_OR_RETURN(oci::Reference src, oci::Reference::Parse(host + "/" + repo + ":src"));
  EVS_RETURN_IF_ERROR(PushImage(client, src, {tree}, scratch).status());
  EVS_ASSIGN_OR_RETURN(oci::Reference dst, oci::Reference::Parse(host + "/" + repo + ":evs"));
  ImageConvertOptions options;
  options.scratch_dir = scratch;
  EVS_ASSIGN_OR_RETURN(ImageConvertResult converted, ConvertImage(client, src, dst, options));
  const oci::Descriptor& d = converted.manifests.at(0).layers.at(0).converted;
  out.layer.repository = dst;
  out.layer.descriptor = d;
  EVS_ASSIGN_OR_RETURN(out.layer.verity, ParseLayerVerity(d.annotations, "test layer"));
  out.layer_file = JoinPath(scratch, repo + ".erofs");
  EVS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(out.layer_file, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  FdSink sink(fd.get(), out.layer_file);
  EVS_RETURN_IF_ERROR(client.FetchBlob(dst, d, &sink));
  return out;
}

RemoteLayer Via(const RemoteLayer& layer, const std::string& host) {
  RemoteLayer r = layer;
  r.repository.registry = host;
  return r;
}

std::unique_ptr<registry::RegistryClient> NewClient(registry::RegistryOptions options) {
  auto client = registry::RegistryClient::Create(std::move(options));
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

oci::Reference Ref(const std::string& text) {
  auto r = oci::Reference::Parse(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : oci::Reference{};
}

}  // namespace evs::lazy::testing
