// Image references: "[registry/]repository[:tag][@digest]", parsed and
// normalised the way Docker and containerd do (distribution/reference's
// grammar): a missing registry is docker.io, a one-component repository on
// docker.io gets "library/", a reference with neither tag nor digest means
// ":latest".
#pragma once

#include <string>
#include <string_view>

#include "evs/common/digest.h"
#include "evs/common/status.h"

namespace evs::oci {

// A normalised image reference. Value type; cheap to copy.
struct Reference {
  // The registry namespace: "docker.io", "localhost:5000", "[::1]:5000",
  // "quay.io". This is what hosts.toml directories and credentials are keyed
  // by; the host actually contacted may differ (docker.io is served by
  // registry-1.docker.io, mirrors come first): see registry/hosts.h.
  std::string registry;
  // "library/ubuntu", "org/team/app": lowercase path components.
  std::string repository;
  // "latest", "v1.2"; empty when the reference names only a digest.
  std::string tag;
  // Set when the reference pins a digest ("…@sha256:…"); empty otherwise.
  Digest digest;

  // Parses and normalises `text`. Accepts "ubuntu", "ubuntu:22.04",
  // "docker.io/library/ubuntu", "index.docker.io/x" and
  // "registry-1.docker.io/x" (both become docker.io), "localhost/x",
  // "host:5000/a/b:t", "[::1]:5000/x", "x@sha256:<64 hex>", "x:t@sha256:…".
  // Errors are InvalidArgument and name the text and the part that is wrong
  // (empty, upper case in the repository, bad tag, bad digest, bad port,
  // repository name longer than 255 characters, …). Never reads outside
  // `text`; O(length).
  static Result<Reference> Parse(std::string_view text);

  // "registry/repository".
  std::string Name() const;
  // The manifest reference to ask the registry for: the digest if pinned,
  // else the tag.
  std::string ManifestReference() const;
  // The full normalised form: "docker.io/library/ubuntu:22.04@sha256:…",
  // which Parse() maps back to an equal Reference.
  std::string ToString() const;
  // The same repository pinned to `d`, keeping the tag.
  Reference WithDigest(const Digest& d) const;
  // The same repository with another tag and no digest.
  Reference WithTag(std::string_view t) const;

  bool operator==(const Reference& other) const = default;
};

// True when `registry` names this machine ("localhost", "localhost:5000",
// "127.0.0.1:5000", "[::1]:5000", any 127.0.0.0/8 address). Such registries
// are contacted over plain HTTP by default, as containerd's CRI does.
bool IsLocalhost(std::string_view registry);

}  // namespace evs::oci
