// The registry module's parsers and helpers, without a network: hosts.toml
// (containerd's format and directory lookup), docker config.json, the
// WWW-Authenticate grammar, URLs. Includes hostile input (random and
// malformed text: clear errors, no crash); this binary also runs under ASan.
#include <gtest/gtest.h>

#include <random>

#include "auth.h"
#include "evs/common/base64.h"
#include "evs/registry/credentials.h"
#include "evs/registry/hosts.h"
#include "http_transport.h"
#include "test_util.h"

namespace evs::registry {
namespace {

using evs::testing::TempDir;
using evs::testing::WriteFile;

TEST(HostsToml, MirrorsInFileOrderThenTheServer) {
  // Keys deliberately not in alphabetical order: file order must win.
  const char* toml = R"(
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve", "push"]

[host."https://zz-mirror.example.com"]
  capabilities = ["pull"]
  ca = "certs/mirror-ca.pem"
  skip_verify = false

[host."http://10.0.0.2:5000/custom/path"]
  capabilities = ["pull", "resolve"]
  override_path = true
  client = [["/abs/client.cert", "client.key"]]
  [host."http://10.0.0.2:5000/custom/path".header]
    x-custom = "one"
    x-multi = ["a", "b"]

[host."aa-mirror.example.com"]
  skip_verify = true
  ca = ["/etc/a.pem", "b.pem"]
  client = "both.pem"
)";
  auto hosts = ParseHostsToml(toml, "/etc/containerd/certs.d/docker.io", "docker.io");
  ASSERT_TRUE(hosts.ok()) << hosts.status().ToString();
  ASSERT_EQ(hosts->size(), 4u);
  const auto& h = *hosts;
  EXPECT_EQ(h[0].Origin(), "https://zz-mirror.example.com");
  EXPECT_EQ(h[0].path, "/v2");
  EXPECT_EQ(h[0].capabilities, unsigned{kCapabilityPull});
  EXPECT_EQ(h[0].ca_files,
            std::vector<std::string>{"/etc/containerd/certs.d/docker.io/certs/mirror-ca.pem"});
  EXPECT_EQ(h[1].BaseUrl(), "http://10.0.0.2:5000/custom/path");
  EXPECT_EQ(h[1].client_certs[0].first, "/abs/client.cert");
  EXPECT_EQ(h[1].client_certs[0].second, "/etc/containerd/certs.d/docker.io/client.key");
  ASSERT_EQ(h[1].headers.size(), 3u);
  EXPECT_EQ(h[2].Origin(), "https://aa-mirror.example.com");
  EXPECT_TRUE(h[2].skip_verify);
  EXPECT_EQ(h[2].ca_files.size(), 2u);
  EXPECT_EQ(h[2].client_certs[0].second, "");
  EXPECT_EQ(h[2].capabilities, unsigned{kCapabilityAll});
  EXPECT_TRUE(h[3].is_origin);
  EXPECT_EQ(h[3].BaseUrl(), "https://registry-1.docker.io/v2");
  EXPECT_FALSE(h[0].is_origin);
}

TEST(HostsToml, DefaultsWithoutConfiguration) {
  auto hub = LoadRegistryHosts("", "docker.io");
  ASSERT_TRUE(hub.ok());
  ASSERT_EQ(hub->size(), 1u);
  EXPECT_EQ((*hub)[0].BaseUrl(), "https://registry-1.docker.io/v2");
  auto local = LoadRegistryHosts("/nonexistent", "localhost:5000");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ((*local)[0].BaseUrl(), "http://localhost:5000/v2");
  auto loopback = LoadRegistryHosts("", "127.0.0.1:5000");
  EXPECT_EQ((*loopback)[0].scheme, "http");
  auto remote = LoadRegistryHosts("", "quay.io");
  EXPECT_EQ((*remote)[0].BaseUrl(), "https://quay.io/v2");
  // A file without server: the registry itself is the origin.
  auto no_server = ParseHostsToml("[host.\"https://m\"]\n", "/d", "ghcr.io");
  ASSERT_TRUE(no_server.ok());
  EXPECT_EQ(no_server->back().BaseUrl(), "https://ghcr.io/v2");
}

TEST(HostsToml, DirectoryLookupOrderAndDockerCertFiles) {
  TempDir dir;
  // "host:port" is looked up as "host_port_" first, then "host:port", then
  // "_default".
  WriteFile(dir.Join("reg.example.com_5000_/hosts.toml"),
            "server = \"https://first.example.com\"\n");
  WriteFile(dir.Join("reg.example.com:5000/hosts.toml"),
            "server = \"https://second.example.com\"\n");
  WriteFile(dir.Join("_default/hosts.toml"), "server = \"https://fallback.example.com\"\n");
  auto a = LoadRegistryHosts(dir.path(), "reg.example.com:5000");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->back().host, "first.example.com");
  auto b = LoadRegistryHosts(dir.path(), "other.example.com");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->back().host, "fallback.example.com");
  // No hosts.toml: Docker's certs.d layout (*.crt CAs, *.cert + *.key).
  WriteFile(dir.Join("certs.example.com/ca.crt"), "x");
  WriteFile(dir.Join("certs.example.com/client.cert"), "x");
  WriteFile(dir.Join("certs.example.com/client.key"), "x");
  auto c = LoadRegistryHosts(dir.path(), "certs.example.com");
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].BaseUrl(), "https://certs.example.com/v2");
  EXPECT_EQ((*c)[0].ca_files, std::vector<std::string>{dir.Join("certs.example.com/ca.crt")});
  EXPECT_EQ((*c)[0].client_certs[0].second, dir.Join("certs.example.com/client.key"));
}

