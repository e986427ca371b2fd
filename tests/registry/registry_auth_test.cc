// Authentication against real registries: Basic (htpasswd) and bearer tokens
// (a token server whose tokens the registry verifies), credentials from the
// caller, from ~/.docker/config.json and from credential helpers, tokens
// cached per scope and refreshed when the registry stops accepting them.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <thread>

#include "evs/common/base64.h"
#include "evs/common/file.h"
#include "evs/registry/client.h"
#include "evs/registry/credentials.h"
#include "evs/registry/image.h"
#include "local_registry.h"
#include "test_image.h"
#include "test_util.h"

namespace evs::registry {
namespace {

using evs::testing::LocalRegistry;
using evs::testing::LocalRegistryOptions;
using evs::testing::TempDir;
using evs::testing::TestImage;
using evs::testing::TokenServer;
using evs::testing::TokenServerOptions;

class StringSink : public ByteSink {
 public:
  Status Write(const void* data, size_t n) override {
    bytes.append(static_cast<const char*>(data), n);
    return OkStatus();
  }
  std::string bytes;
};

oci::Reference Ref(const std::string& text) { return *oci::Reference::Parse(text); }

std::unique_ptr<RegistryClient> NewClient(std::shared_ptr<CredentialStore> creds) {
  RegistryOptions options;
  options.credentials = std::move(creds);
  // Fail fast: these tests expect auth errors, not transient ones.
  options.retry.max_attempts = 2;
  return std::move(*RegistryClient::Create(options));
}

std::shared_ptr<StaticCredentials> Creds(const std::string& host, const std::string& user,
                                         const std::string& password) {
  auto c = std::make_shared<StaticCredentials>();
  c->Set(host, {user, password, ""});
  return c;
}

// Pulls every layer of the host platform's image; returns the first error.
Status PullAll(RegistryClient& client, const std::string& ref, const TestImage& image,
               const CallOptions& call = {}) {
  EVS_ASSIGN_OR_RETURN(
      PlatformImage pi,
      FetchPlatformImage(client, Ref(ref), *oci::Platform::Parse("linux/amd64"), call));
  for (const auto& layer : pi.parsed.layers) {
    StringSink sink;
    EVS_RETURN_IF_ERROR(client.FetchBlob(pi.reference, layer, &sink, call));
    if (sink.bytes != image.blobs.at(layer.digest)) return DataLossError("bytes differ");
  }
  return OkStatus();
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_PROGRAM("skopeo");
    auto image = evs::testing::BuildTestImage(dir_.path(), {"linux/amd64"}, 2, 64 << 10, "v1");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    image_ = std::move(*image);
  }
  // A registry that wants bearer tokens from a token server that knows
  // `user_password` ("user:password"), holding image_ as host/repo:v1.
  struct TokenRegistry {
    std::unique_ptr<TokenServer> tokens;
    std::unique_ptr<LocalRegistry> registry;
    std::string host;
  };
  void StartTokenRegistry(const std::string& user_password, const std::string& repo,
                          TokenRegistry* out) {
    TokenServerOptions token_options;
    token_options.users = user_password;
    auto tokens = TokenServer::Start(token_options);
    ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
    out->tokens = std::move(*tokens);
    LocalRegistryOptions options;
    options.token_server = out->tokens.get();
    auto registry = LocalRegistry::Start(options);
    ASSERT_TRUE(registry.ok()) << registry.status().ToString();
    out->registry = std::move(*registry);
    out->host = out->registry->host();
    ASSERT_TRUE(
        evs::testing::SkopeoPush(image_, out->host + "/" + repo + ":v1", user_password).ok());
  }

