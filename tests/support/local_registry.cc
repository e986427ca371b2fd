#include "local_registry.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "evs/common/fd.h"
#include "evs/common/file.h"

extern char** environ;

namespace evs::testing {
namespace {

using std::chrono::milliseconds;

std::string Tail(const std::string& path, size_t n = 2000) {
  auto text = ReadFileToString(path, 64u << 20);
  if (!text.ok()) return "";
  return text->size() > n ? text->substr(text->size() - n) : *text;
}

}  // namespace

Result<ChildProcess> ChildProcess::Start(const std::vector<std::string>& argv,
                                         const std::string& log_path) {
  if (argv.empty()) return InvalidArgumentError("ChildProcess: empty argv");
  EVS_ASSIGN_OR_RETURN(UniqueFd log, OpenFile(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644));
  EVS_ASSIGN_OR_RETURN(UniqueFd null, OpenFile("/dev/null", O_RDONLY));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, null.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, log.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, log.get(), 2);
  // Its own process group, so that Stop() also reaches anything it spawns.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return ErrnoError(rc, "start " + argv[0]);
  ChildProcess p;
  p.pid_ = pid;
  return p;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Stop();
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

bool ChildProcess::running() const {
  if (pid_ <= 0) return false;
  int status;
  return ::waitpid(pid_, &status, WNOHANG) == 0;
}

void ChildProcess::Stop() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGTERM);
  ::kill(pid_, SIGTERM);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int status;
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  pid_ = -1;
}

