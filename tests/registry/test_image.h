// Test images for the registry tests: OCI image layouts with gzip layers of
// random content, built with tar and gzip, one manifest per platform under an
// index (shared base layer, per-platform layers), so that pulls and pushes
// exercise indexes, platform selection, deduplication and mounts.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "evs/common/digest.h"
#include "evs/common/status.h"
#include "evs/oci/manifest.h"

namespace evs::testing {

struct TestImage {
  std::string layout_dir;  // an OCI image layout; index.json names `tag`
  std::string tag;
  oci::Descriptor index;                                       // the top-level index
  std::map<std::string, oci::Descriptor> manifests;            // by platform ("linux/amd64")
  std::map<std::string, std::vector<oci::Descriptor>> layers;  // by platform
  std::map<Digest, std::string> blobs;                         // every blob's bytes, by digest
};

// Builds an image under `dir` with one manifest per platform in
// `platforms` ("linux/amd64", "linux/arm64/v8"), each with `layers` gzip
// layers of about `layer_bytes` random (incompressible) bytes; layer 0 is
// shared by all platforms. With `docker_types`, Docker schema 2 media types.
Result<TestImage> BuildTestImage(const std::string& dir, const std::vector<std::string>& platforms,
                                 int layers, size_t layer_bytes, const std::string& tag,
                                 bool docker_types = false);

// `skopeo copy --all --preserve-digests oci:<layout>:<tag> docker://<dest>`,
// with --dest-creds when `creds` ("user:pass") is set. Returns skopeo's
// error output on failure.
Status SkopeoPush(const TestImage& image, const std::string& dest, const std::string& creds = "");

}  // namespace evs::testing
