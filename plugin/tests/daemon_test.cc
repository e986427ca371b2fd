// containerd-evs-grpc as containerd sees it: a process serving the
// snapshots API on a unix socket. Each test starts the real binary.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "evs/common/file.h"
#include "test_util.h"

namespace evs::plugin {
namespace {

namespace v1 = ::containerd::services::snapshots::v1;
using evs::testing::ReadFileOrDie;
using evs::testing::TempDir;

std::string DaemonBinary() { return evs::testing::BuildDir() + "/plugin/containerd-evs-grpc"; }

// One daemon process; SIGKILLed on destruction if still running.
class Daemon {
 public:
  Daemon(const std::string& root, const std::string& socket, const std::string& log,
         std::vector<std::string> extra = {})
      : socket_(socket), log_(log) {
    std::vector<std::string> args = {DaemonBinary(), "--root", root,       "--address", socket,
                                     "--log-level",  "debug",  "--config", "/dev/null"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Daemon() {
    if (pid_ > 0 && !exited_) {
      // Gracefully, so that it stops the verifier processes it started.
      ::kill(pid_, SIGTERM);
      int status;
      for (int i = 0; i < 6000 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i) ::usleep(10000);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Waits until the socket accepts connections or the process exits.
  bool WaitReady() {
    for (;;) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        status_ = status;
        return false;
      }
      auto channel = grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials());
      if (channel->WaitForConnected(std::chrono::system_clock::now() +
                                    std::chrono::milliseconds(200))) {
        return true;
      }
    }
  }
  // Waits until the log has a line containing `text` (or the process exits).
  bool WaitForLog(const std::string& text) {
    for (;;) {
      if (ReadFileOrDie(log_).find(text) != std::string::npos) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        status_ = status;
        return false;
      }
      ::usleep(10000);
    }
  }
  // Sends `sig` and waits for the exit; returns the wait status.
  int Stop(int sig = SIGTERM) {
    if (!exited_) {
      ::kill(pid_, sig);
      ::waitpid(pid_, &status_, 0);
      exited_ = true;
    }
    return status_;
  }
  int Wait() {
    if (!exited_) {
      ::waitpid(pid_, &status_, 0);
      exited_ = true;
    }
    return status_;
  }
  std::unique_ptr<v1::Snapshots::Stub> Client() const {
    return v1::Snapshots::NewStub(
        grpc::CreateChannel("unix:" + socket_, grpc::InsecureChannelCredentials()));
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string socket_;
  std::string log_;
};

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A synchronous C++ client reads an idle connection only from gRPC's
    // backup poller (every 5 s by default), so it would answer the daemon's
    // graceful-shutdown PING late; containerd's Go client answers at once.
    ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "50", 1);
    if (!evs::testing::IsRoot() || !evs::testing::KernelHasFilesystem("erofs") ||
        !evs::testing::KernelHasFilesystem("overlay")) {
      GTEST_SKIP() << "needs root, erofs and overlay";
    }
    if (::access(DaemonBinary().c_str(), X_OK) != 0) GTEST_SKIP() << "needs " << DaemonBinary();
  }
  std::unique_ptr<Daemon> Start(std::vector<std::string> extra = {}) {
    auto d = std::make_unique<Daemon>(root(), socket(), log(), extra);
    EXPECT_TRUE(d->WaitReady()) << ReadFileOrDie(log());
    return d;
  }
  void TearDown() override { evs::testing::KillProcessesMentioning(dir_.path() + "/"); }
  std::string root() const { return dir_.Join("root"); }
  std::string socket() const { return dir_.Join("run/evs.sock"); }
  std::string log() const { return dir_.Join("daemon.log"); }

  TempDir dir_{"evs-daemon"};
};

grpc::Status Prepare(v1::Snapshots::Stub* c, const std::string& key, const std::string& parent,
                     v1::PrepareSnapshotResponse* resp = nullptr,
                     std::map<std::string, std::string> labels = {}) {
  grpc::ClientContext ctx;
  v1::PrepareSnapshotRequest req;
  req.set_snapshotter("evs");
  req.set_key(key);
  req.set_parent(parent);
  req.mutable_labels()->insert(labels.begin(), labels.end());
  v1::PrepareSnapshotResponse ignored;
  return c->Prepare(&ctx, req, resp ? resp : &ignored);
}