TEST(HostsToml, ErrorsNameTheFileAndKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"server = ", "hosts.toml:1"},
      {"capabilities = [\"pull\", \"fly\"]", "unknown capability \"fly\""},
      {"[host.\"https://m\"]\n skip_verify = \"yes\"", "host.\"https://m\": skip_verify"},
      {"[host.\"ftp://m\"]\n", "cannot parse server \"ftp://m\""},
      {"server = \"gopher://m\"", "cannot parse server"},
      {"server = \"http://m:port\"", "cannot parse server"},
      {"ca = 5", "ca: expected a string or a list"},
      {"client = [[\"only-one\"]]", "client: a pair must be"},
      {"[header]\n \"bad:name\" = \"v\"", "invalid name"},
      {"[header]\n x = \"a\\nb\"", "line break"},
      {"server = 7", "server: expected a string"},
      {"host = 3", "host: expected tables"},
  };
  for (const auto& [toml, why] : cases) {
    auto r = ParseHostsToml(toml, "/etc/certs.d/x", "x");
    ASSERT_FALSE(r.ok()) << toml;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(why), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("/etc/certs.d/x/hosts.toml"), std::string::npos);
  }
}

TEST(HostsToml, RandomTextNeverCrashes) {
  std::mt19937 rng(7);
  const std::string seed =
      "server = \"https://a\"\n[host.\"http://b:1\"]\n capabilities = [\"pull\"]\n ca = [\"x\"]\n"
      " [host.\"http://b:1\".header]\n  k = [\"v\"]\n";
  const char alphabet[] = "[]\"=.,:\n abc123\\{}#'";
  for (int i = 0; i < 3000; ++i) {
    std::string s = seed;
    for (int e = 0; e < 3; ++e) {
      size_t pos = rng() % (s.size() + 1);
      if (rng() % 2) {
        s.insert(pos, 1, alphabet[rng() % (sizeof alphabet - 1)]);
      } else if (pos < s.size()) {
        s.erase(pos, 1 + rng() % 4);
      }
    }
    (void)ParseHostsToml(s, "/d", "r");
  }
}

TEST(DockerConfig, AuthsIdentityAndRegistryTokens) {
  std::string json =
      "{\"auths\":{"
      "\"https://index.docker.io/v1/\":{\"auth\":\"" +
      Base64Encode("hubuser:hubpass") +
      "\"},"
      "\"registry.example.com:5000\":{\"username\":\"u\",\"password\":\"p\"},"
      "\"https://id.example.com\":{\"identitytoken\":\"refresh\"},"
      "\"rt.example.com\":{\"registrytoken\":\"bearer-token\"},"
      "\"empty.example.com\":{}}}";
  auto store = DockerConfigCredentials::Parse(json, "config.json");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto hub = (*store)->Lookup("registry-1.docker.io");
  ASSERT_TRUE(hub.ok() && hub->has_value());
  EXPECT_EQ((*hub)->username, "hubuser");
  EXPECT_EQ((*hub)->secret, "hubpass");
  EXPECT_EQ((*(*store)->Lookup("docker.io"))->username, "hubuser");
  EXPECT_EQ((*(*store)->Lookup("registry.example.com:5000"))->secret, "p");
  auto id = *(*store)->Lookup("id.example.com");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->username, "");
  EXPECT_EQ(id->secret, "refresh");
  EXPECT_EQ((*(*store)->Lookup("rt.example.com"))->registry_token, "bearer-token");
  EXPECT_FALSE((*store)->Lookup("empty.example.com")->has_value());
  EXPECT_FALSE((*store)->Lookup("unknown.example.com")->has_value());
  EXPECT_EQ(DockerConfigKey("docker.io"), "https://index.docker.io/v1/");
  EXPECT_EQ(DockerConfigKey("https://quay.io/v2/"), "quay.io");
}

