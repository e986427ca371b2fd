// Fixtures for the lazy tests: file trees with known contents, images built
// from them (tar + gzip by the real tools, pushed with RegistryClient), and
// a registry that can be stopped and started again on the same port with
// the same storage ("registry down, then back").
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/lazy/lazy_block_source.h"
#include "evs/oci/manifest.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"
#include "local_registry.h"
#include "test_util.h"

namespace evs::lazy::testing {

// path (relative, '/'-separated) → content. A value starting with "->" makes
// a symlink to the rest.
using FileMap = std::map<std::string, std::string>;

// `size` pseudo-random bytes from `seed` (xorshift; incompressible).
std::string PatternBytes(size_t size, uint64_t seed);

// Creates `files` under `dir`; every mtime is set to 2020-01-01 so that
// the tar (and so the digests) does not depend on when the test ran.
void WriteTree(const std::string& dir, const FileMap& files);

// Checks that `root` (a mounted layer) holds `files` with those contents.
// Returns "" or a description of the first difference.
std::string CompareTree(const std::string& root, const FileMap& files);

struct PushedImage {
  oci::Reference ref;                   // as pushed (tag)
  oci::Descriptor top;                  // manifest or index
  std::vector<oci::Descriptor> layers;  // of the first platform
};

// Pushes an image with one gzip layer per directory in `layer_dirs` (tar
// with sorted names, numeric owner 0:0, then gzip -n), a config for
// `platform` and an OCI manifest under ref's tag. `scratch` holds the
// blobs meanwhile.
Result<PushedImage> PushImage(registry::RegistryClient& client, const oci::Reference& ref,
                              const std::vector<std::string>& layer_dirs,
                              const std::string& scratch,
                              const std::string& platform = "linux/amd64");

// Pushes an OCI index with one single-layer manifest per platform
// (platform → layer directory).
Result<PushedImage> PushIndex(registry::RegistryClient& client, const oci::Reference& ref,
                              const std::map<std::string, std::string>& platform_dirs,
                              const std::string& scratch);

// A layer converted by ConvertImage and pushed, ready to be loaded lazily:
// LazyFiles() in one layer.
struct LazyTestLayer {
  RemoteLayer layer;       // repository, descriptor, verity parameters
  FileMap files;           // what the layer holds
  std::string layer_file;  // a local copy of the converted blob (for offsets)
};
// ~200 small files, a 64 KiB "mid/target.bin", a 4 MiB "big/blob.bin",
// nested directories and a symlink: about 4.7 MiB of EROFS, ten 512 KiB
// chunks.
FileMap LazyFiles();
// Builds LazyFiles() into an image `<host>/<repo>:src`, converts it into
// `<host>/<repo>:evs` and returns its layer. `scratch` holds the files.
Result<LazyTestLayer> MakeLazyTestLayer(registry::RegistryClient& client, const std::string& host,
                                        const std::string& repo, const std::string& scratch);
// The same layer as seen through another host (a proxy in front of the
// same registry).
RemoteLayer Via(const RemoteLayer& layer, const std::string& host);

std::unique_ptr<registry::RegistryClient> NewClient(registry::RegistryOptions options = {});
oci::Reference Ref(const std::string& text);

}  // namespace evs::lazy::testing