grpc::Status Commit(v1::Snapshots::Stub* c, const std::string& name, const std::string& key) {
  grpc::ClientContext ctx;
  v1::CommitSnapshotRequest req;
  req.set_name(name);
  req.set_key(key);
  google::protobuf::Empty resp;
  return c->Commit(&ctx, req, &resp);
}

grpc::Status Stat(v1::Snapshots::Stub* c, const std::string& key, v1::Info* info = nullptr) {
  grpc::ClientContext ctx;
  v1::StatSnapshotRequest req;
  req.set_key(key);
  v1::StatSnapshotResponse resp;
  grpc::Status s = c->Stat(&ctx, req, &resp);
  if (info != nullptr) *info = resp.info();
  return s;
}

std::string UpperDir(const v1::PrepareSnapshotResponse& resp) {
  const auto& m = resp.mounts(0);
  if (m.type() == "bind") return m.source();
  for (const std::string& o : m.options()) {
    if (o.rfind("upperdir=", 0) == 0) return o.substr(9);
  }
  return "";
}

TEST_F(DaemonTest, ServesTheSnapshotsApiWithTheErrorCodesContainerdMapsBack) {
  auto d = Start();
  auto c = d->Client();
  v1::PrepareSnapshotResponse prepared;
  ASSERT_TRUE(Prepare(c.get(), "extract-1", "", &prepared, {{"containerd.io/gc.root", "x"}}).ok());
  ASSERT_EQ(prepared.mounts_size(), 1);
  EXPECT_EQ(prepared.mounts(0).type(), "bind");
  evs::testing::WriteFile(UpperDir(prepared) + "/hello", "world");

  v1::Info info;
  ASSERT_TRUE(Stat(c.get(), "extract-1", &info).ok());
  EXPECT_EQ(info.kind(), v1::ACTIVE);
  EXPECT_EQ(info.labels().at("containerd.io/gc.root"), "x");
  EXPECT_GT(info.created_at().seconds(), 1600000000);

  EXPECT_EQ(Prepare(c.get(), "extract-1", "").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Stat(c.get(), "nothing").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Prepare(c.get(), "x", "extract-1").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Prepare(c.get(), "x", "", nullptr, {{"big", std::string(5000, 'v')}}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(Commit(c.get(), "sha256:layer1", "extract-1").ok());
  ASSERT_TRUE(Stat(c.get(), "sha256:layer1", &info).ok());
  EXPECT_EQ(info.kind(), v1::COMMITTED);

  {
    grpc::ClientContext ctx;
    v1::UsageRequest req;
    req.set_key("sha256:layer1");
    v1::UsageResponse resp;
    ASSERT_TRUE(c->Usage(&ctx, req, &resp).ok());
    EXPECT_GT(resp.size(), 0);
    EXPECT_EQ(resp.inodes(), 2);  // root and hello
  }
  {
    grpc::ClientContext ctx;
    v1::MountsRequest req;
    req.set_key("sha256:layer1");
    v1::MountsResponse resp;
    EXPECT_EQ(c->Mounts(&ctx, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  v1::PrepareSnapshotResponse child;
  ASSERT_TRUE(Prepare(c.get(), "container", "sha256:layer1", &child).ok());
  EXPECT_EQ(child.mounts(0).type(), "overlay");
  {
    grpc::ClientContext ctx;
    v1::RemoveSnapshotRequest req;
    req.set_key("sha256:layer1");
    google::protobuf::Empty resp;
    EXPECT_EQ(c->Remove(&ctx, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    grpc::ClientContext ctx;
    v1::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("container");
    (*req.mutable_info()->mutable_labels())["a"] = "b";
    req.mutable_update_mask()->add_paths("labels.a");
    v1::UpdateSnapshotResponse resp;
    ASSERT_TRUE(c->Update(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.info().labels().at("a"), "b");
  }
  {
    grpc::ClientContext ctx;
    v1::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("container");
    req.mutable_update_mask()->add_paths("parent");
    v1::UpdateSnapshotResponse resp;
    EXPECT_EQ(c->Update(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::CleanupRequest req;
    google::protobuf::Empty resp;
    EXPECT_TRUE(c->Cleanup(&ctx, req, &resp).ok());
  }
  EXPECT_EQ(WEXITSTATUS(d->Stop()), 0);
}

TEST_F(DaemonTest, ListStreamsEveryMatchInBatchesOfAHundred) {
  auto d = Start();
  auto c = d->Client();
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE(
        Prepare(c.get(), StrCat("k", i), "", nullptr, {{"even", i % 2 == 0 ? "yes" : "no"}}).ok());
  }
  auto list = [&](std::vector<std::string> filters, int* messages) {
    grpc::ClientContext ctx;
    v1::ListSnapshotsRequest req;
    for (auto& f : filters) req.add_filters(f);
    auto reader = c->List(&ctx, req);
    v1::ListSnapshotsResponse resp;
    int n = 0;
    *messages = 0;
    while (reader->Read(&resp)) {
      n += resp.info_size();
      ++*messages;
    }
    EXPECT_TRUE(reader->Finish().ok());
    return n;
  };
  int messages = 0;
  EXPECT_EQ(list({}, &messages), 150);
  EXPECT_EQ(messages, 2);
  EXPECT_EQ(list({"labels.even==yes"}, &messages), 75);
  EXPECT_EQ(messages, 1);
  EXPECT_EQ(list({"labels.even==yes", "name==k1"}, &messages), 76);
  {
    grpc::ClientContext ctx;
    v1::ListSnapshotsRequest req;
    req.add_filters("name==");
    auto reader = c->List(&ctx, req);
    v1::ListSnapshotsResponse resp;
    while (reader->Read(&resp)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(DaemonTest, TheSocketIsOnlyForRootAndItsGroup) {
  auto d = Start();
  struct stat st;
  ASSERT_EQ(::stat(socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST_F(DaemonTest, ASecondDaemonOnALiveSocketExitsWithAClearError) {
  auto d = Start();
  Daemon second(dir_.Join("root2"), socket(), dir_.Join("second.log"));
  EXPECT_NE(WEXITSTATUS(second.Wait()), 0);
  EXPECT_NE(ReadFileOrDie(dir_.Join("second.log")).find("another daemon is serving on " + socket()),
            std::string::npos)
      << ReadFileOrDie(dir_.Join("second.log"));
  // The first one is unharmed.
  auto c = d->Client();
  EXPECT_TRUE(Prepare(c.get(), "still-serving", "").ok());
}

TEST_F(DaemonTest, AStaleSocketIsReplacedAndStateSurvivesARestart) {
  {
    auto d = Start();
    auto c = d->Client();
    v1::PrepareSnapshotResponse p;
    ASSERT_TRUE(Prepare(c.get(), "a", "", &p).ok());
    evs::testing::WriteFile(UpperDir(p) + "/f", "kept");
    ASSERT_TRUE(Commit(c.get(), "a-c", "a").ok());
    // SIGKILL: the socket file stays behind, stale.
    d->Stop(SIGKILL);
  }
  struct stat st;
  ASSERT_EQ(::lstat(socket().c_str(), &st), 0);
  auto d = Start();
  auto c = d->Client();
  v1::Info info;
  ASSERT_TRUE(Stat(c.get(), "a-c", &info).ok());
  EXPECT_EQ(info.kind(), v1::COMMITTED);
  v1::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare(c.get(), "b", "a-c", &p).ok());
  EXPECT_NE(ReadFileOrDie(log()).find("removed stale socket"), std::string::npos);
}

TEST_F(DaemonTest, SigtermLetsAnInFlightCommitFinishThenExitsCleanly) {
  auto d = Start();
  auto c = d->Client();
  v1::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare(c.get(), "big", "", &p).ok());
  evs::testing::ShOk("head -c 200M /dev/urandom > '" + UpperDir(p) + "/blob'");
  grpc::Status committed;
  std::thread commit([&] { committed = Commit(c.get(), "big-c", "big"); });
  ASSERT_TRUE(d->WaitForLog("converting upper directory")) << ReadFileOrDie(log());
  int status = d->Stop(SIGTERM);
  commit.join();
  EXPECT_TRUE(committed.ok()) << committed.error_message();
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  struct stat st;
  EXPECT_NE(::lstat(socket().c_str(), &st), 0) << "socket removed on a clean exit";
  auto again = Start();
  auto c2 = again->Client();
  v1::Info info;
  ASSERT_TRUE(Stat(c2.get(), "big-c", &info).ok());
  EXPECT_EQ(info.kind(), v1::COMMITTED);
}

TEST_F(DaemonTest, KillNineDuringAConversionLeavesNothingHalfMadeAndTheCommitCanBeRetried) {
  auto d = Start();
  auto c = d->Client();
  v1::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare(c.get(), "big", "", &p).ok());
  evs::testing::ShOk("head -c 200M /dev/urandom > '" + UpperDir(p) + "/blob'");
  grpc::Status committed;
  std::thread commit([&] { committed = Commit(c.get(), "big-c", "big"); });
  ASSERT_TRUE(d->WaitForLog("converting upper directory")) << ReadFileOrDie(log());
  d->Stop(SIGKILL);
  commit.join();
  EXPECT_EQ(committed.error_code(), grpc::StatusCode::UNAVAILABLE);

  auto again = Start();
  auto c2 = again->Client();
  v1::Info info;
  ASSERT_TRUE(Stat(c2.get(), "big", &info).ok());
  EXPECT_EQ(info.kind(), v1::ACTIVE) << "the commit never happened";
  EXPECT_EQ(Stat(c2.get(), "big-c").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(evs::testing::Sh("ls -A '" + root() + "/layers/tmp' '" + root() + "/layers/sha256'")
                .stdout_data,
            root() + "/layers/sha256:\n\n" + root() + "/layers/tmp:\n");
  EXPECT_NE(ReadFileOrDie(log()).find("staging_removed=1"), std::string::npos);
  ASSERT_TRUE(Commit(c2.get(), "big-c", "big").ok());
}

TEST_F(DaemonTest, ALayerWhoseVerifierProcessDiedIsMountedAgainOnNextUse) {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "needs /dev/fuse";
  auto d = Start({"--verity", "userspace"});
  auto c = d->Client();
  v1::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare(c.get(), "a", "", &p).ok());
  evs::testing::WriteFile(UpperDir(p) + "/f", "content");
  ASSERT_TRUE(Commit(c.get(), "a-c", "a").ok());
  std::string pidfile = root() + "/m/1.pid";
  int first = std::atoi(ReadFileOrDie(pidfile).c_str());
  ASSERT_GT(first, 1);
  EXPECT_EQ(ReadFileOrDie(root() + "/m/1/f"), "content");
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // Wait until it is dead (a zombie until the daemon reaps it).
  auto dead = [&] {
    std::string stat =
        evs::testing::Sh(StrCat("cat /proc/", first, "/stat 2>/dev/null")).stdout_data;
    size_t paren = stat.rfind(')');
    return stat.empty() || (paren != std::string::npos && stat.substr(paren + 2, 1) == "Z");
  };
  for (int i = 0; i < 1000 && !dead(); ++i) ::usleep(10000);
  ASSERT_TRUE(dead());

  ASSERT_TRUE(Prepare(c.get(), "b", "a-c").ok());
  int second = std::atoi(ReadFileOrDie(pidfile).c_str());
  EXPECT_NE(second, first);
  EXPECT_EQ(::kill(second, 0), 0) << "a new verifier serves the layer";
  EXPECT_EQ(ReadFileOrDie(root() + "/m/1/f"), "content");
  EXPECT_NE(ReadFileOrDie(log()).find("verifier process of a layer exited"), std::string::npos);
}

TEST_F(DaemonTest, PrometheusMetricsCountCallsSnapshotsAndLayers) {
  EVS_REQUIRE_PROGRAM("curl");
  int port = evs::testing::FreePort();
  auto d = Start({"--metrics-address", StrCat("127.0.0.1:", port)});
  auto c = d->Client();
  v1::PrepareSnapshotResponse p;
  ASSERT_TRUE(Prepare(c.get(), "a", "", &p).ok());
  evs::testing::WriteFile(UpperDir(p) + "/f", "x");
  ASSERT_TRUE(Commit(c.get(), "a-c", "a").ok());
  EXPECT_EQ(Stat(c.get(), "missing").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Prepare(c.get(), "b", "a-c").ok());
  std::string url = StrCat("http://127.0.0.1:", port);
  std::string text = evs::testing::ShOk("curl -sf " + url + "/metrics");
  for (const char* line :
       {"evs_grpc_calls_total{method=\"Commit\",code=\"OK\"} 1",
        "evs_grpc_calls_total{method=\"Prepare\",code=\"OK\"} 2",
        "evs_grpc_calls_total{method=\"Stat\",code=\"NOT_FOUND\"} 1",
        "evs_snapshots{kind=\"active\"} 1", "evs_snapshots{kind=\"committed\"} 1", "evs_layers 1",
        "evs_layer_mounts 1", "evs_commits_total 1", "evs_layers_shared_total 0"}) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
  EXPECT_EQ(evs::testing::Sh("curl -s -o /dev/null -w '%{http_code}' " + url + "/").stdout_data,
            "404");
}

TEST_F(DaemonTest, ThirtyTwoConcurrentClientStreamsNeitherDeadlockNorLeak) {
  auto d = Start();
  constexpr int kStreams = 32;
  constexpr int kRounds = 2;
  {
    auto c = d->Client();
    v1::PrepareSnapshotResponse p;
    ASSERT_TRUE(Prepare(c.get(), "base", "", &p).ok());
    evs::testing::WriteFile(UpperDir(p) + "/base", "b");
    ASSERT_TRUE(Commit(c.get(), "base-c", "base").ok());
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kStreams; ++t) {
    threads.emplace_back([&, t] {
      auto c = d->Client();  // a connection per stream, like separate clients
      for (int r = 0; r < kRounds; ++r) {
        std::string key = StrCat("s", t, "-", r);
        v1::PrepareSnapshotResponse p;
        grpc::Status s = Prepare(c.get(), key, "base-c", &p);
        if (!s.ok()) {
          ++failures;
          continue;
        }
        evs::testing::WriteFile(UpperDir(p) + "/f", key);
        if (!Commit(c.get(), key + "-c", key).ok()) ++failures;
        grpc::ClientContext ctx;
        v1::RemoveSnapshotRequest req;
        req.set_key(key + "-c");
        google::protobuf::Empty resp;
        if (!c->Remove(&ctx, req, &resp).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // Only the base layer is left: one layer directory, one mount point, one
  // snapshot; no staging, no upper directories.
  EXPECT_EQ(evs::testing::Sh("ls -A '" + root() + "/layers/sha256' | wc -l").stdout_data, "1\n");
  EXPECT_EQ(evs::testing::Sh("ls -A '" + root() + "/layers/tmp' '" + root() +
                             "/snapshots' | "
                             "grep -v : | grep -c .")
                .stdout_data,
            "0\n");
  EXPECT_EQ(evs::testing::Sh("ls '" + root() + "/m' | grep -cE '^[0-9]+$'").stdout_data, "1\n");
  auto c = d->Client();
  grpc::ClientContext ctx;
  v1::ListSnapshotsRequest req;
  auto reader = c->List(&ctx, req);
  v1::ListSnapshotsResponse resp;
  int n = 0;
  while (reader->Read(&resp)) n += resp.info_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(n, 1);
  EXPECT_EQ(WEXITSTATUS(d->Stop()), 0);
}

}  // namespace
}  // namespace evs::plugin