  TempDir dir_;
  TestImage image_;
};

TEST_F(AuthTest, BasicAuthWithCallerCredentials) {
  LocalRegistryOptions options;
  options.htpasswd_user = "alice";
  options.htpasswd_password = "s3cret pass";
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  ASSERT_TRUE(evs::testing::SkopeoPush(image_, host + "/team/app:v1", "alice:s3cret pass").ok());

  // Anonymous: a clear Unauthenticated naming the registry.
  auto anonymous = NewClient(nullptr);
  Status s = PullAll(*anonymous, host + "/team/app:v1", image_);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("requires credentials"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(host), std::string::npos) << s.message();

  // Wrong password: rejected, and the message does not contain it.
  auto wrong = NewClient(Creds(host, "alice", "guess"));
  s = PullAll(*wrong, host + "/team/app:v1", image_);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_EQ(s.message().find("guess"), std::string::npos);

  // Right password from the store; and handed in per call.
  auto right = NewClient(Creds(host, "alice", "s3cret pass"));
  EXPECT_TRUE(PullAll(*right, host + "/team/app:v1", image_).ok());
  CallOptions call;
  call.credentials = Credentials{"alice", "s3cret pass", ""};
  EXPECT_TRUE(PullAll(*anonymous, host + "/team/app:v1", image_, call).ok());

  // Push with Basic auth.
  MemoryBlobContent content("pushed with basic auth");
  oci::Descriptor d{"application/octet-stream", Digest::Sha256Of("pushed with basic auth"), 22};
  auto pushed = right->PushBlob(Ref(host + "/team/other"), d, &content);
  ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  EXPECT_EQ(*pushed, PushOutcome::kUploaded);
}

TEST_F(AuthTest, DockerConfigAuthsAndCredentialHelpers) {
  LocalRegistryOptions options;
  options.htpasswd_user = "bob";
  options.htpasswd_password = "hunter2";
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  ASSERT_TRUE(evs::testing::SkopeoPush(image_, host + "/app:v1", "bob:hunter2").ok());

  // "auths" with base64(user:password).
  std::string config =
      "{\"auths\":{\"http://" + host + "\":{\"auth\":\"" + Base64Encode("bob:hunter2") + "\"}}}";
  evs::testing::WriteFile(dir_.Join("docker/config.json"), config);
  auto store = DockerConfigCredentials::Load(dir_.Join("docker/config.json"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto client = NewClient(std::shared_ptr<CredentialStore>(std::move(*store)));
  EXPECT_TRUE(PullAll(*client, host + "/app:v1", image_).ok());

  // "credHelpers": docker-credential-evstest answers `get` for this host.
  std::string bin = dir_.Join("bin");
  evs::testing::WriteFile(bin + "/docker-credential-evstest",
                          "#!/bin/sh\nread server\necho \"$server\" >> '" + dir_.Join("asked") +
                              "'\nif [ \"$server\" = '" + host +
                              "' ]; then echo '{\"ServerURL\":\"x\",\"Username\":\"bob\","
                              "\"Secret\":\"hunter2\"}'; else echo 'credentials not found in "
                              "native keychain'; exit 1; fi\n");
  evs::testing::ShOk("chmod +x '" + bin + "/docker-credential-evstest'");
  std::string old_path = ::getenv("PATH");
  ::setenv("PATH", (bin + ":" + old_path).c_str(), 1);
  auto helper_store =
      DockerConfigCredentials::Parse("{\"credHelpers\":{\"" + host + "\":\"evstest\"}}", "inline");
  ASSERT_TRUE(helper_store.ok());
  auto helper_client = NewClient(std::shared_ptr<CredentialStore>(std::move(*helper_store)));
  Status s = PullAll(*helper_client, host + "/app:v1", image_);
  EXPECT_TRUE(s.ok()) << s.ToString();
  // "credsStore" for every host; an unknown host is "not found", not an error.
  auto store_all = DockerConfigCredentials::Parse("{\"credsStore\":\"evstest\"}", "inline");
  ASSERT_TRUE(store_all.ok());
  auto none = (*store_all)->Lookup("other.example.com");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  auto found = (*store_all)->Lookup(host);
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->username, "bob");
  ::setenv("PATH", old_path.c_str(), 1);
  EXPECT_NE(evs::testing::ReadFileOrDie(dir_.Join("asked")).find(host), std::string::npos);
}

TEST_F(AuthTest, TokenAuthPullAndPushCachingTokensPerScope) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  TokenRegistry world;
  ASSERT_NO_FATAL_FAILURE(StartTokenRegistry("carol:tok3n", "tok/app", &world));
  const std::string& host = world.host;
  TokenServer* tokens = world.tokens.get();
  int issued_by_skopeo = tokens->TokensIssued();

  auto anonymous = NewClient(nullptr);
  Status s = PullAll(*anonymous, host + "/tok/app:v1", image_);
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("token server"), std::string::npos) << s.message();

