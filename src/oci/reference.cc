// Reference grammar: distribution/reference (reference.go, normalize.go).
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [domain "/"] path-component ["/" path-component]*
//   domain     := host [":" port]; host := domain-component ("." domain-component)* | "[" ipv6 "]"
//   path-component := [a-z0-9]+ (separator [a-z0-9]+)*; separator := "." | "_" | "__" | "-"+
//   tag        := [\w][\w.-]{0,127}
// The first component is a domain when it contains "." or ":", is
// "localhost", or has upper case (normalize.go splitDockerDomain).
#include "evs/oci/reference.h"

#include <arpa/inet.h>

#include <cctype>

namespace evs::oci {
namespace {

constexpr std::string_view kDockerHub = "docker.io";
constexpr size_t kMaxNameLength = 255;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// The text, quoted and shortened for error messages.
std::string Quote(std::string_view text) {
  constexpr size_t kMax = 300;
  std::string out = "\"";
  for (char c : text.substr(0, kMax)) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\' ||
        static_cast<unsigned char>(c) >= 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[(static_cast<unsigned char>(c) >> 4) & 0xf];
      out += hex[static_cast<unsigned char>(c) & 0xf];
    } else {
      out += c;
    }
  }
  if (text.size() > kMax) out += "…";
  return out + "\"";
}

bool ValidPathComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  size_t i = 0;
  while (i < c.size()) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    // A separator: ".", "_", "__" or one or more "-", between alphanumerics.
    size_t j = i;
    if (c[i] == '.') {
      j = i + 1;
    } else if (c[i] == '_') {
      j = i + 1;
      if (j < c.size() && c[j] == '_') ++j;
    } else if (c[i] == '-') {
      while (j < c.size() && c[j] == '-') ++j;
    } else {
      return false;
    }
    if (j >= c.size() || !IsLowerAlnum(c[j])) return false;
    i = j;
  }
  return true;
}

bool ValidDomainComponent(std::string_view c) {
  if (c.empty() || !IsAlnum(c.front()) || !IsAlnum(c.back())) return false;
  for (char ch : c) {
    if (!IsAlnum(ch) && ch != '-') return false;
  }
  return true;
}

bool ValidPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

Status ValidateDomain(std::string_view domain, std::string_view text) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("image reference ", Quote(text), ": registry ", Quote(domain), ": ",
                                why);
  };
  std::string_view host = domain;
  std::string_view port;
  if (!domain.empty() && domain.front() == '[') {
    size_t close = domain.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    std::string literal(domain.substr(1, close - 1));
    in6_addr addr;
    if (literal.empty() || ::inet_pton(AF_INET6, literal.c_str(), &addr) != 1) {
      return bad("invalid IPv6 address");
    }
    std::string_view rest = domain.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("unexpected text after the IPv6 literal");
      port = rest.substr(1);
      if (!ValidPort(port)) return bad("invalid port");
    }
    return OkStatus();
  }
  size_t colon = domain.rfind(':');
  if (colon != std::string_view::npos) {
    host = domain.substr(0, colon);
    port = domain.substr(colon + 1);
    if (!ValidPort(port)) return bad("invalid port");
  }
  if (host.empty()) return bad("empty host name");
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    std::string_view comp =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!ValidDomainComponent(comp)) return bad("invalid host name");
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return OkStatus();
}

bool ValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  auto word = [](char c) { return IsAlnum(c) || c == '_'; };
  if (!word(tag.front())) return false;
  for (char c : tag) {
    if (!word(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool LooksLikeDomain(std::string_view first) {
  if (first == "localhost") return true;
  if (first.find_first_of(".:[") != std::string_view::npos) return true;
  for (char c : first) {
    if (c >= 'A' && c <= 'Z') return true;
  }
  return false;
}

}  // namespace

Result<Reference> Reference::Parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("image reference ", Quote(text), ": ", why);
  };
  if (text.empty()) return bad("empty");
  if (text.size() > 4096) return bad("longer than 4096 characters");
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return bad("contains a space, control or non-ASCII character");
    }
  }

  Reference ref;
  std::string_view rest = text;
  size_t at = rest.find('@');
  if (at != std::string_view::npos) {
    auto digest = Digest::Parse(rest.substr(at + 1));
    if (!digest.ok()) return bad(StrCat("invalid digest: ", digest.status().message()));
    ref.digest = *digest;
    rest = rest.substr(0, at);
  }

  // The tag is after the last ':' that follows the last '/' (a ':' before a
  // '/' is a port).
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    std::string_view tag = rest.substr(colon + 1);
    // "[::1]" alone has colons but no slash; a bracket after the colon means
    // it is an address, which is not a valid name anyway.
    if (!ValidTag(tag)) return bad(StrCat("invalid tag ", Quote(tag)));
    ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return bad("missing repository name");

  std::string_view path = rest;
  size_t first_slash = rest.find('/');
  if (first_slash != std::string_view::npos && LooksLikeDomain(rest.substr(0, first_slash))) {
    std::string_view domain = rest.substr(0, first_slash);
    EVS_RETURN_IF_ERROR(ValidateDomain(domain, text));
    ref.registry = std::string(domain);
    path = rest.substr(first_slash + 1);
  } else {
    ref.registry = std::string(kDockerHub);
  }
  // Docker Hub's other names (docker/cli, containerd docs).
  if (ref.registry == "index.docker.io" || ref.registry == "registry-1.docker.io") {
    ref.registry = std::string(kDockerHub);
  }

  if (path.empty()) return bad("missing repository name");
  size_t start = 0;
  while (true) {
    size_t next = path.find('/', start);
    std::string_view comp =
        path.substr(start, next == std::string_view::npos ? std::string_view::npos : next - start);
    if (!ValidPathComponent(comp)) {
      for (char c : comp) {
        if (c >= 'A' && c <= 'Z') {
          return bad(StrCat("repository ", Quote(path), " must be lowercase"));
        }
      }
      return bad(StrCat("invalid repository path component ", Quote(comp)));
    }
    if (next == std::string_view::npos) break;
    start = next + 1;
  }
  ref.repository = std::string(path);
  if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (ref.Name().size() > kMaxNameLength) {
    return bad(StrCat("repository name longer than ", kMaxNameLength, " characters"));
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string Reference::Name() const { return registry + "/" + repository; }

std::string Reference::ManifestReference() const {
  return digest.empty() ? tag : digest.ToString();
}

std::string Reference::ToString() const {
  std::string out = Name();
  // Appended piecewise: `":" + tag` trips GCC 12's -Wrestrict false positive.
  if (!tag.empty()) {
    out += ':';
    out += tag;
  }
  if (!digest.empty()) {
    out += '@';
    out += digest.ToString();
  }
  return out;
}

Reference Reference::WithDigest(const Digest& d) const {
  Reference r = *this;
  r.digest = d;
  return r;
}

Reference Reference::WithTag(std::string_view t) const {
  Reference r = *this;
  r.tag = std::string(t);
  r.digest = Digest();
  return r;
}

bool IsLocalhost(std::string_view registry) {
  std::string_view host = registry;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    return host.substr(1, close - 1) == "::1";
  }
  size_t colon = host.rfind(':');
  if (colon != std::string_view::npos) host = host.substr(0, colon);
  if (host == "localhost") return true;
  std::string h(host);
  in_addr addr;
  if (::inet_pton(AF_INET, h.c_str(), &addr) == 1) {
    return (ntohl(addr.s_addr) >> 24) == 127;
  }
  return false;
}

}  // namespace evs::oci
