// containerd remotes/docker/config/hosts.go, reimplemented: directory lookup
// (hostPaths), hosts.toml parsing (parseHostsFile/parseHostConfig), the
// Docker certificate-file fallback (loadCertFiles) and the default origin.
#include "evs/registry/hosts.h"

#include <dirent.h>
#include <sys/stat.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>

#include "evs/common/file.h"
#include "evs/oci/reference.h"

namespace evs::registry {
namespace {

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string AbsPath(std::string_view p, std::string_view base) {
  if (!p.empty() && p.front() == '/') return std::string(p);
  return JoinPath(base, p);
}

// Collapses "//", "/./" and a trailing "/" (path.Clean for the simple cases
// a registry path has).
std::string CleanPath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (auto p : parts) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

// "host", "host:port", "[v6]", "[v6]:port".
bool ValidHostPort(std::string_view h) {
  std::string_view port;
  if (!h.empty() && h.front() == '[') {
    size_t close = h.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    std::string_view rest = h.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else {
    size_t colon = h.rfind(':');
    std::string_view name = h.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = h.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (name.empty()) return false;
    for (char c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return false;
      }
    }
  }
  if (port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The defaults for an entry without a host: the registry itself.
void FillOrigin(RegistryEndpoint* e, std::string_view registry) {
  if (registry == "docker.io") {
    e->scheme = "https";
    e->host = "registry-1.docker.io";
  } else {
    e->host = std::string(registry);
    // containerd's CRI talks plain HTTP to localhost registries by default.
    e->scheme = oci::IsLocalhost(registry) ? "http" : "https";
  }
  e->path = "/v2";
  e->capabilities = kCapabilityAll;
}

Result<std::vector<std::string>> StringOrList(const toml::node& node, std::string_view what,
                                              std::string_view base_dir) {
  std::vector<std::string> out;
  if (auto s = node.value<std::string>()) {
    out.push_back(AbsPath(*s, base_dir));
    return out;
  }
  if (const toml::array* arr = node.as_array()) {
    for (const auto& item : *arr) {
      auto s = item.value<std::string>();
      if (!s) return InvalidArgumentError(what, ": expected a string or a list of strings");
      out.push_back(AbsPath(*s, base_dir));
    }
    return out;
  }
  return InvalidArgumentError(what, ": expected a string or a list of strings");
}

// One [host."…"] table, or the file's top level for the server.
Result<RegistryEndpoint> ParseHostTable(std::string_view server, const toml::table& t,
                                        std::string_view base_dir, std::string_view what) {
  RegistryEndpoint e;
  bool override_path = false;
  if (auto node = t.get("override_path")) {
    auto b = node->value<bool>();
    if (!b) return InvalidArgumentError(what, ": override_path: expected a boolean");
    override_path = *b;
  }
  if (!server.empty()) {
    std::string url(server);
    if (url.rfind("http", 0) != 0) url = "https://" + url;
    size_t scheme_end = url.find("://");
    if (scheme_end == std::string::npos) {
      return InvalidArgumentError(what, ": cannot parse server \"", server, "\"");
    }
    e.scheme = url.substr(0, scheme_end);
    if (e.scheme != "http" && e.scheme != "https") {
      return InvalidArgumentError(what, ": scheme \"", e.scheme, "\" is neither http nor https");
    }
    std::string rest = url.substr(scheme_end + 3);
    size_t slash = rest.find('/');
    e.host = rest.substr(0, slash);
    if (!ValidHostPort(e.host)) {
      return InvalidArgumentError(what, ": cannot parse server \"", server, "\" (host \"", e.host,
                                  "\")");
    }
    std::string path = slash == std::string::npos ? "" : rest.substr(slash);
    if (!path.empty()) {
      path = CleanPath(path);
      if (path == "/") path.clear();
    }
    if (path.empty()) {
      e.path = override_path ? "" : "/v2";
    } else {
      bool ends_v2 = path.size() >= 3 && path.compare(path.size() - 3, 3, "/v2") == 0;
      e.path = (ends_v2 || override_path) ? path : path + "/v2";
    }
  }
  if (auto node = t.get("skip_verify")) {
    auto b = node->value<bool>();
    if (!b) return InvalidArgumentError(what, ": skip_verify: expected a boolean");
    e.skip_verify = *b;
  }
  if (auto node = t.get("capabilities")) {
    const toml::array* arr = node->as_array();
    if (arr == nullptr) return InvalidArgumentError(what, ": capabilities: expected a list");
    if (!arr->empty()) e.capabilities = 0;
    for (const auto& item : *arr) {
      auto s = item.value<std::string>();
      if (!s) return InvalidArgumentError(what, ": capabilities: expected strings");
      std::string c = *s;
      std::transform(c.begin(), c.end(), c.begin(), ::tolower);
      if (c == "pull") {
        e.capabilities |= kCapabilityPull;
      } else if (c == "resolve") {
        e.capabilities |= kCapabilityResolve;
      } else if (c == "push") {
        e.capabilities |= kCapabilityPush;
      } else {
        return InvalidArgumentError(what, ": unknown capability \"", *s, "\"");
      }
    }
  }
  if (auto node = t.get("ca")) {
    EVS_ASSIGN_OR_RETURN(e.ca_files, StringOrList(*node, StrCat(what, ": ca"), base_dir));
  }
  if (auto node = t.get("client")) {
    std::string cwhat = StrCat(what, ": client");
    if (auto s = node->value<std::string>()) {
      e.client_certs.emplace_back(AbsPath(*s, base_dir), "");
    } else if (const toml::array* arr = node->as_array()) {
      for (const auto& item : *arr) {
        if (auto s = item.value<std::string>()) {
          e.client_certs.emplace_back(AbsPath(*s, base_dir), "");
        } else if (const toml::array* pair = item.as_array()) {
          if (pair->size() != 2 || !(*pair)[0].value<std::string>() ||
              !(*pair)[1].value<std::string>()) {
            return InvalidArgumentError(cwhat, ": a pair must be [\"cert\", \"key\"]");
          }
          e.client_certs.emplace_back(AbsPath(*(*pair)[0].value<std::string>(), base_dir),
                                      AbsPath(*(*pair)[1].value<std::string>(), base_dir));
        } else {
          return InvalidArgumentError(cwhat, ": expected strings or [cert, key] pairs");
        }
      }
    } else {
      return InvalidArgumentError(cwhat, ": expected a string or a list");
    }
  }
  if (auto node = t.get("header")) {
    const toml::table* h = node->as_table();
    if (h == nullptr) return InvalidArgumentError(what, ": header: expected a table");
    for (const auto& [key, value] : *h) {
      std::string name(key.str());
      if (name.empty() || name.find_first_of(":\r\n") != std::string::npos) {
        return InvalidArgumentError(what, ": header \"", name, "\": invalid name");
      }
      std::vector<std::string> values;
      if (auto s = value.value<std::string>()) {
        values.push_back(*s);
      } else if (const toml::array* arr = value.as_array()) {
        for (const auto& item : *arr) {
          auto s = item.value<std::string>();
          if (!s) return InvalidArgumentError(what, ": header \"", name, "\": expected strings");
          values.push_back(*s);
        }
      } else {
        return InvalidArgumentError(what, ": header \"", name, "\": expected a string or list");
      }
      for (auto& v : values) {
        if (v.find_first_of("\r\n") != std::string::npos) {
          return InvalidArgumentError(what, ": header \"", name, "\": value has a line break");
        }
        e.headers.emplace_back(name, std::move(v));
      }
    }
  }
  return e;
}

// Docker's layout: *.crt are CAs, *.cert with an optional *.key beside it
// are client pairs (containerd loadCertFiles).
RegistryEndpoint LoadCertFiles(const std::string& dir) {
  RegistryEndpoint e;
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* ent = ::readdir(d)) names.emplace_back(ent->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  auto ends_with = [](const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  for (const auto& name : names) {
    std::string path = JoinPath(dir, name);
    if (!IsFile(path)) continue;
    if (ends_with(name, ".crt")) e.ca_files.push_back(path);
    if (ends_with(name, ".cert")) {
      std::string key = JoinPath(dir, name.substr(0, name.size() - 5) + ".key");
      e.client_certs.emplace_back(path, IsFile(key) ? key : "");
    }
  }
  return e;
}

}  // namespace

Result<std::vector<RegistryEndpoint>> ParseHostsToml(std::string_view text,
                                                     std::string_view base_dir,
                                                     std::string_view registry) {
  std::string what = StrCat(JoinPath(base_dir, "hosts.toml"));
  toml::table root;
  try {
    root = toml::parse(text, what);
  } catch (const toml::parse_error& e) {
    return InvalidArgumentError(what, ":", e.source().begin.line, ":", e.source().begin.column,
                                ": ", e.description());
  }
  std::vector<RegistryEndpoint> out;
  if (auto hosts = root.get("host")) {
    const toml::table* table = hosts->as_table();
    if (table == nullptr) return InvalidArgumentError(what, ": host: expected tables");
    // toml++ keeps keys sorted; containerd tries mirrors in file order.
    std::vector<std::pair<const toml::key*, const toml::table*>> entries;
    for (const auto& [key, value] : *table) {
      const toml::table* t = value.as_table();
      if (t == nullptr) {
        return InvalidArgumentError(what, ": host.\"", key.str(), "\": expected a table");
      }
      entries.emplace_back(&key, t);
    }
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.second->source().begin.line < b.second->source().begin.line;
    });
    for (const auto& [key, t] : entries) {
      EVS_ASSIGN_OR_RETURN(
          RegistryEndpoint e,
          ParseHostTable(key->str(), *t, base_dir, StrCat(what, ": host.\"", key->str(), "\"")));
      out.push_back(std::move(e));
    }
  }
  std::string server;
  if (auto node = root.get("server")) {
    auto s = node->value<std::string>();
    if (!s) return InvalidArgumentError(what, ": server: expected a string");
    server = *s;
  }
  EVS_ASSIGN_OR_RETURN(RegistryEndpoint origin, ParseHostTable(server, root, base_dir, what));
  if (server.empty()) {
    RegistryEndpoint defaults;
    FillOrigin(&defaults, registry);
    origin.scheme = defaults.scheme;
    origin.host = defaults.host;
    origin.path = defaults.path;
  }
  origin.is_origin = true;
  out.push_back(std::move(origin));
  return out;
}

Result<std::vector<RegistryEndpoint>> LoadRegistryHosts(std::string_view config_dir,
                                                        std::string_view registry) {
  std::string dir;
  if (!config_dir.empty()) {
    std::vector<std::string> candidates;
    size_t colon = registry.rfind(':');
    // "host:port" is also looked up as "host_port_" (names valid on Windows).
    if (colon != std::string_view::npos && colon > 0 && registry.back() != ']') {
      candidates.push_back(JoinPath(
          config_dir, StrCat(registry.substr(0, colon), "_", registry.substr(colon + 1), "_")));
    }
    candidates.push_back(JoinPath(config_dir, registry));
    candidates.push_back(JoinPath(config_dir, "_default"));
    for (const auto& c : candidates) {
      if (IsDir(c)) {
        dir = c;
        break;
      }
    }
  }
  if (!dir.empty()) {
    std::string path = JoinPath(dir, "hosts.toml");
    if (IsFile(path)) {
      EVS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1u << 20));
      if (!text.empty()) return ParseHostsToml(text, dir, registry);
    }
    RegistryEndpoint e = LoadCertFiles(dir);
    FillOrigin(&e, registry);
    e.is_origin = true;
    return std::vector<RegistryEndpoint>{e};
  }
  RegistryEndpoint e;
  FillOrigin(&e, registry);
  e.is_origin = true;
  return std::vector<RegistryEndpoint>{e};
}

}  // namespace evs::registry