  auto client = NewClient(Creds(host, "carol", "tok3n"));
  ASSERT_TRUE(PullAll(*client, host + "/tok/app:v1", image_).ok());
  // Manifest, index, config and both layers: one token for the pull scope.
  EXPECT_EQ(tokens->TokensIssued() - issued_by_skopeo, 1)
      << evs::testing::ReadFileOrDie(tokens->log_path());
  ASSERT_TRUE(PullAll(*client, host + "/tok/app:v1", image_).ok());
  EXPECT_EQ(tokens->TokensIssued() - issued_by_skopeo, 1);

  // Pushing needs pull,push: a second token, then cached too.
  for (int i = 0; i < 2; ++i) {
    std::string data = "token push " + std::to_string(i);
    MemoryBlobContent content(data);
    oci::Descriptor d{"application/octet-stream", Digest::Sha256Of(data),
                      static_cast<int64_t>(data.size())};
    auto pushed = client->PushBlob(Ref(host + "/tok/pushed"), d, &content);
    ASSERT_TRUE(pushed.ok()) << pushed.status().ToString();
  }
  EXPECT_EQ(tokens->TokensIssued() - issued_by_skopeo, 2);
}

TEST_F(AuthTest, DebugLogsOfAnAuthenticatedPullHoldNoSecret) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  const std::string evs = evs::testing::BuildDir() + "/src/cli/evs";
  if (::access(evs.c_str(), X_OK) != 0) GTEST_SKIP() << "the evs binary is not built";
  TokenRegistry world;
  ASSERT_NO_FATAL_FAILURE(StartTokenRegistry("dave:s3cr3t-pa55", "sec/app", &world));
  const std::string& host = world.host;

  // Everything the CLI logs at debug level, for a pull that needs the
  // password and then a bearer token (JWTs start "eyJ").
  auto run = evs::testing::Sh(evs + " --log-level debug image pull --creds dave:s3cr3t-pa55 " +
                              host + "/sec/app:v1 --oci-layout " + dir_.Join("layout"));
  ASSERT_EQ(run.exit_code, 0) << run.stderr_data;
  const std::string out = run.stdout_data + run.stderr_data;
  EXPECT_NE(out.find("DEBUG"), std::string::npos) << "debug logging was on";
  EXPECT_EQ(out.find("s3cr3t-pa55"), std::string::npos) << out;
  EXPECT_EQ(out.find(Base64Encode("dave:s3cr3t-pa55")), std::string::npos) << out;
  EXPECT_EQ(out.find("eyJ"), std::string::npos) << out;
  EXPECT_GE(world.tokens->TokensIssued(), 1);
}

TEST_F(AuthTest, IdentityTokenUsesTheRefreshGrant) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  TokenServerOptions token_options;
  token_options.users = "dave:pw";
  token_options.refresh_tokens = "refresh-123";
  auto tokens = TokenServer::Start(token_options);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  LocalRegistryOptions options;
  options.token_server = tokens->get();
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  ASSERT_TRUE(evs::testing::SkopeoPush(image_, host + "/id/app:v1", "dave:pw").ok());
  // docker config "identitytoken": no username, the refresh token as secret.
  auto store = DockerConfigCredentials::Parse(
      "{\"auths\":{\"" + host + "\":{\"identitytoken\":\"refresh-123\"}}}", "inline");
  ASSERT_TRUE(store.ok());
  auto client = NewClient(std::shared_ptr<CredentialStore>(std::move(*store)));
  Status s = PullAll(*client, host + "/id/app:v1", image_);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::string log = evs::testing::ReadFileOrDie((*tokens)->log_path());
  EXPECT_NE(log.find("\"grant\":\"refresh_token\",\"ok\":true"), std::string::npos) << log;
}

