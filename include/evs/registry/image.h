// Fetching the documents of one image for one platform: the manifest (via
// the index if there is one) and the config. What the CLI's `image inspect`
// and `image pull` and the snapshotter's convert-on-pull start from.
#pragma once

#include <optional>
#include <string>

#include "evs/common/status.h"
#include "evs/oci/manifest.h"
#include "evs/oci/platform.h"
#include "evs/oci/reference.h"
#include "evs/registry/client.h"

namespace evs::registry {

struct PlatformImage {
  oci::Reference reference;              // as asked, with the resolved digest of `top`
  FetchedManifest top;                   // what the reference names (index or manifest)
  std::optional<oci::ImageIndex> index;  // when `top` is an index
  FetchedManifest manifest;              // the selected platform's manifest (== top without index)
  oci::ImageManifest parsed;             // `manifest` parsed
  std::string config_bytes;              // the config blob, digest-verified
  oci::ImageConfig config;               // parsed
};

// Resolves `ref`, fetches its manifest or index, picks the entry for
// `platform` (ImageIndex::SelectPlatform; nested indexes are followed up to
// 4 levels), fetches the manifest and the config. NotFound naming the
// platforms on offer when none matches; InvalidArgument when the config has
// a different number of diff_ids than the manifest has layers.
Result<PlatformImage> FetchPlatformImage(RegistryClient& client, const oci::Reference& ref,
                                         const oci::Platform& platform,
                                         const CallOptions& call = {});

}  // namespace evs::registry