TEST(DockerConfig, MalformedFilesAreErrorsThatDoNotEchoSecrets) {
  auto not_json = DockerConfigCredentials::Parse("{auths:", "/home/u/.docker/config.json");
  ASSERT_FALSE(not_json.ok());
  EXPECT_NE(not_json.status().message().find("/home/u/.docker/config.json"), std::string::npos);
  auto bad_auth = DockerConfigCredentials::Parse(
      "{\"auths\":{\"h\":{\"auth\":\"bm9jb2xvbnNlY3JldA==\"}}}", "cfg");  // "nocolonsecret"
  ASSERT_FALSE(bad_auth.ok());
  EXPECT_EQ(bad_auth.status().message().find("nocolonsecret"), std::string::npos);
  EXPECT_EQ(bad_auth.status().message().find("bm9jb2xvbnNlY3JldA"), std::string::npos);
  // Wrong types are ignored rather than fatal (docker does the same).
  auto odd = DockerConfigCredentials::Parse("{\"auths\":[1],\"credHelpers\":7}", "cfg");
  EXPECT_TRUE(odd.ok());
  // A missing file is "no credentials".
  auto missing = DockerConfigCredentials::Load("/nonexistent/config.json");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE((*missing)->Lookup("docker.io")->has_value());
}

TEST(DockerConfig, HelperThatFailsIsAnErrorWithoutItsOutput) {
  TempDir dir;
  WriteFile(dir.Join("docker-credential-broken"), "#!/bin/sh\necho 'secret-in-output'\nexit 3\n");
  evs::testing::ShOk("chmod +x '" + dir.Join("docker-credential-broken") + "'");
  std::string old_path = ::getenv("PATH");
  ::setenv("PATH", (dir.path() + ":" + old_path).c_str(), 1);
  auto store = DockerConfigCredentials::Parse("{\"credsStore\":\"broken\"}", "cfg");
  ASSERT_TRUE(store.ok());
  auto r = (*store)->Lookup("h.example.com");
  ::setenv("PATH", old_path.c_str(), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("docker-credential-broken"), std::string::npos);
  EXPECT_NE(r.status().message().find("status 3"), std::string::npos);
  EXPECT_EQ(r.status().message().find("secret-in-output"), std::string::npos);
  auto absent = DockerConfigCredentials::Parse("{\"credsStore\":\"not-installed-evs\"}", "cfg");
  EXPECT_FALSE((*absent)->Lookup("h").ok());
}

TEST(Challenges, ParsesBearerAndBasicWithQuotingAndSeveralChallenges) {
  auto c = internal::ParseChallenges(
      "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
      "scope=\"repository:library/ubuntu:pull\"");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].params["realm"], "https://auth.docker.io/token");
  EXPECT_EQ(c[0].params["scope"], "repository:library/ubuntu:pull");
  auto two = internal::ParseChallenges(
      "Basic realm=\"a \\\"quoted\\\" realm\", Bearer realm=x, error=\"invalid_token\"");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].scheme, "basic");
  EXPECT_EQ(two[0].params["realm"], "a \"quoted\" realm");
  EXPECT_EQ(two[1].params["realm"], "x");
  EXPECT_EQ(two[1].params["error"], "invalid_token");
  std::mt19937 rng(3);
  const char alphabet[] = "Bearer realm=\"\\,= \t";
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    size_t n = rng() % 60;
    for (size_t k = 0; k < n; ++k) s += alphabet[rng() % (sizeof alphabet - 1)];
    (void)internal::ParseChallenges(s);
  }
}

TEST(Urls, OriginsRedirectsAndRedaction) {
  EXPECT_EQ(internal::OriginOf("https://Reg.Example.com:443/v2/x?y"), "https://reg.example.com");
  EXPECT_EQ(internal::OriginOf("http://127.0.0.1:5000/v2/"), "http://127.0.0.1:5000");
  EXPECT_EQ(internal::OriginOf("http://[::1]:80/a"), "http://[::1]");
  EXPECT_EQ(internal::ResolveUrl("https://r/v2/a/blobs/x", "/v2/a/blobs/uploads/1?s=2"),
            "https://r/v2/a/blobs/uploads/1?s=2");
  EXPECT_EQ(internal::ResolveUrl("https://r/v2/a/blobs/x", "https://s3.example/k?sig=1"),
            "https://s3.example/k?sig=1");
  EXPECT_EQ(internal::ResolveUrl("https://r/v2/a/blobs/x", "//cdn.example/k"),
            "https://cdn.example/k");
  EXPECT_EQ(internal::ResolveUrl("https://r/v2/a/blobs/x?q", "y"), "https://r/v2/a/blobs/y");
  EXPECT_EQ(internal::RedactUrl("https://s3/k?X-Amz-Signature=secret"), "https://s3/k?…");
}

TEST(Base64, RoundTripsAndRejectsGarbage) {
  for (std::string s : {"", "a", "ab", "abc", "abcd", "user:pass\xff"}) {
    auto back = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, s);
  }
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(*Base64Decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_FALSE(Base64Decode("a").ok());
  EXPECT_FALSE(Base64Decode("ab$c").ok());
  EXPECT_FALSE(Base64Decode("ab=c").ok());
}

}  // namespace
}  // namespace evs::registry