TEST_F(AuthTest, TokenIsRefreshedBeforeTheExpiryItWasIssuedWith) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  TokenServerOptions token_options;
  token_options.users = "hal:pw";
  token_options.expires_in = 1;  // valid far longer, but the client is told 1 s
  auto tokens = TokenServer::Start(token_options);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  LocalRegistryOptions options;
  options.token_server = tokens->get();
  options.access_log = true;
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  ASSERT_TRUE(evs::testing::SkopeoPush(image_, host + "/pro/app:v1", "hal:pw").ok());
  int before = (*tokens)->TokensIssued();
  auto client = NewClient(Creds(host, "hal", "pw"));
  ASSERT_TRUE(PullAll(*client, host + "/pro/app:v1", image_).ok());
  auto count_401 = [&] {
    std::string log = evs::testing::ReadFileOrDie((*registry)->log_path());
    int n = 0;
    for (size_t pos = 0; (pos = log.find("\" 401 ", pos)) != std::string::npos; ++pos) ++n;
    return n;
  };
  int unauthorized = count_401();
  EXPECT_GT(unauthorized, 0);  // the first, anonymous request learned the challenge
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  ASSERT_TRUE(PullAll(*client, host + "/pro/app:v1", image_).ok());
  // A new token, fetched before asking the registry: no further 401.
  EXPECT_EQ((*tokens)->TokensIssued() - before, 2);
  EXPECT_EQ(count_401(), unauthorized);
}

TEST_F(AuthTest, ExpiredTokenIsRefreshedWhenTheRegistryRejectsIt) {
  EVS_REQUIRE_REGISTRY_TOOLS();
  TokenServerOptions token_options;
  token_options.users = "erin:pw";
  // Tokens really last 2 s, but clients are told 300 s: only the
  // registry's 401 can tell the client its cached token is stale.
  token_options.lifetime = std::chrono::seconds(2);
  token_options.expires_in = 300;
  token_options.registry_leeway = std::chrono::seconds(60);
  auto tokens = TokenServer::Start(token_options);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  LocalRegistryOptions options;
  options.token_server = tokens->get();
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  ASSERT_TRUE(evs::testing::SkopeoPush(image_, host + "/exp/app:v1", "erin:pw").ok());
  int before = (*tokens)->TokensIssued();
  auto client = NewClient(Creds(host, "erin", "pw"));
  ASSERT_TRUE(PullAll(*client, host + "/exp/app:v1", image_).ok());
  EXPECT_EQ((*tokens)->TokensIssued() - before, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  Status s = PullAll(*client, host + "/exp/app:v1", image_);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ((*tokens)->TokensIssued() - before, 2);
}

}  // namespace
}  // namespace evs::registry

namespace evs::registry {
namespace {

// TLS per hosts.toml: a registry with a certificate from a test CA, first
// untrusted (clear error), then trusted through `ca`, then with
// `skip_verify`, then requiring a client certificate (`client`).
class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EVS_REQUIRE_LOCAL_REGISTRY();
    EVS_REQUIRE_PROGRAM("openssl");
    EVS_REQUIRE_PROGRAM("skopeo");
    std::string d = dir_.path();
    // A CA, a server certificate for 127.0.0.1, a client CA and client.
    evs::testing::ShOk(
        "set -e; cd '" + d +
        "'; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
        "/CN=evs-test-ca "
        "  -keyout ca.key -out ca.pem 2>/dev/null; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 "
        "-keyout server.key "
        "  -out server.csr 2>/dev/null; "
        "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "  -extfile san.ext -out server.pem 2>/dev/null; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
        "/CN=evs-client-ca "
        "  -keyout client-ca.key -out client-ca.pem 2>/dev/null; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=evs-client "
        "-keyout client.key "
        "  -out client.csr 2>/dev/null; "
        "openssl x509 -req -in client.csr -CA client-ca.pem -CAkey client-ca.key "
        "  -CAcreateserial -days 2 -out client.pem 2>/dev/null");
    auto image = evs::testing::BuildTestImage(dir_.Join("img"), {"linux/amd64"}, 2, 32 << 10, "v1");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    image_ = std::move(*image);
  }

  // hosts.toml for `host` under a fresh config dir; returns the dir.
  std::string Hosts(const std::string& host, const std::string& body) {
    std::string root = dir_.Join("certs.d-" + std::to_string(++n_));
    evs::testing::WriteFile(root + "/" + host + "/hosts.toml",
                            "server = \"https://" + host + "\"\n" + body);
    // Relative paths in hosts.toml are relative to its directory.
    evs::testing::ShOk("cp '" + dir_.Join("ca.pem") + "' '" + dir_.Join("client.pem") + "' '" +
                       dir_.Join("client.key") + "' '" + root + "/" + host + "/'");
    return root;
  }

