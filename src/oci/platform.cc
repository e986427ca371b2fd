// Normalisation and matching follow containerd's platforms package
// (database.go normalizeArch, compare.go): the aliases are Go's and uname's
// spellings; "compatible" variants are the older ones of the same family.
#include "evs/oci/platform.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>

namespace evs::oci {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ValidPart(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

bool KnownOs(std::string_view os) {
  static constexpr std::string_view kOs[] = {
      "linux",   "windows", "darwin", "freebsd",   "netbsd", "openbsd", "solaris", "illumos",
      "android", "aix",     "plan9",  "dragonfly", "ios",    "js",      "wasip1",  "zos"};
  return std::find(std::begin(kOs), std::end(kOs), os) != std::end(kOs);
}

// The variant's generation number ("v7" → 7, "v8.2" → 8.2 as 82), or -1.
int VariantLevel(std::string_view variant) {
  if (variant.size() < 2 || variant[0] != 'v') return -1;
  int major = 0, minor = 0;
  size_t i = 1;
  for (; i < variant.size() && std::isdigit(static_cast<unsigned char>(variant[i])); ++i) {
    major = major * 10 + (variant[i] - '0');
    if (major > 1000) return -1;
  }
  if (i == 1) return -1;
  if (i < variant.size()) {
    if (variant[i] != '.' || i + 1 >= variant.size()) return -1;
    for (++i; i < variant.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(variant[i]))) return -1;
      minor = minor * 10 + (variant[i] - '0');
      if (minor > 9) return -1;
    }
  }
  return major * 10 + minor;
}

}  // namespace

Platform Normalize(Platform p) {
  p.os = Lower(p.os);
  if (p.os == "macos") p.os = "darwin";
  std::string arch = Lower(p.architecture);
  std::string variant = Lower(p.variant);
  if (arch == "i386" || arch == "i486" || arch == "i586" || arch == "i686" || arch == "x86") {
    arch = "386";
    variant.clear();
  } else if (arch == "x86_64" || arch == "x86-64" || arch == "amd64") {
    arch = "amd64";
    if (variant == "v1") variant.clear();
  } else if (arch == "aarch64" || arch == "arm64") {
    arch = "arm64";
    if (variant.empty() || variant == "8" || variant == "v8.0") variant = "v8";
    if (!variant.empty() && variant[0] != 'v') variant = "v" + variant;
  } else if (arch == "armhf") {
    arch = "arm";
    variant = "v7";
  } else if (arch == "armel") {
    arch = "arm";
    variant = "v6";
  } else if (arch == "arm" || arch == "armv7l" || arch == "armv7" || arch == "armv6l" ||
             arch == "armv6" || arch == "armv5l" || arch == "armv5" || arch == "armv8l") {
    if (arch.size() > 3 && variant.empty()) variant = "v" + arch.substr(4, 1);
    arch = "arm";
    if (variant.empty()) variant = "v7";
    if (variant.size() == 1 && std::isdigit(static_cast<unsigned char>(variant[0]))) {
      variant = "v" + variant;
    }
  }
  p.architecture = arch;
  p.variant = variant;
  return p;
}

Result<Platform> Platform::Parse(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.push_back(text.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
    if (parts.size() > 3) break;
  }
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("platform \"", text.substr(0, 100), "\": ", why);
  };
  if (text.empty()) return bad("empty");
  if (parts.size() > 3) return bad("more than os/architecture/variant");
  for (auto part : parts) {
    if (!ValidPart(part)) return bad("empty part or character outside [A-Za-z0-9._-]");
  }
  Platform p;
  if (KnownOs(Lower(parts[0]))) {
    p.os = std::string(parts[0]);
    if (parts.size() >= 2) p.architecture = std::string(parts[1]);
    if (parts.size() == 3) p.variant = std::string(parts[2]);
    if (p.architecture.empty()) p.architecture = HostPlatform().architecture;
  } else {
    if (parts.size() == 3) return bad(StrCat("unknown operating system \"", parts[0], "\""));
    p.os = "linux";
    p.architecture = std::string(parts[0]);
    if (parts.size() == 2) p.variant = std::string(parts[1]);
  }
  return Normalize(std::move(p));
}

std::string Platform::ToString() const {
  std::string out = os + "/" + architecture;
  if (!variant.empty()) out += "/" + variant;
  return out;
}

Platform HostPlatform() {
  Platform p;
  p.os = "linux";
  utsname u;
  if (::uname(&u) == 0) {
    p.architecture = u.machine;
  } else {
#if defined(__x86_64__)
    p.architecture = "amd64";
#elif defined(__aarch64__)
    p.architecture = "arm64";
#else
    p.architecture = "unknown";
#endif
  }
  return Normalize(p);
}

std::optional<int> PlatformMatchRank(const Platform& want_in, const Platform& image_in) {
  Platform want = Normalize(want_in);
  Platform image = Normalize(image_in);
  if (want.os != image.os || want.architecture != image.architecture) return std::nullopt;
  if (want.variant == image.variant) return 0;
  // Older variants of the same family run on newer ones (arm v7 runs v6
  // and v5; amd64 v3 runs v2 and v1; arm64 v8.2 runs v8).
  int want_level = want.variant.empty() ? 10 : VariantLevel(want.variant);
  int image_level = image.variant.empty() ? 10 : VariantLevel(image.variant);
  if (want.architecture == "amd64" && image.variant.empty()) image_level = 10;
  if (want_level < 0 || image_level < 0) return std::nullopt;
  if (want.architecture != "arm" && want.architecture != "amd64" && want.architecture != "arm64") {
    return std::nullopt;
  }
  if (image_level > want_level) return std::nullopt;
  return 1 + (want_level - image_level);
}

}  // namespace evs::oci
