// image-spec image-layout.md: "oci-layout" {"imageLayoutVersion": "1.0.0"},
// "index.json" (an image index), "blobs/<alg>/<encoded>".
#include "evs/oci/image_layout.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "evs/oci/media_types.h"

namespace evs::oci {
namespace {

constexpr std::string_view kLayoutFile = "oci-layout";
constexpr std::string_view kIndexFile = "index.json";
constexpr std::string_view kLayoutVersion = "1.0.0";

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status CheckLayoutFile(const std::string& path) {
  EVS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 64 << 10));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgumentError(path, ": not a JSON object");
  auto v = j.find("imageLayoutVersion");
  if (v == j.end() || !v->is_string()) {
    return InvalidArgumentError(path, ": imageLayoutVersion missing");
  }
  if (v->get<std::string>() != kLayoutVersion) {
    return FailedPreconditionError(path, ": imageLayoutVersion \"", v->get<std::string>(),
                                   "\", expected \"", kLayoutVersion, "\"");
  }
  return OkStatus();
}

}  // namespace

Result<ImageLayout> ImageLayout::Create(const std::string& dir) {
  EVS_RETURN_IF_ERROR(MakeDirs(JoinPath(dir, "blobs")));
  std::string layout_path = JoinPath(dir, kLayoutFile);
  if (Exists(layout_path)) {
    EVS_RETURN_IF_ERROR(CheckLayoutFile(layout_path));
  } else {
    EVS_RETURN_IF_ERROR(
        WriteFileAtomic(layout_path, StrCat("{\"imageLayoutVersion\":\"", kLayoutVersion, "\"}")));
  }
  std::string index_path = JoinPath(dir, kIndexFile);
  if (!Exists(index_path)) {
    ImageIndex empty;
    empty.media_type = std::string(kOciIndex);
    EVS_RETURN_IF_ERROR(WriteFileAtomic(index_path, empty.ToJson()));
  }
  ImageLayout layout(dir);
  EVS_RETURN_IF_ERROR(layout.ReadIndex().status());
  return layout;
}

Result<ImageLayout> ImageLayout::Open(const std::string& dir) {
  std::string layout_path = JoinPath(dir, kLayoutFile);
  if (!Exists(layout_path)) {
    return NotFoundError(dir, ": not an OCI image layout (no ", kLayoutFile, ")");
  }
  EVS_RETURN_IF_ERROR(CheckLayoutFile(layout_path));
  ImageLayout layout(dir);
  EVS_RETURN_IF_ERROR(layout.ReadIndex().status());
  return layout;
}

std::string ImageLayout::BlobPath(const Digest& digest) const {
  return StrCat(dir_, "/blobs/", HashAlgorithmName(digest.algorithm()), "/", digest.hex());
}

bool ImageLayout::HasBlob(const Digest& digest, int64_t size) const {
  struct stat st;
  if (::stat(BlobPath(digest).c_str(), &st) != 0) return false;
  return S_ISREG(st.st_mode) && st.st_size == size;
}

Result<AtomicFile> ImageLayout::CreateBlobFile(const Digest& digest) const {
  std::string path = BlobPath(digest);
  EVS_RETURN_IF_ERROR(MakeDirs(Dirname(path)));
  return AtomicFile::Create(path);
}

Status ImageLayout::WriteBlob(const Digest& digest, std::string_view data) const {
  Digest actual = Digest::Of(digest.algorithm(), data);
  if (actual != digest) {
    return DataLossError("blob ", digest.ToString(), ": content hashes to ", actual.ToString());
  }
  EVS_ASSIGN_OR_RETURN(AtomicFile file, CreateBlobFile(digest));
  EVS_RETURN_IF_ERROR(file.Write(data));
  return file.Commit();
}

Result<std::string> ImageLayout::ReadBlob(const Digest& digest, size_t max_size) const {
  EVS_ASSIGN_OR_RETURN(std::string data, ReadFileToString(BlobPath(digest), max_size));
  Digest actual = Digest::Of(digest.algorithm(), data);
  if (actual != digest) {
    return DataLossError(BlobPath(digest), ": content hashes to ", actual.ToString(),
                         ", not its name");
  }
  return data;
}

Result<ImageIndex> ImageLayout::ReadIndex() const {
  std::string path = JoinPath(dir_, kIndexFile);
  EVS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 16u << 20));
  auto index = ImageIndex::Parse(text);
  if (!index.ok()) return index.status().Annotate(path);
  return index;
}

Status ImageLayout::AddToIndex(Descriptor desc, std::string_view ref_name) const {
  EVS_ASSIGN_OR_RETURN(ImageIndex index, ReadIndex());
  if (!ref_name.empty()) {
    desc.annotations[std::string(kAnnotationRefName)] = std::string(ref_name);
    std::erase_if(index.manifests, [&](const Descriptor& d) {
      auto it = d.annotations.find(std::string(kAnnotationRefName));
      return it != d.annotations.end() && it->second == ref_name;
    });
  }
  index.manifests.push_back(std::move(desc));
  return WriteFileAtomic(JoinPath(dir_, kIndexFile), index.ToJson());
}

}  // namespace evs::oci
