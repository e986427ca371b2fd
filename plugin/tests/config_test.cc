// DaemonConfig: defaults, then the TOML file, then flags; every key is a
// flag; mistakes are errors that name the file and the key.
#include "config.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace evs::plugin {
namespace {

using evs::testing::TempDir;
using evs::testing::WriteFile;

Result<DaemonConfig> Load(std::vector<std::string> args, int* exit_code = nullptr) {
  std::vector<const char*> argv = {"containerd-evs-grpc"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  int code = -1;
  auto r = LoadDaemonConfig(static_cast<int>(argv.size()), argv.data(), &code);
  if (exit_code != nullptr) *exit_code = code;
  return r;
}

TEST(DaemonConfig, DefaultsMatchTheDesign) {
  TempDir dir;
  auto c = Load({"--config", dir.Join("none.toml")});
  // An explicitly named file must exist.
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(dir.Join("none.toml")), std::string::npos);

  DaemonConfig d;
  EXPECT_EQ(d.root, "/var/lib/containerd-evs");
  EXPECT_EQ(d.address, "/run/containerd-evs/containerd-evs-grpc.sock");
  EXPECT_EQ(d.verity, snapshot::VerityMode::kAuto);
  EXPECT_EQ(d.log_level, "info");
}

TEST(DaemonConfig, TheFileSetsKeysAndFlagsOverrideThem) {
  TempDir dir;
  WriteFile(dir.Join("c.toml"),
            "root = \"/srv/evs\"\naddress = \"/tmp/x.sock\"\nverity = \"off\"\n"
            "log_level = \"debug\"\nshutdown_timeout_seconds = 5\n"
            "metrics_address = \"127.0.0.1:9650\"\n");
  auto c = Load({"--config", dir.Join("c.toml")});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->root, "/srv/evs");
  EXPECT_EQ(c->address, "/tmp/x.sock");
  EXPECT_EQ(c->verity, snapshot::VerityMode::kOff);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->shutdown_timeout_seconds, 5);
  EXPECT_EQ(c->metrics_address, "127.0.0.1:9650");
  EXPECT_EQ(c->config_path, dir.Join("c.toml"));

  auto f =
      Load({"--config", dir.Join("c.toml"), "--root", "/other", "--verity", "userspace",
            "--address", "/run/a.sock", "--log-level", "warn", "--shutdown-timeout-seconds", "7"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->root, "/other");
  EXPECT_EQ(f->address, "/run/a.sock");
  EXPECT_EQ(f->verity, snapshot::VerityMode::kUserspace);
  EXPECT_EQ(f->log_level, "warn");
  EXPECT_EQ(f->shutdown_timeout_seconds, 7);
}

TEST(DaemonConfig, UnknownKeysWrongTypesAndBadValuesNameFileAndKey) {
  TempDir dir;
  struct Case {
    std::string toml;
    std::string expect;
  } cases[] = {
      {"rooot = \"/x\"\n", "unknown key \"rooot\""},
      {"root = 5\n", "\"root\" must be a string"},
      {"verity = \"sometimes\"\n", "verity mode \"sometimes\""},
      {"log_level = \"loud\"\n", "log_level \"loud\""},
      {"shutdown_timeout_seconds = -1\n", "shutdown_timeout_seconds"},
      {"root = \"relative/path\"\n", "must be an absolute path"},
      {"root = \n", "c.toml"},
  };
  for (const Case& c : cases) {
    WriteFile(dir.Join("c.toml"), c.toml);
    auto r = Load({"--config", dir.Join("c.toml")});
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << c.toml;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.toml << " gave " << r.status().message();
  }
}