Status WaitForPort(int port, milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::close(fd);
    if (rc == 0) return OkStatus();
    if (std::chrono::steady_clock::now() > until) {
      return Status(Code::kDeadlineExceeded, StrCat("port ", port, " did not open"));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

Result<std::string> WaitForFile(const std::string& path, milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto text = ReadFileToString(path, 1 << 20);
    if (text.ok() && !text->empty()) return *text;
    if (std::chrono::steady_clock::now() > until) {
      return Status(Code::kDeadlineExceeded, StrCat(path, " did not appear"));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

std::string TestToolPath(const std::string& name) { return BuildDir() + "/tests/tools/" + name; }

bool HaveRegistryTools() {
  return ::access(TestToolPath("faultproxy").c_str(), X_OK) == 0 &&
         ::access(TestToolPath("tokenserver").c_str(), X_OK) == 0;
}

bool HaveLocalRegistry() { return HaveProgram("docker-registry") && HaveProgram("htpasswd"); }

// ---------------------------------------------------------------------------

Result<std::unique_ptr<TokenServer>> TokenServer::Start(TokenServerOptions options) {
  if (!HaveRegistryTools()) return UnavailableError("tokenserver not built (needs go)");
  std::unique_ptr<TokenServer> t(new TokenServer());
  t->cert_path_ = t->dir_.Join("signer.pem");
  t->log_path_ = t->dir_.Join("requests.log");
  std::string addr_file = t->dir_.Join("addr");
  std::vector<std::string> argv = {TestToolPath("tokenserver"),
                                   "-listen",
                                   "127.0.0.1:0",
                                   "-addr-file",
                                   addr_file,
                                   "-cert",
                                   t->cert_path_,
                                   "-log",
                                   t->log_path_,
                                   "-issuer",
                                   kIssuer,
                                   "-service",
                                   kService,
                                   "-lifetime",
                                   StrCat(options.lifetime.count(), "s"),
                                   "-expires-in",
                                   std::to_string(options.expires_in),
                                   "-registry-leeway",
                                   StrCat(options.registry_leeway.count(), "s")};
  if (!options.users.empty()) {
    argv.push_back("-users");
    argv.push_back(options.users);
  }
  if (!options.refresh_tokens.empty()) {
    argv.push_back("-refresh-tokens");
    argv.push_back(options.refresh_tokens);
  }
  EVS_ASSIGN_OR_RETURN(t->process_, ChildProcess::Start(argv, t->dir_.Join("tokenserver.log")));
  auto addr = WaitForFile(addr_file, milliseconds(10000));
  if (!addr.ok()) {
    return UnavailableError("tokenserver did not start: ", Tail(t->dir_.Join("tokenserver.log")));
  }
  t->address_ = *addr;
  return t;
}

int TokenServer::TokensIssued() const {
  std::ifstream in(log_path_);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("ok", false)) ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------

Result<std::unique_ptr<LocalRegistry>> LocalRegistry::Start(LocalRegistryOptions options) {
  if (!HaveProgram("docker-registry")) {
    return UnavailableError("docker-registry is not installed");
  }
  std::unique_ptr<LocalRegistry> r(new LocalRegistry());
  r->storage_dir_ = r->dir_.Join("storage");
  r->log_path_ = r->dir_.Join("registry.log");
  EVS_RETURN_IF_ERROR(MakeDirs(r->storage_dir_));
  r->tls_ = !options.tls_cert.empty();

  std::ostringstream config;
  config << "version: 0.1\n"
         << "log:\n  level: warn\n  accesslog:\n    disabled: "
         << (options.access_log ? "false" : "true") << "\n"
         << "storage:\n  filesystem:\n    rootdirectory: " << r->storage_dir_ << "\n"
         << "  delete:\n    enabled: true\n"
         << "  maintenance:\n    uploadpurging:\n      enabled: false\n";
  if (!options.htpasswd_user.empty()) {
    std::string htpasswd = r->dir_.Join("htpasswd");
    // bcrypt (-B): the only scheme docker-registry accepts.
    auto out = Sh("htpasswd -Bbn '" + options.htpasswd_user + "' '" + options.htpasswd_password +
                  "' > '" + htpasswd + "'");
    if (out.exit_code != 0) return UnavailableError("htpasswd failed: ", out.stderr_data);
    config << "auth:\n  htpasswd:\n    realm: evs-test\n    path: " << htpasswd << "\n";
  } else if (options.token_server != nullptr) {
    config << "auth:\n  token:\n    realm: " << options.token_server->realm() << "\n"
           << "    service: " << TokenServer::kService << "\n"
           << "    issuer: " << TokenServer::kIssuer << "\n"
           << "    rootcertbundle: " << options.token_server->cert_path() << "\n";
  }
  // The port is picked free and then bound by the registry; another process
  // could take it in between, so try a few.
  for (int attempt = 0; attempt < 5; ++attempt) {
    r->port_ = FreePort();
    std::ostringstream http;
    http << "http:\n  addr: 127.0.0.1:" << r->port_ << "\n  secret: evs-test-secret\n"
         << "  headers:\n    X-Content-Type-Options: [nosniff]\n";
    if (r->tls_) {
      http << "  tls:\n    certificate: " << options.tls_cert << "\n    key: " << options.tls_key
           << "\n";
      if (!options.client_ca.empty())
        http << "    clientcas:\n      - " << options.client_ca << "\n";
    }
    std::string config_path = r->dir_.Join("config.yml");
    EVS_RETURN_IF_ERROR(WriteFileAtomic(config_path, config.str() + http.str()));
    EVS_ASSIGN_OR_RETURN(
        r->process_, ChildProcess::Start({"docker-registry", "serve", config_path}, r->log_path_));
    if (WaitForPort(r->port_, milliseconds(10000)).ok() && r->process_.running()) return r;
    r->process_.Stop();
  }
  return UnavailableError("docker-registry did not start: ", Tail(r->log_path_));
}

LocalRegistry::~LocalRegistry() { process_.Stop(); }

Status LocalRegistry::Restart() {
  process_.Stop();
  EVS_ASSIGN_OR_RETURN(process_, ChildProcess::Start({"docker-registry", "serve",
                                                      dir_.Join("config.yml")},
                                                     log_path_));
  if (WaitForPort(port_, milliseconds(10000)).ok() && process_.running()) return OkStatus();
  process_.Stop();
  return UnavailableError("docker-registry did not start again on port ", port_, ": ",
                          Tail(log_path_));
}

// ---------------------------------------------------------------------------

Result<std::unique_ptr<FaultProxy>> FaultProxy::Start(const std::string& upstream_host,
                                                      const std::string& rules_json) {
  if (!HaveRegistryTools()) return UnavailableError("faultproxy not built (needs go)");
  std::unique_ptr<FaultProxy> p(new FaultProxy());
  std::string rules = p->dir_.Join("rules.json");
  EVS_RETURN_IF_ERROR(WriteFileAtomic(rules, rules_json));
  p->log_path_ = p->dir_.Join("requests.log");
  std::string addr_file = p->dir_.Join("addr"), storage_file = p->dir_.Join("storage-addr");
  EVS_ASSIGN_OR_RETURN(
      p->process_, ChildProcess::Start({TestToolPath("faultproxy"), "-upstream", upstream_host,
                                        "-addr-file", addr_file, "-storage-addr-file", storage_file,
                                        "-rules", rules, "-log", p->log_path_},
                                       p->dir_.Join("faultproxy.log")));
  auto addr = WaitForFile(addr_file, milliseconds(10000));
  if (!addr.ok()) {
    return UnavailableError("faultproxy did not start: ", Tail(p->dir_.Join("faultproxy.log")));
  }
  p->address_ = *addr;
  EVS_ASSIGN_OR_RETURN(p->storage_address_, WaitForFile(storage_file, milliseconds(10000)));
  return p;
}

std::vector<std::map<std::string, std::string>> FaultProxy::Requests() const {
  std::vector<std::map<std::string, std::string>> out;
  std::ifstream in(log_path_);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    std::map<std::string, std::string> m;
    for (auto it = j.begin(); it != j.end(); ++it) {
      m[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace evs::testing
