// Platforms (os/architecture/variant) and which image in an index a machine
// can run, following containerd's platforms package: names are normalised
// first (x86_64 → amd64, aarch64 → arm64/v8, armhf → arm/v7, …), then an
// image matches when os and architecture are equal and its variant is one the
// wanted variant can run (arm/v7 runs v6 and v5 images; amd64/v3 runs v2, v1).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "evs/common/status.h"

namespace evs::oci {

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"
  std::string variant;       // "v8", "v7", "" …
  std::string os_version;    // Windows only; kept, not matched
  std::vector<std::string> os_features;

  // Parses "os[/arch[/variant]]" or "arch[/variant]" (os defaults to linux),
  // then normalises. InvalidArgument naming the text when empty, with more
  // than three parts, or with characters outside [A-Za-z0-9._-].
  static Result<Platform> Parse(std::string_view text);
  // "linux/arm64/v8", "linux/amd64".
  std::string ToString() const;

  bool operator==(const Platform& other) const = default;
};

// The canonical spelling of `p` (lower case; architecture aliases and default
// variants resolved: arm64 gets v8, arm gets v7, amd64's v1 is dropped).
Platform Normalize(Platform p);

// The platform of the machine this runs on (uname(2), normalised; os is
// always "linux").
Platform HostPlatform();

// How well an image built for `image` suits a machine that wants `want`:
// nullopt when it cannot run there, otherwise a rank where 0 is an exact
// match and larger numbers are older compatible variants. Both are
// normalised first.
std::optional<int> PlatformMatchRank(const Platform& want, const Platform& image);
inline bool PlatformMatches(const Platform& want, const Platform& image) {
  return PlatformMatchRank(want, image).has_value();
}

}  // namespace evs::oci