  Status Pull(const std::string& hosts_dir, const std::string& host) {
    RegistryOptions o;
    o.hosts_dir = hosts_dir;
    o.retry.max_attempts = 2;
    o.retry.initial_backoff = std::chrono::milliseconds(10);
    auto client = std::move(*RegistryClient::Create(o));
    return PullAll(*client, host + "/tls/app:v1", image_);
  }

  TempDir dir_;
  TestImage image_;
  int n_ = 0;
};

TEST_F(TlsTest, CaFromHostsTomlSkipVerifyAndHttp2) {
  LocalRegistryOptions options;
  options.tls_cert = dir_.Join("server.pem");
  options.tls_key = dir_.Join("server.key");
  options.access_log = true;
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  auto pushed = evs::testing::Sh("skopeo copy --quiet --all --dest-cert-dir '" + dir_.path() +
                                 "/skopeo-certs' --dest-tls-verify=false oci:" + image_.layout_dir +
                                 ":v1 docker://" + host + "/tls/app:v1 2>&1");
  ASSERT_EQ(pushed.exit_code, 0) << pushed.stdout_data;

  // Not configured: the system CAs do not know the test CA.
  Status untrusted = Pull(Hosts(host, ""), host);
  EXPECT_EQ(untrusted.code(), Code::kFailedPrecondition) << untrusted.ToString();
  EXPECT_NE(untrusted.message().find("TLS"), std::string::npos) << untrusted.message();
  EXPECT_NE(untrusted.message().find("hosts.toml"), std::string::npos);

  Status trusted = Pull(Hosts(host, "ca = \"ca.pem\"\n"), host);
  EXPECT_TRUE(trusted.ok()) << trusted.ToString();
  Status skipped = Pull(Hosts(host, "skip_verify = true\n"), host);
  EXPECT_TRUE(skipped.ok()) << skipped.ToString();
  // Go's server offers HTTP/2 over TLS; libcurl took it.
  std::string log = evs::testing::ReadFileOrDie((*registry)->log_path());
  EXPECT_NE(log.find("HTTP/2.0"), std::string::npos);
}

TEST_F(TlsTest, ClientCertificateFromHostsToml) {
  LocalRegistryOptions options;
  options.tls_cert = dir_.Join("server.pem");
  options.tls_key = dir_.Join("server.key");
  options.client_ca = dir_.Join("client-ca.pem");
  auto registry = LocalRegistry::Start(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  std::string host = (*registry)->host();
  std::string certs = dir_.Join("skopeo-certs");
  evs::testing::ShOk("mkdir -p '" + certs + "' && cp '" + dir_.Join("client.pem") + "' '" + certs +
                     "/client.cert' && cp '" + dir_.Join("client.key") + "' '" + certs +
                     "/client.key' && cp '" + dir_.Join("ca.pem") + "' '" + certs + "/ca.crt'");
  auto pushed = evs::testing::Sh("skopeo copy --quiet --dest-cert-dir '" + certs + "' oci:" +
                                 image_.layout_dir + ":v1 docker://" + host + "/tls/app:v1 2>&1");
  ASSERT_EQ(pushed.exit_code, 0) << pushed.stdout_data;

  Status without = Pull(Hosts(host, "ca = \"ca.pem\"\n"), host);
  EXPECT_FALSE(without.ok());
  EXPECT_NE(without.message().find(host), std::string::npos) << without.message();
  Status with =
      Pull(Hosts(host, "ca = \"ca.pem\"\nclient = [[\"client.pem\", \"client.key\"]]\n"), host);
  EXPECT_TRUE(with.ok()) << with.ToString();
  Status missing =
      Pull(Hosts(host, "ca = \"ca.pem\"\nclient = \"/nonexistent/client.pem\"\n"), host);
  EXPECT_EQ(missing.code(), Code::kFailedPrecondition);
  EXPECT_NE(missing.message().find("/nonexistent/client.pem"), std::string::npos);
}

}  // namespace
}  // namespace evs::registry