TEST(DaemonConfig, ConvertOnPullKeysAndFlags) {
  DaemonConfig d;
  EXPECT_TRUE(d.convert_on_pull);
  EXPECT_EQ(d.registry_config_path, "/etc/containerd/certs.d");
  EXPECT_EQ(d.max_concurrent_conversions, 3);
  EXPECT_TRUE(d.convert_ahead);
  EXPECT_TRUE(d.verify_diff_id);

  TempDir dir;
  WriteFile(dir.Join("c.toml"),
            "convert_on_pull = false\nregistry_config_path = \"/etc/hosts.d\"\n"
            "docker_config = \"/root/cfg.json\"\nmax_concurrent_conversions = 5\n"
            "convert_ahead = false\nverify_diff_id = false\nmax_layer_bytes = 1000\n"
            "keep_unclaimed_seconds = 9\nlazy_pull = false\nlazy_background_fetch = false\n");
  auto c = Load({"--config", dir.Join("c.toml")});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->convert_on_pull);
  EXPECT_EQ(c->registry_config_path, "/etc/hosts.d");
  EXPECT_EQ(c->docker_config, "/root/cfg.json");
  EXPECT_EQ(c->max_concurrent_conversions, 5);
  EXPECT_FALSE(c->convert_ahead);
  EXPECT_FALSE(c->verify_diff_id);
  EXPECT_EQ(c->max_layer_bytes, 1000);
  EXPECT_EQ(c->keep_unclaimed_seconds, 9);
  EXPECT_FALSE(c->lazy_pull);
  EXPECT_FALSE(c->lazy_background_fetch);

  auto f = Load({"--config",
                 dir.Join("c.toml"),
                 "--convert-on-pull",
                 "true",
                 "--registry-config-path",
                 "",
                 "--docker-config",
                 "/x.json",
                 "--max-concurrent-conversions",
                 "2",
                 "--convert-ahead",
                 "true",
                 "--verify-diff-id",
                 "true",
                 "--max-layer-bytes",
                 "77",
                 "--keep-unclaimed-seconds",
                 "0",
                 "--lazy-pull",
                 "true",
                 "--lazy-background-fetch",
                 "true"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(f->convert_on_pull);
  EXPECT_EQ(f->registry_config_path, "");
  EXPECT_EQ(f->docker_config, "/x.json");
  EXPECT_EQ(f->max_concurrent_conversions, 2);
  EXPECT_TRUE(f->convert_ahead);
  EXPECT_TRUE(f->verify_diff_id);
  EXPECT_EQ(f->max_layer_bytes, 77);
  EXPECT_EQ(f->keep_unclaimed_seconds, 0);
  EXPECT_TRUE(f->lazy_pull);
  EXPECT_TRUE(f->lazy_background_fetch);

  for (const char* bad : {"convert_on_pull = 1\n", "max_concurrent_conversions = 0\n",
                          "max_layer_bytes = -5\n", "keep_unclaimed_seconds = \"x\"\n"}) {
    WriteFile(dir.Join("c.toml"), bad);
    auto r = Load({"--config", dir.Join("c.toml")});
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(Load({"--config", "/dev/null", "--max-concurrent-conversions", "0"}).ok());
  EXPECT_FALSE(Load({"--config", "/dev/null", "--convert-ahead", "sometimes"}).ok());
}

TEST(DaemonConfig, BadFlagsAreErrorsAndHelpExitsZero) {
  TempDir dir;
  EXPECT_FALSE(Load({"--config", "/dev/null", "--verity", "maybe"}).ok());
  EXPECT_FALSE(Load({"--config", "/dev/null", "--no-such-flag"}).ok());
  int code = -1;
  auto help = Load({"--help"}, &code);
  EXPECT_EQ(code, 0);
}

TEST(DaemonConfig, TheExampleConfigIsValidAndDocumentsEveryKey) {
  std::string example = evs::testing::SourceDir() + "/plugin/config.example.toml";
  auto c = Load({"--config", example});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::string text = evs::testing::ReadFileOrDie(example);
  for (const char* key :
       {"root", "address", "verity", "log_level", "shutdown_timeout_seconds", "metrics_address",
        "convert_on_pull", "registry_config_path", "docker_config", "max_concurrent_conversions",
        "convert_ahead", "verify_diff_id", "max_layer_bytes", "keep_unclaimed_seconds", "lazy_pull",
        "lazy_background_fetch"}) {
    EXPECT_NE(text.find(std::string("# ") + key), std::string::npos)
        << key << " is not documented in config.example.toml";
  }
}

}  // namespace
}  // namespace evs::plugin
