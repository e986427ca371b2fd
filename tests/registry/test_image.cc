#include "test_image.h"

#include "evs/common/file.h"
#include "evs/oci/image_layout.h"
#include "evs/oci/media_types.h"
#include "evs/oci/platform.h"
#include "test_util.h"

namespace evs::testing {
namespace {

struct Layer {
  std::string gz;
  Digest digest, diff_id;
};

Result<Layer> MakeLayer(const std::string& work, const std::string& name, size_t bytes) {
  std::string dir = work + "/" + name;
  // Deterministic tar options; random, incompressible file content.
  std::string cmd = "set -e; mkdir -p '" + dir + "/c/d'; head -c " + std::to_string(bytes) +
                    " /dev/urandom > '" + dir + "/c/d/" + name + ".bin'; echo hello > '" + dir +
                    "/c/" + name +
                    ".txt'; tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C '" +
                    dir + "/c' -cf '" + dir + "/layer.tar' .; gzip -n -1 -c '" + dir +
                    "/layer.tar' > '" + dir + "/layer.tar.gz'";
  auto r = Sh(cmd);
  if (r.exit_code != 0) return InternalError("building layer ", name, ": ", r.stderr_data);
  EVS_ASSIGN_OR_RETURN(std::string tar, ReadFileToString(dir + "/layer.tar", size_t{1} << 32));
  Layer l;
  EVS_ASSIGN_OR_RETURN(l.gz, ReadFileToString(dir + "/layer.tar.gz", size_t{1} << 32));
  l.digest = Digest::Sha256Of(l.gz);
  l.diff_id = Digest::Sha256Of(tar);
  Sh("rm -rf '" + dir + "'");
  return l;
}

}  // namespace

Result<TestImage> BuildTestImage(const std::string& dir, const std::vector<std::string>& platforms,
                                 int layers, size_t layer_bytes, const std::string& tag,
                                 bool docker_types) {
  TestImage image;
  image.layout_dir = dir + "/layout";
  image.tag = tag;
  EVS_ASSIGN_OR_RETURN(oci::ImageLayout layout, oci::ImageLayout::Create(image.layout_dir));
  auto put = [&](std::string_view media_type, const std::string& bytes) -> Result<oci::Descriptor> {
    oci::Descriptor d{std::string(media_type), Digest::Sha256Of(bytes),
                      static_cast<int64_t>(bytes.size())};
    EVS_RETURN_IF_ERROR(layout.WriteBlob(d.digest, bytes));
    image.blobs[d.digest] = bytes;
    return d;
  };
  const std::string_view layer_type =
      docker_types ? oci::kDockerLayerTarGzip : oci::kOciLayerTarGzip;
  const std::string_view config_type = docker_types ? oci::kDockerConfig : oci::kOciConfig;
  const std::string_view manifest_type = docker_types ? oci::kDockerManifest : oci::kOciManifest;
  const std::string_view index_type = docker_types ? oci::kDockerManifestList : oci::kOciIndex;

  EVS_ASSIGN_OR_RETURN(Layer base, MakeLayer(dir, "base", layer_bytes));
  EVS_ASSIGN_OR_RETURN(oci::Descriptor base_desc, put(layer_type, base.gz));
  oci::ImageIndex index;
  index.media_type = std::string(index_type);
  int n = 0;
  for (const auto& text : platforms) {
    EVS_ASSIGN_OR_RETURN(oci::Platform platform, oci::Platform::Parse(text));
    std::vector<oci::Descriptor> descs = {base_desc};
    std::vector<Digest> diff_ids = {base.diff_id};
    for (int i = 1; i < layers; ++i) {
      EVS_ASSIGN_OR_RETURN(Layer l, MakeLayer(dir, StrCat("p", n, "l", i), layer_bytes));
      EVS_ASSIGN_OR_RETURN(oci::Descriptor d, put(layer_type, l.gz));
      descs.push_back(d);
      diff_ids.push_back(l.diff_id);
    }
    std::string config =
        "{\"architecture\":\"" + platform.architecture + "\",\"os\":\"" + platform.os + "\"" +
        (platform.variant.empty() ? "" : ",\"variant\":\"" + platform.variant + "\"") +
        ",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\","
        "\"diff_ids\":[";
    for (size_t i = 0; i < diff_ids.size(); ++i) {
      if (i > 0) config += ',';
      config += '"';
      config += diff_ids[i].ToString();
      config += '"';
    }
    config += "]}}";
    EVS_ASSIGN_OR_RETURN(oci::Descriptor config_desc, put(config_type, config));
    oci::ImageManifest m;
    m.media_type = std::string(manifest_type);
    m.config = config_desc;
    m.layers = descs;
    EVS_ASSIGN_OR_RETURN(oci::Descriptor md, put(manifest_type, m.ToJson()));
    md.platform = platform;
    index.manifests.push_back(md);
    image.manifests[platform.ToString()] = md;
    image.layers[platform.ToString()] = descs;
    ++n;
  }
  EVS_ASSIGN_OR_RETURN(image.index, put(index_type, index.ToJson()));
  EVS_RETURN_IF_ERROR(layout.AddToIndex(image.index, tag));
  return image;
}

Status SkopeoPush(const TestImage& image, const std::string& dest, const std::string& creds) {
  std::string cmd = "skopeo copy --quiet --all --preserve-digests --dest-tls-verify=false ";
  if (!creds.empty()) cmd += "--dest-creds '" + creds + "' ";
  cmd += "oci:" + image.layout_dir + ":" + image.tag + " docker://" + dest + " 2>&1";
  auto r = Sh(cmd);
  if (r.exit_code != 0) return InternalError("skopeo push to ", dest, ": ", r.stdout_data);
  return OkStatus();
}

}  // namespace evs::testing
